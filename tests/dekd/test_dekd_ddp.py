"""A DEKD training stage under torchrun with 2 CPU processes (gloo) trains, the ranks agree, and
its budget is the same optimisation as in one process: the same steps and samples seen."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_distillation_under_torchrun_with_two_processes(tmp_path):
    script = Path(__file__).with_name("ddp_stage.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script), str(tmp_path)],
        capture_output=True, text=True, timeout=300, env=env,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["world"] for r in ranks] == [2, 2]
    for r in ranks:
        assert r["gathered_ok"], "teacher targets computed in shards and gathered must equal a local pass"
        assert r["losses"][-1] < r["losses"][0]
        assert max(r["val"]) > r["before"] and max(r["val"]) > 0.6  # 3 classes: chance is 1/3
    # DDP kept one model: same weights and the same validation curve on both ranks
    assert ranks[0]["checksum"] == pytest.approx(ranks[1]["checksum"], rel=1e-9)
    assert ranks[0]["val"] == ranks[1]["val"]
    # one process: the same number of steps and samples seen (each of 2 ranks took half of every batch)
    alone = tmp_path / "one"
    alone.mkdir()
    proc = subprocess.run([sys.executable, str(script), str(alone)], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    one = json.loads((alone / "rank0.json").read_text())
    assert one["world"] == 1
    for r in ranks:
        assert (r["steps"], r["samples_seen"], r["planned_steps"]) == (one["steps"], one["samples_seen"], one["planned_steps"])

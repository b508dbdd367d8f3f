"""The benchmark's plumbing on a tiny budget (its figures are for `make bench`, not for tests)."""

import json
from dataclasses import replace

from coinfer.core.data import load_dataset
from coinfer.bench.dekd import QUICK, _teacher, run_benchmark


def test_the_benchmark_reports_every_target_beside_devits_figure(tmp_path, capsys):
    tiny = replace(QUICK, teacher_epochs=2, distill_epochs=1, ensemble_epochs=1, hetero_distill_epochs=1, hetero_ensemble_epochs=1)
    result = run_benchmark(tmp_path, settings=tiny, progress=False)
    written = json.loads((tmp_path / "results.json").read_text())
    assert written["targets"] == result["targets"]
    names = [row["name"] for row in written["targets"]]
    assert len(names) == 8 and any("speedup" in n for n in names) and any("balance" in n for n in names)
    for row in written["targets"]:
        assert isinstance(row["ours"], float) and row["anchor"] and row["met"] in (True, False, None)
    assert set(written["reports"]) == {"affinity", "random", "hetero"}
    assert written["reports"]["random"]["partition_method"] == "random"
    assert written["reports"]["hetero"]["ensemble"]["devices"][2]["speed"] == 0.5
    printed = capsys.readouterr().out
    assert "2.89x" in printed and "-1.65 pt" in printed and "wall time" in printed
    # a second run reuses the teacher it trained, unless asked to start afresh
    splits = load_dataset(tiny.dataset)
    assert _teacher(tiny, tmp_path, splits, fresh=False, progress=False)[2] == 0.0
    assert _teacher(replace(tiny, teacher_epochs=1), tmp_path, splits, fresh=False, progress=False)[2] > 0.0

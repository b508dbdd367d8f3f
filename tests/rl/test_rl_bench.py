"""The bench's cheap sections run (the training sections are exercised by `make bench`)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from coinfer.bench import rl as bench


def test_bench_conformance_section_passes(capsys):
    targets = bench.Targets()
    rows = bench.bench_conformance(targets)
    assert len(rows) == 3 and all(r["pass"] for r in rows.values())
    assert len(targets.rows) == 6 and all(row["met"] for row in targets.rows)
    assert "anchor 0.0475 (paper sim)" in capsys.readouterr().out


def test_bench_speed_section_reports_the_ratio():
    targets = bench.Targets()
    out = bench.bench_speed(replace(bench.QUICK, speed_steps=40), targets, num_envs=8)
    assert targets.rows[-1]["met"] == (out["speedup"] >= 10)
    assert out["single_steps_per_s"] > 0 and out["batched_steps_per_s"] > 0
    assert out["speedup"] == out["batched_steps_per_s"] / out["single_steps_per_s"]


@pytest.mark.slow
def test_training_time_section_times_one_run_alone_with_two_threads_and_reuses_it(tmp_path, monkeypatch):
    import torch

    calls = []
    real = bench._train_cached
    monkeypatch.setattr(bench, "_train_cached", lambda *a, **kw: calls.append(kw) or real(*a, **kw))
    budget = replace(bench.QUICK, timing_steps=256, eval_every_steps=256)
    threads_before = torch.get_num_threads()
    targets = bench.Targets()
    out = bench.bench_training_time(budget, tmp_path, targets)
    assert calls == [{"torch_threads": min(2, __import__("os").cpu_count())}]
    assert torch.get_num_threads() == threads_before  # the bench's other sections keep their threads
    assert out["scenario"] == "dense" and out["steps"] >= 256 and out["wall_s"] > 0
    assert out["minutes_per_500k_steps"] == out["wall_s"] * 500_000 / out["steps"] / 60
    assert targets.rows[-1]["met"] == (out["minutes_per_500k_steps"] <= 15)
    assert len(list((tmp_path / "timing").glob("dense-*/result.json"))) == 1
    again = bench.bench_training_time(budget, tmp_path, bench.Targets())  # cached: same figures, no training
    assert again["wall_s"] == out["wall_s"]


def test_the_protocol_is_the_one_documented():
    p = bench.PROTOCOL
    assert p.held_out_episodes >= 64 and p.tuning_episodes >= 1 and p.sampled_cell_episodes == 20
    assert p.scenarios == ("mahppo-paper-resnet18", "edge-server", "dense", "heterogeneous")
    assert p.seeds_for("edge-server", bench.SEEDS) == (0, 1, 2, 3, 4) and p.seeds_for("dense", bench.SEEDS) == (0, 1, 2)
    assert p.metric == "reward"
    from coinfer.rl.scenario import load_scenario

    sets = bench.episode_sets(load_scenario("edge-server"), p)
    assert not set(sets.held_out.seeds) & set(sets.tuning.seeds)  # search is never tuned on an evaluation episode
    assert sets.cell.cell == "evaluation" and len(sets.cell) == 1 and sets.held_out.cell == "random"


def test_runs_are_named_by_what_they_learn_from(tmp_path):
    from coinfer.rl.mahppo import MahppoConfig

    defaults = bench._run_dir(tmp_path, "dense", "mahppo", 0, 500_000)
    explicit = {k: getattr(MahppoConfig(), k) for k in ("num_envs", "rollout_steps", "anneal_lr", "max_grad_norm", "power_scale")}
    assert bench._run_dir(tmp_path, "dense", "mahppo", 0, 500_000, explicit) == defaults  # a variant equal to the defaults shares their runs
    assert bench._run_dir(tmp_path, "dense", "mahppo", 0, 500_000, {"eval_every_steps": 5}) == defaults
    assert bench._run_dir(tmp_path, "dense", "mahppo", 0, 500_000, {"anneal_lr": not explicit["anneal_lr"]}) != defaults
    assert bench._run_dir(tmp_path, "dense", "mahppo", 1, 500_000) != defaults
    tags = [bench._config_tag("mahppo", bench.PAPER_SCENARIO, 1, v) for v in bench.ABLATIONS.values()]
    assert len(set(tags)) == len(tags)  # every ablation changes something


def test_a_field_added_later_keeps_the_earlier_runs_names_at_the_value_they_had(tmp_path):
    import hashlib
    import json
    from dataclasses import asdict

    from coinfer.rl.mahppo import MahppoConfig

    # The tag as it was computed before the later fields existed: without them.
    config = {k: v for k, v in asdict(MahppoConfig(scenario="dense", total_steps=500_000)).items()
              if k not in bench._UNTRAINED_FIELDS and k not in bench._LATER_FIELDS}
    before = hashlib.sha256(json.dumps(config, sort_keys=True, default=list).encode()).hexdigest()[:8]
    for field, earlier in bench._LATER_FIELDS.items():
        assert bench._config_tag("mahppo", "dense", 500_000, {field: earlier}) == before
    assert bench._config_tag("mahppo", "dense", 500_000, {"critic_target": "one-step"}) != before
    assert bench._config_tag("mahppo", "dense", 500_000, {"trace_decay": "lambda"}) != before


def test_previous_defaults_are_what_mahppo_had_before():
    from coinfer.rl.mahppo import MahppoConfig

    previous = MahppoConfig(**bench.PREVIOUS_DEFAULTS)
    assert (previous.num_envs, previous.rollout_steps, previous.anneal_lr, previous.max_grad_norm) == (128, 4096, True, 0.5)
    assert (previous.advantage_normalization, previous.power_scale, previous.update_epochs) == ("minibatch", "log", 20)


def test_planned_runs_cover_every_training_once_seed_by_seed(tmp_path):
    plan = bench.planned_runs(bench.FULL, tmp_path, {"mahppo": (0, 1, 2, 3), "sb3-ppo": (0,)})
    assert len({r.out for r in plan}) == len(plan)
    assert [(r.algo, r.scenario) for r in plan[:4]] == [("baselines", s) for s in bench.PROTOCOL.scenarios]
    schedulers = [r for r in plan if r.part == "schedulers" and r.algo != "baselines"]
    # seed 0 of both algorithms first (whole seeds finish first); dense and heterogeneous stop at seed 2
    assert [(r.algo, r.seed) for r in schedulers[:8]] == [("mahppo", 0)] * 4 + [("sb3-ppo", 0)] * 4
    assert {r.seed for r in schedulers if r.scenario == "dense"} == {0, 1, 2}
    assert {r.seed for r in schedulers if r.scenario == "edge-server"} == {0, 1, 2, 3}
    assert all(r.steps == bench.FULL.train_steps for r in schedulers)
    ablations = [r for r in plan if r.part == "ablations"]
    # the 'defaults' variant is already trained by the comparison; the others take the first 3 seeds each
    assert len(ablations) == 3 * (len(bench.ABLATIONS) - 1) and {r.seed for r in ablations} == {0, 1, 2}
    sweeps = [r for r in plan if r.part == "sweeps"]
    assert len(sweeps) == len(bench.FULL.sweep_devices) + len(bench.FULL.sweep_betas)
    only = bench.planned_runs(bench.FULL, tmp_path, {"mahppo": (0,), "sb3-ppo": (0,)}, scenarios=("edge-server",))
    assert {r.scenario for r in only} == {"edge-server"} and {r.part for r in only} == {"schedulers"}


def test_execute_planned_skips_what_is_done(tmp_path, monkeypatch):
    done = bench.PlannedRun("mahppo", "dense", 0, 10, 0, tmp_path / "done")
    todo = bench.PlannedRun("sb3-ppo", "dense", 1, 10, 0, tmp_path / "todo")
    (tmp_path / "done").mkdir()
    (tmp_path / "done" / "result.json").write_text("{}")
    ran = []
    monkeypatch.setattr(bench, "_execute", lambda run: ran.append(run) or run.label())
    bench.execute_planned([done, todo], jobs=1)
    assert ran == [todo]


def test_bench_processes_sharing_a_folder_do_each_job_once(tmp_path, monkeypatch):
    """A run or a baseline's evaluation another live process is on is waited for, not done again;
    a lock left by a dead process is taken over."""
    import subprocess
    import sys

    from coinfer.rl.evaluation import evaluate_policy
    from coinfer.rl.policy import make_policy
    from coinfer.rl.scenario import load_scenario

    scenario = load_scenario("dense")
    result = evaluate_policy(make_policy("local", scenario), scenario, bench.episode_sets(scenario, bench.QUICK_PROTOCOL).cell)
    path = tmp_path / "evals" / "search.json"
    path.parent.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        path.with_suffix(".lock").write_text(str(holder.pid))
        # While we wait, the other process finishes its evaluation.
        monkeypatch.setattr(bench.time, "sleep", lambda s: path.write_text(json.dumps(result.to_dict())))
        got = bench._cached_eval(path, lambda: pytest.fail("evaluated a second time while another process held it"))
        assert got.reward == result.reward and path.with_suffix(".lock").read_text() == str(holder.pid)
    finally:
        holder.kill()
        holder.wait()
    done, lock, ran = tmp_path / "run" / "result.json", tmp_path / "run" / "running.lock", []
    lock.parent.mkdir()
    lock.write_text(str(holder.pid))  # dead now
    bench._once(done, lock, lambda: ran.append(1) or done.write_text("{}"))
    assert ran == [1] and done.exists() and not lock.exists()


def test_train_only_trains_the_asked_share(tmp_path, monkeypatch):
    seen = {}
    monkeypatch.setattr(bench, "execute_planned", lambda plan, jobs: seen.update(plan=plan, jobs=jobs))
    bench.train_only(tmp_path, quick=True, jobs=3, only="sweeps")
    assert seen["jobs"] == 3 and seen["plan"] and all(r.scenario == "mahppo-paper-resnet18" and r.steps == bench.QUICK.sweep_steps for r in seen["plan"])
    bench.train_only(tmp_path, quick=True, jobs=1, only="schedulers", seeds={"mahppo": (2,), "sb3-ppo": (2,)}, scenarios=("edge-server",))
    assert {(r.algo, r.scenario, r.seed) for r in seen["plan"]} == {("baselines", "edge-server", 0), ("mahppo", "edge-server", 2), ("sb3-ppo", "edge-server", 2)}
    bench.train_only(tmp_path, quick=True, jobs=1, only="ablations", seeds={"mahppo": (0,), "sb3-ppo": (0,)})
    assert seen["plan"] and {r.part for r in seen["plan"]} == {"ablations"}


def test_seeds_and_scenarios_are_checked():
    import argparse

    import pytest

    assert bench.parse_seeds("0, 2") == (0, 2)
    for bad in ("", "a", "-1", "1,1", "1000000"):
        with pytest.raises(argparse.ArgumentTypeError):
            bench.parse_seeds(bad)
    with pytest.raises(argparse.ArgumentTypeError, match="held-out"):
        bench.parse_seeds("3,1000003")
    assert bench.parse_scenarios("dense,edge-server") == ("dense", "edge-server")
    with pytest.raises(argparse.ArgumentTypeError):
        bench.parse_scenarios("tiny")


def test_coinfer_bench_hands_jobs_and_seeds_to_the_rl_part(tmp_path, monkeypatch):
    from coinfer import cli

    calls = []
    monkeypatch.setattr(bench, "run_benchmarks", lambda out, quick, jobs=None, seeds=None: calls.append((jobs, seeds)) or {"targets": []})
    assert cli.main(["bench", "--parts", "rl", "--out", str(tmp_path), "--jobs", "3", "--seeds", "0,1", "--sb3-seeds", "2"]) == 0
    assert calls == [(3, {"mahppo": (0, 1), "sb3-ppo": (2,)})]
    assert cli.main(["bench", "--parts", "rl", "--out", str(tmp_path), "--seeds", "1,1"]) == 2 and len(calls) == 1

"""The bench's cheap sections run (the training sections are exercised by `make bench`)."""

from __future__ import annotations

from dataclasses import replace

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
    assert (tmp_path / "timing" / "dense" / "result.json").exists()
    again = bench.bench_training_time(budget, tmp_path, bench.Targets())  # cached: same figures, no training
    assert again["wall_s"] == out["wall_s"]


def test_planned_runs_cover_every_training_once_seed_by_seed(tmp_path):
    plan = bench.planned_runs(bench.FULL, tmp_path, {"mahppo": (0, 1), "sb3-ppo": (0,)})
    kinds = [(r.algo, r.scenario, r.seed, r.overrides) for r in plan]
    assert len(kinds) == len(set(kinds)) == len({r.out for r in plan})
    assert [r.algo for r in plan[:3]] == ["baselines"] * 3
    schedulers = [r for r in plan if r.algo != "baselines" and not r.overrides]
    # seed 0 of both algorithms first (whole seeds finish first), then MAHPPO's seed 1
    assert [(r.algo, r.seed) for r in schedulers] == [("mahppo", 0)] * 3 + [("sb3-ppo", 0)] * 3 + [("mahppo", 1)] * 3
    assert all(r.steps == bench.FULL.train_steps and r.part == "schedulers" for r in schedulers)
    # MAHPPO trained on the evaluation cell of edge-server, once per MAHPPO seed, beside the paper's protocol
    cell = [r for r in plan if dict(r.overrides).get("train_cell") == "evaluation"]
    assert [(r.algo, r.scenario, r.seed, r.part) for r in cell] == [("mahppo", "edge-server", s, "schedulers") for s in (0, 1)]
    assert all(r.steps == bench.FULL.train_steps and "train_cell=evaluation" in r.label() for r in cell)
    sweeps = [r for r in plan if r.part == "sweeps"]
    assert len(sweeps) == len(bench.FULL.sweep_devices) + len(bench.FULL.sweep_betas)
    assert all(r.steps == bench.FULL.sweep_steps and r.scenario == "mahppo-paper-resnet18" and r.overrides for r in sweeps)


def test_execute_planned_skips_what_is_done(tmp_path, monkeypatch):
    done = bench.PlannedRun("mahppo", "dense", 0, 10, 0, tmp_path / "done")
    todo = bench.PlannedRun("sb3-ppo", "dense", 1, 10, 0, tmp_path / "todo")
    (tmp_path / "done").mkdir()
    (tmp_path / "done" / "result.json").write_text("{}")
    ran = []
    monkeypatch.setattr(bench, "_execute", lambda run: ran.append(run) or run.label())
    bench.execute_planned([done, todo], jobs=1)
    assert ran == [todo]


def test_train_only_trains_the_asked_share(tmp_path, monkeypatch):
    seen = {}
    monkeypatch.setattr(bench, "execute_planned", lambda plan, jobs: seen.update(plan=plan, jobs=jobs))
    bench.train_only(tmp_path, quick=True, jobs=3, only="sweeps")
    assert seen["jobs"] == 3 and seen["plan"] and all(r.scenario == "mahppo-paper-resnet18" and r.steps == bench.QUICK.sweep_steps for r in seen["plan"])
    bench.train_only(tmp_path, quick=True, jobs=1, only="schedulers", seeds={"mahppo": (2,), "sb3-ppo": (2,)})
    assert {(r.algo, r.seed) for r in seen["plan"]} == {("baselines", 0), ("mahppo", 2), ("sb3-ppo", 2)}
    assert any(dict(r.overrides).get("train_cell") == "evaluation" for r in seen["plan"])  # the edge-server cell runs go with the schedulers


def testparse_seedss_are_checked():
    import argparse

    import pytest

    assert bench.parse_seeds("0, 2") == (0, 2)
    for bad in ("", "a", "-1", "1,1"):
        with pytest.raises(argparse.ArgumentTypeError):
            bench.parse_seeds(bad)


def test_coinfer_bench_hands_jobs_and_seeds_to_the_rl_part(tmp_path, monkeypatch):
    from coinfer import cli

    calls = []
    monkeypatch.setattr(bench, "run_benchmarks", lambda out, quick, jobs=None, seeds=None: calls.append((jobs, seeds)) or {"targets": []})
    assert cli.main(["bench", "--parts", "rl", "--out", str(tmp_path), "--jobs", "3", "--seeds", "0,1", "--sb3-seeds", "2"]) == 0
    assert calls == [(3, {"mahppo": (0, 1), "sb3-ppo": (2,)})]
    assert cli.main(["bench", "--parts", "rl", "--out", str(tmp_path), "--seeds", "1,1"]) == 2 and len(calls) == 1

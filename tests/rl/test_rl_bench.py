"""The bench's cheap sections run (the training sections are exercised by `make bench`)."""

from __future__ import annotations

from dataclasses import replace

from coinfer.rl import bench


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

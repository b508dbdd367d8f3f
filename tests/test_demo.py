"""The demo's pieces that run without training: its scenario, its report and `make demo`."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest

from coinfer.core.errors import InvalidInput
from coinfer.core.profile import load_profile
from coinfer.demo_report import write_demo_report
from coinfer.demo_scenario import REFERENCE_PROFILE, REFERENCE_SCENARIO, scale_cell, write_scenario
from coinfer.rl.scenario import load_scenario

REPO = Path(__file__).resolve().parents[1]


def _scaled(profile, time_factor: float, bits_factor: float):
    points = tuple(
        dataclasses.replace(p, head_latency_s=p.head_latency_s * time_factor, uplink_bits=max(1, round(p.uplink_bits * bits_factor)) if p.uplink_bits else 0)
        for p in profile.points
    )
    return dataclasses.replace(profile, points=points)


def test_the_reference_profile_gets_the_reference_cell():
    reference = load_scenario(REFERENCE_SCENARIO)
    cell = scale_cell(load_profile(REFERENCE_PROFILE))
    assert cell.slot_s == pytest.approx(reference.episode.slot_s)
    assert cell.subchannel_bandwidth_hz == pytest.approx(reference.network.subchannel_bandwidth_hz)


def test_a_faster_device_with_smaller_latents_keeps_the_papers_balance():
    reference = load_profile(REFERENCE_PROFILE)
    base = scale_cell(reference)
    cell = scale_cell(_scaled(reference, time_factor=0.1, bits_factor=0.01))
    assert cell.slot_s == pytest.approx(base.slot_s * 0.1)
    # Upload time of the first split point, as a share of a local inference, is unchanged.
    share = lambda c, p: p.points[1].uplink_bits / c.subchannel_bandwidth_hz / p.local_latency_s  # noqa: E731
    small = _scaled(reference, 0.1, 0.01)
    assert share(cell, small) == pytest.approx(share(base, reference), rel=1e-3)


def test_a_profile_without_a_split_point_is_refused():
    reference = load_profile(REFERENCE_PROFILE)
    with pytest.raises(InvalidInput, match="split point"):
        scale_cell(dataclasses.replace(reference, points=(reference.points[0], reference.points[-1])))


def test_the_written_scenario_loads_with_the_scaled_cell(tmp_path):
    profile_path = tmp_path / "my profile.json"
    _scaled(load_profile(REFERENCE_PROFILE), 0.05, 0.02).save(profile_path)
    scenario = load_scenario(write_scenario(profile_path, tmp_path / "scenario.toml", devices=3))
    cell = scale_cell(load_profile(profile_path))
    assert scenario.num_devices == 3
    assert scenario.episode.slot_s == pytest.approx(cell.slot_s)
    assert scenario.network.subchannel_bandwidth_hz == pytest.approx(cell.subchannel_bandwidth_hz)
    assert scenario.devices[0].profile.local_latency_s == pytest.approx(load_profile(profile_path).local_latency_s)


def _stage_outputs(tmp_path: Path) -> tuple[Path, Path, Path]:
    devit, split = tmp_path / "devit", tmp_path / "split"
    devit.mkdir()
    split.mkdir()
    (devit / "report.json").write_text(json.dumps({
        "teacher": {"accuracy": 0.93, "latency_ms": 1.0},
        "ensemble": {"accuracy": 0.94, "latency_ms": 0.4, "accuracy_missing_one": [0.9, 0.92]},
        "single_student": {"accuracy": 0.91, "latency_ms": 0.9},
        "speedup": 2.5,
    }))
    points = [{"index": i, "name": f"p{i}", "accuracy": 0.9 + i / 100, "payload_bytes": 100.0 - i, "compression": c}
              for i, c in enumerate([2.0, 40.0, 20.0, 10.0, 1.0])]
    (split / "report.json").write_text(json.dumps({"backbone": "resnet18", "backbone_accuracy": 0.97, "points": points}))
    scheduler = tmp_path / "scheduler_eval.json"
    scheduler.write_text(json.dumps({
        name: {"latency_per_task_s": s, "task_latency_mean_s": 0.2, "task_latency_p95_s": 0.3, "energy_per_task_j": e, "reward": -s - e}
        for name, s, e in (("mahppo", 0.002, 0.0002), ("local", 0.0015, 0.0065))
    }))
    return devit, split, scheduler


def test_the_report_holds_every_figure_the_issue_asks_for(tmp_path):
    devit, split, scheduler = _stage_outputs(tmp_path)
    runtime = {"runtime_requests": 818, "runtime_errors": 0, "latency_ms_p50": 5.0, "latency_ms_p99": 19.0, "degraded_answers": 100}
    report = write_demo_report(tmp_path, devit, split, tmp_path / "profile.json", scheduler, runtime,
                               {"split": 30.0, "runtime": 17.0}, scheduler_scenario="a cell", reused=["teacher"])
    saved = json.loads((tmp_path / "report.json").read_text())
    required = ("teacher_accuracy", "ensemble_accuracy", "speedup", "split_best_compression", "runtime_requests",
                "runtime_errors", "latency_ms_p50", "latency_ms_p99", "degraded_answers", "scheduler")
    assert all(saved[k] is not None for k in required), [k for k in required if saved[k] is None]
    assert saved["teacher_accuracy"] == 0.93 and saved["speedup"] == 2.5
    assert saved["split_best_compression"] == 40.0  # the best of the mid points; input and local are not split points
    assert saved["scheduler"]["local"]["energy_per_task_j"] == 0.0065
    assert saved["reused_stages"] == ["teacher"] and report["timings_s"] == {"split": 30.0, "runtime": 17.0}
    for name in saved["plots"]:
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (tmp_path / "report.md").read_text()
    assert "a cell" in md and "reused from an earlier run: teacher" in md and "| mahppo |" in md


def test_make_demo_runs_the_whole_pipeline():
    makefile = (REPO / "Makefile").read_text()
    default = re.search(r"^DEMO_ARGS \?= *(.*)$", makefile, re.MULTILINE)
    assert default is not None and "--full" in default.group(1).split()
    assert re.search(r"^demo:.*\n\t.*coinfer demo \$\(DEMO_ARGS\)", makefile, re.MULTILINE)

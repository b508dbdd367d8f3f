"""`coinfer bench` report: earlier parts' figures survive a run of one part; rows render side by side."""

from __future__ import annotations

import json
from pathlib import Path

from coinfer.bench.suite import render_report, with_earlier_parts


def _row(name: str, ours: float, met: bool) -> dict:
    return {"name": name, "ours": ours, "target": ">= 1", "anchor": "paper", "met": met}


def test_parts_not_run_now_are_read_back_from_their_json(tmp_path: Path) -> None:
    (tmp_path / "dekd.json").write_text(json.dumps({"status": "ok", "targets": [_row("speedup", 3.19, True)], "finished": "2026-11-22T08:00:00"}))
    (tmp_path / "split.json").write_text("{not json")
    merged = with_earlier_parts({"runtime": {"status": "ok", "targets": [_row("overhead", 2.5, False)]}}, tmp_path)
    assert list(merged) == ["dekd", "runtime"]  # PARTS order; the damaged split.json is left out
    report = render_report(merged, quick=False)
    assert "| speedup | 3.19 | >= 1 | paper | yes |" in report
    assert "| overhead | 2.5 | >= 1 | paper | no |" in report
    assert "Finished 2026-11-22T08:00:00" in report


def test_a_failed_part_shows_its_error_instead_of_a_table() -> None:
    report = render_report({"rl": {"status": "failed", "error": "InvalidInput: bad scenario"}}, quick=True)
    assert "**failed**: InvalidInput: bad scenario" in report and "QUICK settings" in report


def test_a_part_this_machine_cannot_run_is_shown_as_skipped() -> None:
    report = render_report({"fleet_placement": {"status": "skipped", "error": "needs root"}}, quick=False)
    assert "**skipped**: needs root" in report and "**failed**" not in report

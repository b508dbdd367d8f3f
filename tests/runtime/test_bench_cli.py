"""The command line the runtime and reliability benchmarks share (`coinfer.bench.script`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from coinfer.core.errors import InvalidInput
from coinfer.bench.script import bench_main, machine_snapshot, write_report


def _main(argv: list[str], run) -> int:
    return bench_main(argv, module="coinfer.server.example_bench", doc="Example benchmark.\n\nMore.", run=run,
                      default_out="runs/bench/example", quick_help="short")


def test_main_passes_the_folder_and_quick_flag_to_the_benchmark(tmp_path) -> None:
    calls = []
    assert _main(["--out", str(tmp_path / "o"), "--quick"], lambda out, quick: calls.append((out, quick))) == 0
    assert _main([], lambda out, quick: calls.append((out, quick))) == 0
    assert calls == [(tmp_path / "o", True), (Path("runs/bench/example"), False)]


def test_a_coinfer_error_prints_one_line_and_exits_2(capsys) -> None:
    def fail(out, quick):
        raise InvalidInput("no such bundle")

    assert _main([], fail) == 2
    err = capsys.readouterr().err
    assert err == "example bench: error: no such bundle\n"


def test_other_errors_are_not_swallowed() -> None:
    def crash(out, quick):
        raise RuntimeError("bug")

    with pytest.raises(RuntimeError):
        _main([], crash)


def test_report_json_converts_what_json_cannot_hold(tmp_path) -> None:
    as_number = json.loads(write_report({"value": np.float32(0.5)}, tmp_path / "a.json", default=float).read_text())
    assert as_number == {"value": 0.5}
    as_text = json.loads(write_report({"value": np.float32(0.5), "path": tmp_path}, tmp_path / "b.json").read_text())
    assert as_text == {"value": "0.5", "path": str(tmp_path)}


def test_machine_snapshot_keeps_the_note() -> None:
    snapshot = machine_snapshot("shared with the test suite")
    assert snapshot["note"] == "shared with the test suite"
    assert snapshot["cpu_count"] >= 1 and 0.0 <= snapshot["cpu_percent"] <= 100.0 * snapshot["cpu_count"]

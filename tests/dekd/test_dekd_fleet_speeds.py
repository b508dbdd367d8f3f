"""Speeds files (`coinfer fleet --out`) and `coinfer decompose --fleet FILE`: read back, normalised,
and refused with a clear message when they do not fit."""

import json

import pytest

from coinfer.cli import main
from coinfer.core.errors import InvalidInput
from coinfer.server.dekd.speeds import SPEEDS_FORMAT, fleet_speeds, parse_device_speeds, write_speeds_file

DEVICES = [{"name": "slow", "speed": 0.25, "cpu_model": "x"}, {"name": "fast", "speed": 0.5}, {"name": "mid", "speed": 0.5}]


def test_a_speeds_file_reads_back_fastest_first_and_normalised(tmp_path):
    path = write_speeds_file(tmp_path / "speeds.json", DEVICES, source="test")
    document = json.loads(path.read_text())
    assert document["format"] == SPEEDS_FORMAT and [d["name"] for d in document["devices"]] == ["fast", "mid", "slow"]
    assert document["devices"][2]["cpu_model"] == "x"  # what people read is kept
    assert fleet_speeds(path, 3) == [1.0, 1.0, 0.5]
    assert parse_device_speeds(str(path), 3) == [1.0, 1.0, 0.5]  # --device-speeds takes it too


def test_a_speeds_file_for_another_number_of_devices_is_refused(tmp_path):
    path = write_speeds_file(tmp_path / "speeds.json", DEVICES, source="test")
    with pytest.raises(InvalidInput, match="lists 3 device\\(s\\) but the decomposition is for 4"):
        fleet_speeds(path, 4)


@pytest.mark.parametrize("speed", [0, -1, "fast", None, float("nan"), 1e9])
def test_speeds_that_are_not_positive_are_refused(tmp_path, speed):
    path = tmp_path / "speeds.json"
    path.write_text(json.dumps({"format": SPEEDS_FORMAT, "devices": [{"name": "a", "speed": 1.0}, {"name": "b", "speed": speed}]}))
    with pytest.raises(InvalidInput, match="devices\\[1\\] \\(b\\): speed"):
        fleet_speeds(path, 2)
    with pytest.raises(InvalidInput, match="speed"):
        write_speeds_file(tmp_path / "out.json", [{"name": "b", "speed": speed}], source="test")


def test_other_files_are_not_speeds_files(tmp_path):
    path = tmp_path / "profile.json"
    path.write_text(json.dumps({"devices": [{"name": "a"}]}))
    with pytest.raises(InvalidInput, match="not a speeds file"):
        fleet_speeds(path, 1)
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(InvalidInput, match="not a readable JSON file"):
        fleet_speeds(tmp_path / "broken.json", 1)


def test_decompose_fleet_checks_the_file_before_any_work(tmp_path, capsys):
    path = write_speeds_file(tmp_path / "speeds.json", DEVICES, source="test")
    out = tmp_path / "bundle"
    assert main(["decompose", "--fleet", str(path), "--devices", "4", "--out", str(out)]) == 2
    assert "lists 3 device(s) but the decomposition is for 4" in capsys.readouterr().err
    assert main(["decompose", "--fleet", str(path), "--device-speeds", "1,1,1", "--devices", "3", "--out", str(out)]) == 2
    assert "--device-speeds or --fleet, not both" in capsys.readouterr().err
    assert not out.exists()

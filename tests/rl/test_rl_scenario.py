"""Scenario files: the built-ins load, and every mistake names the field and the file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from coinfer.core.errors import InvalidInput, NotFound
from coinfer.core.profile import load_profile
from coinfer.rl.scenario import builtin_scenario_names, load_scenario


def test_builtin_scenarios_load():
    names = builtin_scenario_names()
    for required in ("mahppo-paper-resnet18", "mahppo-paper-vgg11", "mahppo-paper-mobilenetv2", "edge-server", "heterogeneous", "dense"):
        assert required in names
    dense = load_scenario("dense")
    assert (dense.num_devices, dense.num_subchannels) == (10, 3)
    hetero = load_scenario("heterogeneous")
    assert len({d.profile.name for d in hetero.devices}) == 3
    assert load_scenario("edge-server").server.model == "shared"
    assert load_scenario("mahppo-paper-vgg11").server.model == "none"


def test_paper_scenario_matches_the_paper_setting():
    s = load_scenario("mahppo-paper-resnet18")
    assert s.num_devices == 5 and s.num_subchannels == 2
    assert s.network.subchannel_bandwidth_hz == 1e6 and s.network.noise_w == 1e-9 and s.network.path_loss_exponent == 3
    assert s.episode.slot_s == 0.5 and s.episode.max_slots == 60 and s.reward.beta == 1.0
    assert all(d.power_range_w == (1e-10, 1.0) and d.distance_range_m == (1.0, 100.0) and d.eval_distance_m == 50.0 for d in s.devices)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mine.toml"
    path.write_text(text)
    return path


def test_missing_field_names_field_and_file(tmp_path, tiny_toml):
    path = _write(tmp_path, tiny_toml.read_text().replace("noise_w = 1.0e-9\n", ""))
    with pytest.raises(InvalidInput, match=r"mine\.toml.*'network\.noise_w'"):
        load_scenario(path)


def test_wrong_type_names_field_and_file(tmp_path, tiny_toml):
    path = _write(tmp_path, tiny_toml.read_text().replace("num_subchannels = 2", 'num_subchannels = "two"'))
    with pytest.raises(InvalidInput, match=r"mine\.toml.*'network\.num_subchannels'.*integer"):
        load_scenario(path)


def test_unknown_field_is_refused(tmp_path, tiny_toml):
    path = _write(tmp_path, tiny_toml.read_text().replace("slot_s = 0.5", "slot_s = 0.5\nslot_len = 1"))
    with pytest.raises(InvalidInput, match=r"mine\.toml.*'episode\.slot_len'"):
        load_scenario(path)


def test_bad_device_field_names_the_group(tmp_path, tiny_toml):
    path = _write(tmp_path, tiny_toml.read_text().replace("power_range_w = [1.0e-10, 1.0]", "power_range_w = [1.0, 0.1]"))
    with pytest.raises(InvalidInput, match=r"mine\.toml.*'devices\[0\]\.power_range_w'"):
        load_scenario(path)
    path = _write(tmp_path, tiny_toml.read_text().replace('profile = "jetson-nano-resnet18"', 'profile = "no-such-profile"'))
    with pytest.raises(InvalidInput, match=r"mine\.toml.*'devices\[0\]\.profile'"):
        load_scenario(path)


def test_profile_path_relative_to_the_scenario_file(tmp_path, tiny_toml):
    profile = load_profile("jetson-nano-vgg11").to_dict()
    profile["name"] = "my-device"
    (tmp_path / "my-device.json").write_text(json.dumps(profile))
    path = _write(tmp_path, tiny_toml.read_text().replace('profile = "jetson-nano-resnet18"', 'profile = "my-device.json"'))
    assert load_scenario(path).devices[0].profile.name == "my-device"


def test_missing_scenario_lists_builtins():
    with pytest.raises(NotFound, match="mahppo-paper-resnet18"):
        load_scenario("no-such-scenario")


def test_invalid_toml_names_the_file(tmp_path):
    with pytest.raises(InvalidInput, match=r"mine\.toml.*TOML"):
        load_scenario(_write(tmp_path, "name = [unclosed"))

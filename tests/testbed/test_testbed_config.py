"""Testbed config, addresses, power -> rate and the state file (no root needed)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from coinfer.core.errors import FailedPrecondition, InvalidInput, NotFound
from coinfer.testbed import RadioConfig, make_config, uplink_rate_bps
from coinfer.testbed.state import TestbedState, read_state, write_state


def test_addresses_are_distinct_and_inside_the_subnet():
    config = make_config(4, subnet="10.99.0.0/16")
    addresses = [config.server_address] + [config.device_address(i) for i in range(4)] + [
        config.gateway_address(i) for i in range(4)]
    assert len(set(addresses)) == len(addresses)
    assert all(a.startswith("10.99.") for a in addresses)
    assert config.namespaces == ["coinfer-srv", "coinfer-d0", "coinfer-d1", "coinfer-d2", "coinfer-d3"]


def test_per_device_lists_broadcast_or_match():
    config = make_config(3, uplink_mbit=[2], downlink_mbit=[1, 2, 3], delay_ms=[0, 10, 0])
    assert [link.uplink_bps for link in config.links] == [2e6, 2e6, 2e6]
    assert [link.downlink_bps for link in config.links] == [1e6, 2e6, 3e6]
    assert [link.impaired for link in config.links] == [False, True, False]
    with pytest.raises(InvalidInput, match="1 or 3 values"):
        make_config(3, uplink_mbit=[1, 2])


@pytest.mark.parametrize("kwargs, message", [
    ({"prefix": "Bad_Prefix"}, "prefix"),
    ({"prefix": "x" * 30}, "prefix"),
    ({"subnet": "8.8.0.0/16"}, "private /16"),
    ({"subnet": "10.0.0.0/8"}, "private /16"),
    ({"uplink_mbit": [0]}, "uplink_bps"),
    ({"delay_ms": [-1]}, "delay_ms"),
    ({"loss_pct": [100]}, "loss_pct"),
    ({"radio": RadioConfig(noise_w=0)}, "noise_w"),
])
def test_bad_config_is_refused_with_the_field_named(kwargs, message):
    with pytest.raises(InvalidInput, match=message):
        make_config(2, **kwargs)


def test_power_to_rate_is_shannon_with_path_loss():
    radio = RadioConfig(bandwidth_hz=2e6, path_loss_exponent=3.0, noise_w=1e-9)
    p, d = 0.05, 40.0
    expected = 2e6 * math.log2(1 + p * d ** -3.0 / 1e-9)
    assert uplink_rate_bps(p, d, radio) == pytest.approx(expected, rel=1e-9)
    # More power or less distance: faster; interference: slower.
    assert uplink_rate_bps(2 * p, d, radio) > uplink_rate_bps(p, d, radio)
    assert uplink_rate_bps(p, d / 2, radio) > uplink_rate_bps(p, d, radio)
    assert uplink_rate_bps(p, d, radio, interference_w=1e-8) < uplink_rate_bps(p, d, radio)
    with pytest.raises(InvalidInput, match="power_w"):
        uplink_rate_bps(0.0, d, radio)


def test_power_to_rate_agrees_with_the_simulator():
    np = pytest.importorskip("numpy")
    from coinfer.rl.scenario import load_scenario
    from coinfer.rl.sim.channel import PathLossChannel, uplink_rates_bps
    from coinfer.testbed import radio_from_scenario

    network = load_scenario("mahppo-paper-resnet18").network
    radio = radio_from_scenario("mahppo-paper-resnet18")
    power_w = np.array([[0.5, 1e-3, 0.1]])
    distance_m = np.array([[10.0, 50.0, 90.0]])
    # The simulator: three devices alone on three sub-channels (so no interference).
    gain = PathLossChannel(1, network.path_loss_exponent).gains(distance_m, np.random.default_rng(0))[..., 0]
    sim = uplink_rates_bps(power_w * gain, np.ones((1, 3), bool), np.arange(3)[None, :], 3,
                           network.subchannel_bandwidth_hz, network.noise_w)
    ours = [uplink_rate_bps(p, d, radio) for p, d in zip(power_w[0], distance_m[0])]
    np.testing.assert_allclose(ours, sim[0], rtol=1e-12)


def test_state_file_round_trips(tmp_path: Path):
    config = make_config(2, prefix="rt", state_dir=tmp_path, delay_ms=[5, 0], radio=RadioConfig(bandwidth_hz=3e6))
    state = TestbedState(config=config, namespaces=config.namespaces, delay_mechanism="relay",
                         rates_bps={"0": {"up": 1e6, "down": 2e6}})
    write_state(state)
    again = read_state("rt", tmp_path)
    assert again.config == config
    assert again.rates_bps == state.rates_bps
    assert again.delay_mechanism == "relay"
    with pytest.raises(NotFound, match="is it up"):
        read_state("other", tmp_path)
    (tmp_path / "rt.json").write_text("{not json")
    with pytest.raises(InvalidInput, match="not valid JSON"):
        read_state("rt", tmp_path)


def test_missing_requirements_name_what_is_missing(monkeypatch):
    from coinfer.testbed import netns

    monkeypatch.setattr(netns.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(netns.shutil, "which", lambda tool: None if tool == "tc" else "/usr/sbin/ip")
    assert netns.missing_requirements() == ["not running as root", "`tc` (iproute2) is not on PATH"]
    with pytest.raises(FailedPrecondition, match="not running as root"):
        netns.require_tools()

"""The scheduler's transmit powers shape the testbed's links (`coinfer.server.link_shaper`).

The mapping from devices to testbed links and the interference are checked against recorded
`tc` commands (no root needed); the kernel's own rates are read back where root, `ip` and `tc`
are available.
"""

from __future__ import annotations

import logging
import re
import subprocess

import pytest

from coinfer.cli import main
from coinfer.server.link_shaper import LinkDecision, TestbedLinkShaper, received_power_w
from coinfer.testbed import Testbed, make_config, netns

from testbed_helpers import needs_netns

PORT = 8101


@pytest.fixture
def fake_tc(monkeypatch):
    """Record every `ip`/`tc` command instead of running it."""
    calls: list[list[str]] = []

    def fake_run(argv, *, check=True):
        calls.append(list(argv))
        return subprocess.CompletedProcess(list(argv), 0, stdout="", stderr="")

    monkeypatch.setattr(netns, "run", fake_run)
    monkeypatch.setattr(netns, "require_tools", lambda: None)
    return calls


def rate_changes(calls) -> dict[str, int]:
    """Device namespace -> uplink rate (bit/s) of every `tc class change` issued, the last one winning."""
    return {c[2]: int(c[c.index("rate") + 1].removesuffix("bit"))
            for c in calls if "change" in c and "class" in c and c[6] == "eth0"}


def decision(name: str, address: str, sub_channel: int, power_w: float, uploading: bool = True) -> LinkDecision:
    return LinkDecision(name, address, sub_channel, power_w, uploading)


def test_devices_map_to_their_links_and_interfere_on_a_shared_sub_channel(fake_tc, tmp_path, caplog):
    tb = Testbed.up(make_config(3, prefix="fake", state_dir=tmp_path, distance_m=[20, 40, 60]))
    shaper = TestbedLinkShaper(tb)
    alpha = tb.config.radio.path_loss_exponent
    slot = [
        decision("a", f"{tb.device_address(0)}:{PORT}", 0, 0.5),  # its own address
        decision("b", f"{tb.gateway_address(1)}:40123", 0, 0.2),  # behind its relay
        decision("fake-d2", "edge-2.local:8101", 1, 0.1),  # by its namespace's name
        decision("phone", "192.168.1.5:8101", 0, 1.0),  # not on this testbed
    ]
    fake_tc.clear()
    with caplog.at_level(logging.WARNING, logger="coinfer.server.link_shaper"):
        shaper.apply(slot)
        shaper.apply(slot)
    # a and b share sub-channel 0: each hears the other; device 2 is alone on sub-channel 1.
    expected = {
        0: tb.rate_for_power(0, 0.5, received_power_w(0.2, 40, alpha)),
        1: tb.rate_for_power(1, 0.2, received_power_w(0.5, 20, alpha)),
        2: tb.rate_for_power(2, 0.1, 0.0),
    }
    assert shaper.rates_bps == pytest.approx(expected)
    assert rate_changes(fake_tc) == {f"fake-d{i}": round(rate) for i, rate in expected.items()}
    assert expected[1] < tb.rate_for_power(1, 0.2), "interference slows the link"
    assert len(fake_tc) == 3, "an unchanged slot issues no command"
    assert caplog.text.count("'phone'") == 1, "an unknown device is reported once"
    assert Testbed.attach("fake", tmp_path).rate_bps(1) == pytest.approx(expected[1])  # seen by `testbed status`

    # a stops uploading: only b's interference changes; a power of 0 gets the floor rate.
    fake_tc.clear()
    shaper.apply([decision("a", slot[0].address, 0, 0.5, uploading=False), slot[1],
                  decision("fake-d2", slot[2].address, 1, 0.0)])
    assert rate_changes(fake_tc) == {"fake-d1": round(tb.rate_for_power(1, 0.2)),
                                     "fake-d2": round(tb.config.min_rate_bps)}


def test_a_link_that_cannot_be_shaped_is_reported_once_and_the_others_still_are(monkeypatch, fake_tc, tmp_path, caplog):
    tb = Testbed.up(make_config(2, prefix="fake", state_dir=tmp_path))
    shaper = TestbedLinkShaper(tb)

    def change_rate(ns, iface, rate_bps):
        if ns == "fake-d0":
            raise netns.NetworkCommandFailed("tc: Cannot find device eth0")
        fake_tc.append(["tc", "-n", ns, "class", "change", "dev", iface, "rate", f"{round(rate_bps)}bit"])

    monkeypatch.setattr(netns, "change_rate", change_rate)
    fake_tc.clear()
    slot = [decision(f"dev{i}", f"{tb.device_address(i)}:{PORT}", i, 0.3, False) for i in range(2)]
    with caplog.at_level(logging.WARNING, logger="coinfer.server.link_shaper"):
        for _ in range(3):
            shaper.apply(slot)
    assert list(shaper.rates_bps) == [1] and len(fake_tc) == 1, "device 1 is shaped once; device 0 is retried"
    assert caplog.text.count("Cannot find device") == 1


def test_serve_checks_its_testbed_flags(tmp_path, capsys):
    bundle = str(tmp_path / "no-bundle")
    assert main(["serve", "--bundle", bundle, "--testbed", "tb1"]) == 2
    assert "give a --policy" in capsys.readouterr().err
    assert main(["serve", "--bundle", bundle, "--policy", "local", "--testbed", "tb1",
                 "--testbed-state-dir", str(tmp_path)]) == 2
    assert "no testbed 'tb1'" in capsys.readouterr().err


_TC_RATE = re.compile(r"^([\d.]+)([KMG]?)bit$")


def kernel_uplink_bps(tb: Testbed, device_i: int) -> float:
    """Device i's uplink HTB rate as the kernel reports it."""
    text = tb.status().devices[device_i].live_uplink
    match = _TC_RATE.match(text or "")
    assert match, f"unexpected tc rate {text!r}"
    return float(match.group(1)) * {"": 1, "K": 1e3, "M": 1e6, "G": 1e9}[match.group(2)]


@needs_netns
def test_a_lower_power_gives_a_lower_kernel_rate(testbed_factory):
    tb = testbed_factory(2, uplink_mbit=[8])
    shaper = TestbedLinkShaper.attach(tb.config.prefix, tb.config.state_dir)  # as `coinfer serve --testbed` does
    addresses = [f"{tb.device_address(i)}:{PORT}" for i in range(2)]
    shaper.apply([decision("d0", addresses[0], 0, 1.0, False), decision("d1", addresses[1], 1, 1e-3, False)])
    high, low = kernel_uplink_bps(tb, 0), kernel_uplink_bps(tb, 1)
    assert high == pytest.approx(tb.rate_for_power(0, 1.0), rel=0.01)
    assert low == pytest.approx(tb.rate_for_power(1, 1e-3), rel=0.01)
    assert low < high / 2
    # Both on sub-channel 0 and uploading: device 1 now hears device 0 and slows further.
    shaper.apply([decision("d0", addresses[0], 0, 1.0), decision("d1", addresses[1], 0, 1e-3)])
    assert kernel_uplink_bps(tb, 1) < 0.5 * low


@pytest.fixture(scope="module")
def split_bundle(tmp_path_factory):
    from coinfer.bench.fixtures import SplitBundleConfig, build_split_bundle

    return build_split_bundle(tmp_path_factory.mktemp("split") / "split-bundle", SplitBundleConfig(model_name="digits-split"))


@needs_netns
@pytest.mark.slow
def test_the_scheduler_s_powers_set_the_kernel_rates(testbed_factory, split_bundle):
    from coinfer.protos.v1 import DeviceInfo
    from coinfer.server.catalog import ModelCatalog
    from coinfer.server.coordinator import Coordinator, CoordinatorConfig
    from coinfer.server.scheduler import Scheduler, SchedulerConfig

    tb = testbed_factory(3)
    coordinator = Coordinator(ModelCatalog([split_bundle]), CoordinatorConfig(heartbeat_interval_s=1.0))
    for i in range(3):
        coordinator.register(DeviceInfo(f"edge{i}", f"{tb.device_address(i)}:{PORT}"))
    scheduler = Scheduler(coordinator, SchedulerConfig(policy="random", scenario="mahppo-paper-resnet18", slot_s=0.1),
                          TestbedLinkShaper(tb))
    try:
        for _ in range(2):  # the random policy moves every power between slots
            decisions = scheduler.step()
            for i, record in enumerate(coordinator.devices()):
                expected = max(tb.rate_for_power(i, decisions[record.device_id].power_w), tb.config.min_rate_bps)
                assert kernel_uplink_bps(tb, i) == pytest.approx(expected, rel=0.01)
    finally:
        coordinator.stop()

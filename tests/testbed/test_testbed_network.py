"""A real two-device testbed: connectivity, shaped rates, live rate changes, delay (root only)."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys

import pytest

from coinfer.cli import main
from coinfer.core.errors import FailedPrecondition, InvalidInput
from coinfer.testbed import Testbed

from testbed_helpers import (assert_shaped_bps, assert_shaped_ms, measure_request_upload_ms, measure_upload_bps,
                             needs_netns, run_probe, start_probe, unique_prefix)

pytestmark = needs_netns


def in_device(tb: Testbed, i: int):
    return lambda argv, **kw: tb.exec_in(i, argv, **kw)


def test_devices_reach_the_server_over_their_veths(testbed_factory):
    tb = testbed_factory(2)
    echo = start_probe(tb.exec_in_server, "echo", tb.server_address, 7001, 2)
    for i in range(2):
        result = run_probe(in_device(tb, i), "rtt", tb.server_address, 7001, 3)
        assert len(result["rtt_ms"]) == 3
    echo.wait(timeout=20)
    # The server side reaches a device's own address too.
    echo_dev = start_probe(in_device(tb, 1), "echo", "0.0.0.0", 7002, 1)
    assert len(run_probe(tb.exec_in_server, "rtt", tb.device_address(1), 7002, 2)["rtt_ms"]) == 2
    echo_dev.wait(timeout=20)


def test_devices_cannot_reach_each_other(testbed_factory):
    tb = testbed_factory(2)
    listener = start_probe(in_device(tb, 1), "echo", "0.0.0.0", 7003, 1)
    try:
        # The server namespace does not forward, so device 0 has no path to device 1.
        proc = tb.exec_in(0, [sys.executable, "-c",
                              f"import socket; socket.create_connection(('{tb.device_address(1)}', 7003), timeout=0.5)"],
                          stderr=subprocess.PIPE, text=True)
        _, err = proc.communicate(timeout=20)
        assert proc.returncode != 0
        assert "timed out" in err or "unreachable" in err, err
    finally:
        listener.kill()
        listener.wait()


def test_upload_follows_the_shaped_rate(testbed_factory):
    tb = testbed_factory(2, uplink_mbit=[2, 8], downlink_mbit=[8])
    slow = measure_upload_bps(tb, 0, 250_000, 7010)
    fast = measure_upload_bps(tb, 1, 1_000_000, 7011)
    assert_shaped_bps(slow, tb.rate_bps(0, "up"))
    assert_shaped_bps(fast, tb.rate_bps(1, "up"))
    assert fast / slow > 2.5  # 4x apart as shaped: each device has its own rate


def test_each_request_pays_its_upload_time_even_after_an_idle_gap(testbed_factory):
    # An offloaded feature is a short transfer after a pause; the shaper must not let it burst.
    tb = testbed_factory(1, uplink_mbit=[2])
    size = 32_000
    expected_ms = size * 8 / tb.rate_bps(0) * 1000
    for upload_ms in measure_request_upload_ms(tb, 0, size, 7012, rounds=3, pause_s=0.3):
        assert_shaped_ms(upload_ms, expected_ms)


def test_set_rate_and_set_power_take_effect_live(testbed_factory):
    tb = testbed_factory(1, uplink_mbit=[8])
    tb.set_rate(0, 2e6)
    assert tb.rate_bps(0) == 2e6
    assert tb.status().devices[0].live_uplink == "2Mbit"
    assert_shaped_bps(measure_upload_bps(tb, 0, 250_000, 7020), 2e6)

    # A transmit power maps to a rate through the simulator's channel model.
    rate = tb.set_power(0, 1e-3)
    assert rate == pytest.approx(tb.rate_for_power(0, 1e-3))
    assert tb.rate_for_power(0, 1e-2) > rate
    assert_shaped_bps(measure_upload_bps(tb, 0, int(rate / 8), 7021), rate)

    # Another process (the coordinator) attaches and sees the same rates.
    assert Testbed.attach(tb.config.prefix, tb.config.state_dir).rate_bps(0) == pytest.approx(rate)
    with pytest.raises(InvalidInput, match="rate_bps"):
        tb.set_rate(0, 0.0)
    with pytest.raises(InvalidInput, match="device index"):
        tb.set_rate(3, 1e6)


def test_configured_delay_shows_in_round_trips(testbed_factory):
    delay_ms = 40.0
    tb = testbed_factory(2, delay_ms=[0, delay_ms])
    assert tb.delay_mechanism in ("netem", "relay")
    assert tb.status().delay_mechanism == tb.delay_mechanism
    echo = start_probe(tb.exec_in_server, "echo", tb.server_address, 7030, 2)
    medians = []
    for i in range(2):
        ep = tb.reach_server(i, 7030)
        medians.append(statistics.median(run_probe(in_device(tb, i), "rtt", ep.host, ep.port, 5)["rtt_ms"]))
    echo.wait(timeout=20)
    added = medians[1] - medians[0]
    assert_shaped_ms(added, 2 * delay_ms, floor=0.95)  # one delay each way
    if tb.delay_mechanism == "relay":
        relays = tb.status().relays
        assert [(r.device, r.toward, r.alive) for r in relays] == [(1, "server", True)]


def test_second_up_with_the_same_prefix_is_refused(testbed_factory):
    tb = testbed_factory(1)
    with pytest.raises(FailedPrecondition, match="already up"):
        Testbed.up(tb.config)
    assert tb.status().phase == "up"  # the refused attempt removed nothing


def test_cli_up_status_down(tmp_path, capsys):
    prefix, state = unique_prefix(), str(tmp_path / "state")
    target = ["--prefix", prefix, "--state-dir", state]
    try:
        assert main(["testbed", "up", "--devices", "2", "--bandwidth-mbit", "3,6", "--delay-ms", "0,10",
                     "--server-port", "7040", "--json", *target]) == 0
        up = json.loads(capsys.readouterr().out)
        assert [d["live_uplink"] for d in up["devices"]] == ["3Mbit", "6Mbit"]
        assert len(up["server_ports"]["7040"]) == 2
        assert main(["testbed", "status", "--json", *target]) == 0
        status = json.loads(capsys.readouterr().out)
        assert status["phase"] == "up" and status["delay_mechanism"] == up["delay_mechanism"]
        assert main(["testbed", "up", "--devices", "1", *target]) == 2  # already up: a clear error
        assert "already up" in capsys.readouterr().err
        # `exec` runs a command in a device's namespace (it replaces the process, so run it as one).
        done = subprocess.run([sys.executable, "-m", "coinfer", "testbed", "exec", *target, "--device", "1", "--",
                               "ip", "-o", "-4", "addr", "show", "dev", "eth0"], capture_output=True, text=True,
                              timeout=30)
        assert done.returncode == 0, done.stderr
        assert up["devices"][1]["address"] + "/30" in done.stdout
    finally:
        assert main(["testbed", "down", "--json", *target]) == 0
    down = json.loads(capsys.readouterr().out)
    assert sorted(down["namespaces_removed"]) == sorted([f"{prefix}-srv", f"{prefix}-d0", f"{prefix}-d1"])
    assert main(["testbed", "status", *target]) == 0
    assert "down" in capsys.readouterr().out


def test_exec_runs_inside_the_device_namespace(testbed_factory):
    tb = testbed_factory(2)
    proc = tb.exec_in(1, ["ip", "-o", "-4", "addr", "show", "dev", "eth0"], stdout=subprocess.PIPE,
                      text=True)
    out, _ = proc.communicate(timeout=20)
    assert tb.device_address(1) in out

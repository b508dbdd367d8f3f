"""The `ip`/`tc` commands `up` and `set_rate` issue, against a fake runner (no root needed).

This is where the netem branch is checked on kernels without netem (this one included): the
real-network tests exercise whichever mechanism the host has.
"""

from __future__ import annotations

import subprocess

import pytest

from coinfer.testbed import Testbed, make_config
from coinfer.testbed import netns


@pytest.fixture
def fake_tools(monkeypatch):
    """Record every command; `has_netem` decides whether the netem probe succeeds."""
    calls: list[list[str]] = []
    options = {"has_netem": False}

    def fake_run(argv, *, check=True):
        argv = list(argv)
        calls.append(argv)
        failed = "netem" in argv and "lo" in argv and not options["has_netem"]
        return subprocess.CompletedProcess(argv, 2 if failed else 0, stdout="", stderr="")

    monkeypatch.setattr(netns, "run", fake_run)
    monkeypatch.setattr(netns, "require_tools", lambda: None)
    return calls, options


def commands(calls, *words):
    return [c for c in calls if all(w in c for w in words)]


def test_netem_carries_delay_and_loss_where_the_kernel_has_it(fake_tools, tmp_path):
    calls, options = fake_tools
    options["has_netem"] = True
    tb = Testbed.up(make_config(2, prefix="fake", state_dir=tmp_path, uplink_mbit=[2, 8], delay_ms=[0, 20],
                                loss_pct=[0, 1]))
    assert tb.delay_mechanism == "netem"
    netem = commands(calls, "netem", "parent")
    # Device 1 only, both directions: its own veth end and the server's end.
    assert sorted((c[2], c[6]) for c in netem) == [("fake-d1", "eth0"), ("fake-srv", "dev1")]
    for c in netem:
        assert c[c.index("delay") + 1] == "20ms" and c[c.index("loss") + 1] == "1%"
    # netem applies in the kernel, so the devices dial the server directly.
    assert str(tb.reach_server(1, 8001)) == f"{tb.server_address}:8001"


def test_without_netem_no_netem_qdisc_is_made_and_the_relay_is_named(fake_tools, tmp_path):
    calls, _ = fake_tools
    tb = Testbed.up(make_config(2, prefix="fake", state_dir=tmp_path, delay_ms=[0, 20]))
    assert tb.delay_mechanism == "relay"
    assert commands(calls, "netem", "parent") == []
    assert tb.status().delay_mechanism == "relay"


def test_no_impairment_needs_no_mechanism_and_no_probe(fake_tools, tmp_path):
    calls, _ = fake_tools
    tb = Testbed.up(make_config(1, prefix="fake", state_dir=tmp_path))
    assert tb.delay_mechanism == "none"
    assert commands(calls, "netem") == []
    assert str(tb.reach_device(0, 9000)) == f"{tb.device_address(0)}:9000"


def test_up_shapes_every_veth_end_and_limits_gso(fake_tools, tmp_path):
    calls, _ = fake_tools
    Testbed.up(make_config(2, prefix="fake", state_dir=tmp_path, uplink_mbit=[2, 8], downlink_mbit=[1, 4]))
    rates = {(c[2], c[6]): c[c.index("rate") + 1] for c in commands(calls, "class", "replace")}
    assert rates == {("fake-d0", "eth0"): "2000000bit", ("fake-srv", "dev0"): "1000000bit",
                     ("fake-d1", "eth0"): "8000000bit", ("fake-srv", "dev1"): "4000000bit"}
    gso = {(c[2], c[5]) for c in commands(calls, "gso_max_segs")}
    assert gso == {("fake-d0", "eth0"), ("fake-srv", "dev0"), ("fake-d1", "eth0"), ("fake-srv", "dev1")}


def test_set_rate_changes_the_class_in_place(fake_tools, tmp_path):
    calls, _ = fake_tools
    tb = Testbed.up(make_config(2, prefix="fake", state_dir=tmp_path))
    tb.set_rate(1, 3e6)
    tb.set_rate(0, 5e5, "down")
    changes = [(c[2], c[6], c[c.index("rate") + 1]) for c in commands(calls, "class", "change")]
    assert changes == [("fake-d1", "eth0", "3000000bit"), ("fake-srv", "dev0", "500000bit")]
    assert Testbed.attach("fake", tmp_path).rate_bps(1) == 3e6  # recorded for other processes

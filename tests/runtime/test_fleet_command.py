"""Speeds on the wire: edge daemons report them, `coinfer fleet` lists them and writes a speeds
file, a calibration can be asked for, and a device sending nonsense is refused with a message
while the coordinator keeps serving."""

from __future__ import annotations

import json
import math
import time

import grpc
import pytest

from coinfer.cli import main
from coinfer.edge.calibration import REFERENCE, calibrate, configured
from coinfer.edge.daemon import EdgeConfig
from coinfer.edge.serve import start_edge
from coinfer.edge.stats import EdgeStats
from coinfer.core.errors import InvalidInput
from coinfer.protos import coinfer_v1_pb2 as v1
from coinfer.protos import coinfer_v1_pb2_grpc as v1_grpc
from coinfer.serving.security import open_channel
from coinfer.serving.server import ServerOptions
from coinfer.server.coordinator import CoordinatorConfig
from coinfer.server.fleet import list_fleet
from coinfer.server.serve import start_coordinator

OPTIONS = ServerOptions(listen="127.0.0.1:0", grace_s=0.2)


@pytest.fixture(scope="module")
def cluster(devit_bundle, tmp_path_factory):
    """A coordinator and two edges: one told its speed (0.5), one that measures it (briefly)."""
    coordinator = start_coordinator([devit_bundle.path], OPTIONS, CoordinatorConfig(heartbeat_interval_s=0.2, device_timeout_s=5.0))
    edges = []
    try:
        for name, speed in (("told", 0.5), ("measured", None)):
            config = EdgeConfig(name=name, coordinator=coordinator.address, address="", cache_dir=tmp_path_factory.mktemp(name),
                                speed=speed, calibration_s=0.1)
            edges.append(start_edge(config, OPTIONS))
        deadline = time.monotonic() + 60
        while not _settled(list_fleet(coordinator.address)):
            assert time.monotonic() < deadline, "the edges did not register and load their sub-models"
            time.sleep(0.1)
        yield coordinator, edges
    finally:
        for edge in edges:
            edge.stop()
        coordinator.stop()


def _settled(listing) -> bool:
    """Both edges reported a speed, and every sub-model sits loaded on one device (none handed over)."""
    primaries = [s for d in listing.live for s in d.submodels if not s.replica]
    reported = [d for d in listing.live if d.reported_speed]
    return len(reported) == 2 and sorted(s.index for s in primaries) == [0, 1, 2, 3] and all(s.loaded for s in primaries)


def test_calibration_measures_the_reference_and_configured_speeds_are_checked() -> None:
    speed = calibrate(0.1)
    assert speed.source == "calibrated" and speed.reference == REFERENCE and speed.threads >= 1
    assert 0 < speed.relative_speed < 1000 and speed.calibration_ms >= 100
    assert configured(0.25).relative_speed == 0.25
    for bad in (0.0, -1.0, math.nan, 1e9):
        with pytest.raises(InvalidInput, match="--speed"):
            configured(bad)


def test_moving_estimates_start_again_when_the_held_submodels_change() -> None:
    stats = EdgeStats()
    assert stats.submodel_computed("m", 0, (0,), 10.0, 1) == 10.0
    assert stats.submodel_computed("m", 0, (0,), 20.0, 1) == pytest.approx(11.0)  # 10 % weight on the newest
    assert stats.submodel_timings()[0].calls == 2
    assert stats.submodel_computed("m", 0, (0, 1), 30.0, 1) == 30.0  # now beside sub-model 1: a new estimate
    stats.forget_submodels(set())
    assert stats.submodel_timings() == ()


def test_fleet_lists_speeds_and_submodels_and_writes_a_speeds_file(cluster, tmp_path, capsys) -> None:
    coordinator, _ = cluster
    out = tmp_path / "speeds.json"
    assert main(["fleet", "--coordinator", coordinator.address, "--json", "--out", str(out)]) == 0
    listing = json.loads(capsys.readouterr().out)
    devices = {d["name"]: d for d in listing["devices"]}
    assert devices["told"]["reported_speed"] == 0.5 and devices["told"]["speed_source"] == "configured"
    assert devices["measured"]["speed_source"] == "calibrated" and devices["measured"]["threads"] >= 1
    held = [s for d in devices.values() for s in d["submodels"] if not s["replica"]]
    assert sorted(s["index"] for s in held) == [0, 1, 2, 3] and all(s["sized_for_speed"] == 1.0 for s in held)
    assert listing["models"][0]["model_name"] == "digits-devit" and listing["models"][0]["policy"] == "speed"
    written = json.loads(out.read_text())
    assert sorted(d["name"] for d in written["devices"]) == ["measured", "told"]
    assert {d["name"]: d["reported_speed"] for d in written["devices"]}["told"] == 0.5
    assert main(["fleet", "--coordinator", coordinator.address]) == 0
    text = capsys.readouterr().out
    assert "told" in text and "configured" in text and "digits-devit#" in text


def test_a_calibration_can_be_asked_for(cluster, capsys) -> None:
    coordinator, edges = cluster
    measured = next(e for e in edges if e.daemon.config.name == "measured")
    before = measured.daemon.metrics.calibrations._value.get()
    assert main(["fleet", "--coordinator", coordinator.address, "--calibrate", "--timeout-s", "30"]) == 0
    assert measured.daemon.metrics.calibrations._value.get() == before + 1
    assert not any(d.calibration_pending for d in list_fleet(coordinator.address).devices)
    assert main(["fleet", "--coordinator", coordinator.address, "--calibrate"]) == 0  # asking twice is fine
    capsys.readouterr()


def test_nonsensical_speeds_on_the_wire_are_refused_and_the_coordinator_carries_on(cluster) -> None:
    coordinator, _ = cluster
    channel = open_channel(coordinator.address)
    stub = v1_grpc.CoordinatorStub(channel)
    try:
        for value in (0.0, -2.0, math.nan, 1e9):
            device = v1.DeviceInfo(name="liar", address="127.0.0.1:9", speed=v1.DeviceSpeed(relative_speed=value))
            with pytest.raises(grpc.RpcError) as caught:
                stub.Register(v1.RegisterRequest(device=device), timeout=5)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "relative speed" in caught.value.details()
        told = next(d for d in list_fleet(coordinator.address).live if d.name == "told")
        bad = v1.HeartbeatRequest(device_id=told.device_id, name="told", speed=v1.DeviceSpeed(relative_speed=math.inf))
        with pytest.raises(grpc.RpcError) as caught:
            stub.Heartbeat(bad, timeout=5)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert {d.name for d in list_fleet(coordinator.address).live} == {"told", "measured"}
    finally:
        channel.close()


def test_edge_refuses_a_nonsensical_speed_flag(capsys) -> None:
    assert main(["edge", "--speed", "0", "--name", "x"]) == 2
    assert "--speed: a relative speed of 0.0" in capsys.readouterr().err

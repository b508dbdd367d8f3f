"""Device speeds through the coordinator: reports refused when absurd, sub-models placed by
speed as devices join, leave and slow down (make-before-break, replicas), the fleet-mismatch
warning, and the speed model refined by real requests' timings."""

from __future__ import annotations

import logging
import math

import pytest

from coinfer.core.errors import InvalidInput
from coinfer.protos.v1 import DeviceInfo, DeviceSpeed, LoadReport, SubModelTiming
from coinfer.server.catalog import ModelCatalog
from coinfer.server.coordinator import Coordinator, CoordinatorConfig
from coinfer.server.fleet_model import LiveDevice, SubModelSize, estimate, fleet_mismatch

MODEL = "digits-devit"


@pytest.fixture
def coordinator(devit_bundle):
    """A coordinator of the 4-sub-model DeViT bundle whose sub-models 0, 1 are twice as large as 2, 3."""
    c = Coordinator(ModelCatalog([devit_bundle]), CoordinatorConfig(heartbeat_interval_s=1.0, mismatch_grace_s=0.0))
    sized = (1.0, 1.0, 0.5, 0.5)
    c.sizes = {(MODEL, i): SubModelSize((MODEL, i), 2.0 * s, 0, s) for i, s in enumerate(sized)}
    c.placements[MODEL].sized_for_speeds = sized
    yield c
    c.stop()


def _info(name: str, speed: float | None) -> DeviceInfo:
    return DeviceInfo(name, f"127.0.0.1:{1000 + len(name)}", speed=None if speed is None else DeviceSpeed(speed))


def _holdings(c: Coordinator) -> dict[str, list[tuple[int, bool]]]:
    return {r.info.name: sorted((ref.index, ref.replica) for ref in r.targets) for r in c.registry.records()}


def _report_loaded(c: Coordinator, record, speed: float | None = None, timings=()) -> None:
    """A heartbeat in which the device holds (loaded) everything in its assignment."""
    held = tuple(f"{ref.bundle}/{ref.part}" for ref in record.submodels)
    c.heartbeat(record.device_id, LoadReport(0, 0, None, 0, record.generation, held,
                                             speed=None if speed is None else DeviceSpeed(speed), submodel_timings=tuple(timings)))


def _settle(c: Coordinator) -> None:
    """Every device loads its assignment and hands over what moved away (two rounds)."""
    for _ in range(2):
        for record in c.registry.records():
            _report_loaded(c, record)
        c._place()


@pytest.mark.parametrize("speed", [0.0, -1.0, math.nan, math.inf, 1e9])
def test_nonsensical_speeds_are_refused_with_a_message(coordinator, speed) -> None:
    with pytest.raises(InvalidInput, match="relative speed"):
        coordinator.register(_info("liar", speed))
    good, _ = coordinator.register(_info("honest", 1.0))
    with pytest.raises(InvalidInput, match="relative speed"):
        coordinator.heartbeat(good.device_id, LoadReport(0, 0, None, 0, 0, (), speed=DeviceSpeed(speed)))
    coordinator.heartbeat(good.device_id, LoadReport(0, 0, None, 0, 0, (), speed=DeviceSpeed(0.5)))  # still serving
    assert coordinator.registry.get(good.device_id).speed.relative_speed == 0.5


def test_large_submodels_go_to_fast_devices_whatever_the_registration_order(coordinator) -> None:
    for name, speed in (("slow-a", 0.5), ("fast-a", 1.0), ("slow-b", 0.5), ("fast-b", 1.0)):
        coordinator.register(_info(name, speed))
    held = _holdings(coordinator)
    assert {i for name in ("fast-a", "fast-b") for i, _ in held[name]} == {0, 1}
    assert {i for name in ("slow-a", "slow-b") for i, _ in held[name]} == {2, 3}
    status = coordinator.placements[MODEL]
    assert status.critical_path_ms == pytest.approx(status.optimal_critical_path_ms) == pytest.approx(2.0)

    # The same joins placed by count leave large sub-models on slow devices.
    count = Coordinator(coordinator.catalog, CoordinatorConfig(heartbeat_interval_s=1.0, placement="count"))
    count.sizes = coordinator.sizes
    try:
        for name, speed in (("slow-a", 0.5), ("fast-a", 1.0), ("slow-b", 0.5), ("fast-b", 1.0)):
            count.register(_info(name, speed))
        held = _holdings(count)
        assert {i for name in ("slow-a", "slow-b") for i, _ in held[name]} == {0, 1}
        assert count.placements[MODEL].critical_path_ms == pytest.approx(4.0)
    finally:
        count.stop()


def test_a_joining_device_holds_a_replica_and_takes_over_when_a_holder_dies(coordinator) -> None:
    records = {name: coordinator.register(_info(name, speed))[0] for name, speed in
               (("fast-a", 1.0), ("fast-b", 1.0), ("slow-a", 0.5), ("slow-b", 0.5))}
    _settle(coordinator)
    spare, _ = coordinator.register(_info("spare", 1.0))
    assert _holdings(coordinator)["spare"] in ([(0, True)], [(1, True)])  # a replica of a large (critical) sub-model
    backed_up = _holdings(coordinator)["spare"][0][0]
    victim = next(n for n in ("fast-a", "fast-b") if (backed_up, False) in _holdings(coordinator)[n])
    _settle(coordinator)
    # The victim goes silent past the timeout: its sub-model goes to the replica, which has it loaded already.
    coordinator.registry.get(records[victim].device_id).last_seen_monotonic -= 60
    coordinator._place()
    held = _holdings(coordinator)
    assert victim not in held and held["spare"] == [(backed_up, False)]
    holders = coordinator.holders(MODEL)
    assert holders[backed_up].device_name == "spare" and sorted(holders) == [0, 1, 2, 3]
    assert coordinator.placements[MODEL].critical_path_ms == pytest.approx(2.0)


def test_a_device_that_slows_down_loses_its_large_submodel_make_before_break(coordinator) -> None:
    for name, speed in (("fast-a", 1.0), ("fast-b", 1.0), ("slow-a", 0.5), ("slow-b", 0.5), ("spare", 1.0)):
        coordinator.register(_info(name, speed))
    _settle(coordinator)
    held = _holdings(coordinator)
    busy = next(n for n in ("fast-a", "fast-b") if held[n][0][0] not in {i for i, _ in held["spare"]})
    index = held[busy][0][0]
    record = next(r for r in coordinator.registry.records() if r.info.name == busy)
    _report_loaded(coordinator, record, speed=0.2)  # it calibrated again, much slower
    coordinator._place()
    held = _holdings(coordinator)
    new_holder = next(n for n, refs in held.items() if (index, False) in refs)
    assert new_holder != busy
    # Until the new holder has it loaded, the slowed device keeps serving it.
    assert index in {ref.index for ref in coordinator.registry.get(record.device_id).submodels}
    assert coordinator.holders(MODEL)[index].device_name == busy
    new = next(r for r in coordinator.registry.records() if r.info.name == new_holder)
    _report_loaded(coordinator, new)
    coordinator._place()
    assert coordinator.holders(MODEL)[index].device_name == new_holder
    # Released as a primary; too slow to run one now, it may keep a copy as a spare's replica.
    assert index not in {ref.index for ref in coordinator.registry.get(record.device_id).submodels if not ref.replica}


def test_a_fleet_that_no_longer_matches_the_sizing_is_reported(coordinator, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="coinfer.server.coordinator")
    for name in ("a", "b", "c", "d"):
        coordinator.register(_info(name, 1.0))  # equal devices for a bundle sized for 1,1,0.5,0.5
    coordinator._place()
    coordinator._export_device_metrics()
    mismatch = coordinator.placements[MODEL].mismatch
    assert "sized for 0.50 runs on" in mismatch and "at 1.00" in mismatch
    assert "no longer matches" in caplog.text and "coinfer decompose --fleet" in caplog.text
    assert coordinator.metrics.fleet_mismatch.labels(MODEL)._value.get() == 1


def test_fleet_mismatch_names_what_differs() -> None:
    sized = {("m", 0): 1.0, ("m", 1): 0.5}
    assert fleet_mismatch(sized, {("m", 0): "a", ("m", 1): "b"}, {"a": 2.0, "b": 1.1}, {}) == ""
    assert "1 device(s) hold its 2" in fleet_mismatch(sized, {("m", 0): "a", ("m", 1): "a"}, {"a": 1.0}, {})
    assert fleet_mismatch(sized, {("m", 0): "a", ("m", 1): "b"}, {"a": 1.0, "b": 1.0}, {"b": "nano"}) == \
        "sub-model 1 sized for 0.50 runs on nano at 1.00"


def test_real_timings_refine_a_device_speed_and_small_noise_is_ignored() -> None:
    sizes = {("m", i): SubModelSize(("m", i), 10.0, 0, 1.0) for i in range(3)}

    def device(name: str, index: int, ms: float) -> LiveDevice:
        return LiveDevice(name, 1.0, (("m", index),), LoadReport(0, 0, None, 0, 1, (), submodel_timings=(SubModelTiming("m", index, ms, 20),)))

    # c takes twice as long as a and b for the same work: its effective speed halves.
    fleet = estimate([device("a", 0, 20.0), device("b", 1, 21.0), device("c", 2, 40.0)], sizes)
    assert fleet.scale == pytest.approx(2.1)  # observed ms per unit of work
    assert fleet.devices["c"].effective_speed == pytest.approx(21.0 / 40.0)
    assert fleet.devices["a"].effective_speed == 1.0 and fleet.devices["b"].effective_speed == 1.0  # within 10 %
    # Too few calls, or a device holding two sub-models of the model, are not timed.
    few = LiveDevice("c", 1.0, (("m", 2),), LoadReport(0, 0, None, 0, 1, (), submodel_timings=(SubModelTiming("m", 2, 80.0, 2),)))
    assert estimate([device("a", 0, 20.0), few], sizes).devices["c"].effective_speed == 1.0
    two = LiveDevice("c", 1.0, (("m", 1), ("m", 2)), LoadReport(0, 0, None, 0, 1, (), submodel_timings=(SubModelTiming("m", 2, 80.0, 20),)))
    assert estimate([device("a", 0, 20.0), two], sizes).devices["c"].effective_speed == 1.0


def test_a_device_left_without_submodels_is_asked_to_measure_its_speed_again(devit_bundle) -> None:
    c = Coordinator(ModelCatalog([devit_bundle]), CoordinatorConfig(heartbeat_interval_s=1.0))
    try:
        for name in ("a", "b", "c", "d"):
            c.register(_info(name, 1.0))
        c.config.spare_calibration_s = 0.0  # (while they joined, some were spares for a moment)
        idle, _ = c.register(_info("idle", 0.01))  # calibrated far too low (something else had the CPU)
        assert not c.registry.get(idle.device_id).primary_keys
        assert c.registry.get(idle.device_id).calibration == "requested"
        assert all(not r.calibration for r in c.registry.records() if r.info.name != "idle")
    finally:
        c.stop()

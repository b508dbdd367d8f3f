"""Sub-model placement, the live observation in the simulator's layout, and the scheduler's slots."""

from __future__ import annotations

import json

import numpy as np
import pytest

from coinfer.core.errors import FailedPrecondition, InvalidInput
from coinfer.protos.v1 import DeviceInfo, LoadReport
from coinfer.server.catalog import ModelCatalog
from coinfer.server.coordinator import Coordinator, CoordinatorConfig
from coinfer.server.observation import LiveDeviceState, ObservationBuilder
from coinfer.server.placement import place_submodels
from coinfer.server.registry import Decision, DeviceRegistry
from coinfer.server.scheduler import Scheduler, SchedulerConfig

KEYS = [("m", i) for i in range(4)]


def test_placement_spreads_sticks_and_replaces_only_what_was_lost() -> None:
    first = place_submodels(KEYS, {}, ["a"])
    assert first == {"a": tuple(KEYS)}
    spread = place_submodels(KEYS, first, ["a", "b", "c", "d"])
    assert sorted(len(v) for v in spread.values()) == [1, 1, 1, 1]
    assert set(sum(spread.values(), ())) == set(KEYS)
    assert place_submodels(KEYS, spread, ["a", "b", "c", "d"]) == spread  # nothing moves while all live
    # c dies: only its sub-model moves, to a live device; the others stay where they were.
    after = place_submodels(KEYS, spread, ["a", "b", "d"])
    for device in ("a", "b", "d"):
        assert set(spread[device]) <= set(after[device])
    assert set(sum(after.values(), ())) == set(KEYS) and "c" not in after
    # Five devices for four sub-models: one holds none; no device holds two.
    five = place_submodels(KEYS, spread, ["a", "b", "c", "d", "e"])
    assert sorted(len(v) for v in five.values()) == [0, 1, 1, 1, 1]
    assert place_submodels(KEYS, spread, []) == {}


def test_registry_generations_never_repeat_and_unknown_heartbeats_are_refused() -> None:
    registry = DeviceRegistry(device_timeout_s=5.0)
    decide = lambda order: Decision(2, order % 2, 0.1)  # noqa: E731
    a = registry.register(DeviceInfo("a", "h:1"), decide)
    b = registry.register(DeviceInfo("b", "h:2"), decide)
    seen = {a.generation, b.generation}
    assert registry.update(a.device_id, decision=Decision(3, 0, 0.1))
    assert not registry.update(a.device_id, decision=Decision(3, 0, 0.1))  # no change, same generation
    seen.add(registry.get(a.device_id).generation)
    again = registry.register(DeviceInfo("a", "h:9"), decide)  # re-registration replaces the old record
    seen.add(again.generation)
    assert len(seen) == 4 and registry.get(a.device_id) is None
    assert [r.info.name for r in registry.records()] == ["b", "a"]
    with pytest.raises(FailedPrecondition, match="register again"):
        registry.heartbeat(a.device_id, LoadReport(0, 0, None, 0, 0, ()))


def test_observation_matches_the_simulator_layout() -> None:
    from coinfer.rl.scenario import load_scenario
    from coinfer.rl.sim.core import Simulator, feature_names

    scenario = load_scenario("edge-server")
    builder = ObservationBuilder(scenario)
    assert builder.feature_names == feature_names(scenario)
    F = len(builder.feature_names)
    busy = LiveDeviceState(queue_length=20, in_compute=1, in_offload=2, in_tail=1, split_point=3, distance_m=25.0)
    obs = builder.build([busy, None, LiveDeviceState(0, 0, 0, 0, 5, 0.0)])
    assert obs.shape == (scenario.num_devices * F,) and obs.dtype == np.float64
    rows = obs.reshape(scenario.num_devices, F)
    col = {name: i for i, name in enumerate(builder.feature_names)}
    profile = scenario.devices[0].profile
    local_s = profile.points[-1].head_latency_s
    assert rows[0, col["tasks_left_frac"]] == pytest.approx(20 / scenario.tasks.mean_tasks_per_device)
    assert rows[0, col["head_left_frac"]] == pytest.approx(0.5 * profile.points[3].head_latency_s / local_s)
    assert rows[0, col["upload_left_frac"]] == pytest.approx(2 * 0.5 * profile.points[3].uplink_bits / profile.points[0].uplink_bits)
    assert rows[0, col["distance_frac"]] == pytest.approx(25.0 / scenario.devices[0].distance_range_m[1])
    assert rows[0, col["server_left_frac"]] > 0
    assert not rows[1].any(), "an empty slot reads as an idle device with nothing left"
    # Unknown distance: the scenario's evaluation distance.
    assert rows[2, col["distance_frac"]] == pytest.approx(scenario.devices[2].eval_distance_m / scenario.devices[2].distance_range_m[1])
    # No configured distance: the measured uplink says how far the device would be on the scenario's channel.
    net, low_m, high_m = scenario.network, *scenario.devices[0].distance_range_m
    d_m = 40.0
    rate_bps = net.subchannel_bandwidth_hz * np.log2(1 + 0.5 * d_m ** -net.path_loss_exponent / net.noise_w)
    measured = LiveDeviceState(1, 0, 0, 0, 2, 0.0, uplink_bytes_per_s=rate_bps / 8, power_w=0.5)
    assert builder.distance_m(0, measured) == pytest.approx(d_m, rel=1e-6)
    loopback = LiveDeviceState(1, 0, 0, 0, 2, 0.0, uplink_bytes_per_s=1e9, power_w=0.5)
    assert builder.distance_m(0, loopback) == pytest.approx(low_m), "a very fast link reads as the nearest device"
    # Values stay within the simulator's own bounds, so a trained policy never sees more than it did.
    huge = builder.build([LiveDeviceState(10_000, 500, 500, 500, 1, 1e6)]).reshape(scenario.num_devices, F)
    assert np.all(huge <= Simulator(scenario, mode="eval").feature_high() + 1e-12)
    with pytest.raises(InvalidInput, match="device slots"):
        builder.build([busy] * (scenario.num_devices + 1))


def test_a_baseline_decides_every_device_and_the_assignment_follows(split_catalog, make_coordinator, tmp_path) -> None:
    coordinator = make_coordinator(split_catalog, 3)
    log_path = tmp_path / "decisions.jsonl"
    scheduler = Scheduler(coordinator, SchedulerConfig(policy="local", scenario="mahppo-paper-resnet18", slot_s=0.1, decision_log=log_path))
    assert coordinator.config.heartbeat_interval_s == pytest.approx(0.1), "heartbeats must follow the slot"
    before = {r.device_id: coordinator.assignment_for(r).generation for r in coordinator.devices()}
    decisions = scheduler.step()
    assert {d.split_point for d in decisions.values()} == {5}
    for record in coordinator.devices():
        a = coordinator.assignment_for(record)
        assert a.split_point == 5 and a.point_plan().offload is False
        assert a.sub_channel == record.order % 2
        # The initial decision was the scenario's (local too), so only the power moved, or nothing.
        assert a.generation >= before[record.device_id]
    scheduler.step()
    lines = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert [line["slot"] for line in lines] == [1, 2] and len(lines[0]["devices"]) == 3
    assert len(lines[0]["observation"]) == 5 * len(scheduler.builder.feature_names)
    coordinator.stop()


def test_a_mahppo_policy_file_schedules_live_devices(split_catalog, make_coordinator, tmp_path) -> None:
    import torch

    from coinfer.rl.mahppo_policy import MahppoPolicy
    from coinfer.rl.networks import HybridActor
    from coinfer.rl.scenario import load_scenario
    from coinfer.rl.sim.core import feature_names

    scenario = load_scenario("mahppo-paper-resnet18")
    torch.manual_seed(0)
    actor = HybridActor(scenario.num_devices, len(feature_names(scenario)), scenario.num_points, scenario.num_subchannels, hidden=(16,))
    path = MahppoPolicy(actor, scenario).save(tmp_path / "policy")
    coordinator = make_coordinator(split_catalog, 2)
    scheduler = Scheduler(coordinator, SchedulerConfig(policy=str(path), slot_s=0.2))
    assert scheduler.scenario.name == "mahppo-paper-resnet18"  # taken from the policy file
    # What the scheduler applies is what the policy says for the same observation.
    records = coordinator.devices()
    observation = scheduler.builder.build([scheduler._state(r) for r in records])
    expected = scheduler.policy.act(observation)
    decisions = scheduler.step()
    for n, record in enumerate(records):
        d = decisions[record.device_id]
        assert d.split_point == int(expected.points[n]) and d.sub_channel == int(expected.channels[n])
        assert d.power_w == pytest.approx(float(expected.powers_w[n]))
        low, high = scenario.devices[n].power_range_w
        assert low <= d.power_w <= high
        assert coordinator.assignment_for(coordinator.registry.get(record.device_id)).split_point == d.split_point
    coordinator.stop()


def test_a_scheduler_needs_a_split_model(devit_bundle) -> None:
    coordinator = Coordinator(ModelCatalog([devit_bundle]))
    with pytest.raises(FailedPrecondition, match="split bundle"):
        Scheduler(coordinator, SchedulerConfig(policy="greedy"))


def test_a_joining_device_takes_sub_models_without_a_gap(devit_bundle) -> None:
    coordinator = Coordinator(ModelCatalog([devit_bundle]), CoordinatorConfig(heartbeat_interval_s=1.0))
    model = "digits-devit"

    def report_loaded(device_id: str) -> None:
        record = coordinator.registry.get(device_id)
        held = tuple(f"{r.bundle}/{r.part}" for r in coordinator.assignment_for(record).submodels)
        coordinator.heartbeat(device_id, LoadReport(0, 0, None, 0, record.generation, held))

    a, _ = coordinator.register(DeviceInfo("a", "127.0.0.1:1"))
    assert len(coordinator.assignment_for(a).submodels) == 4 and coordinator.holders(model) == {}
    report_loaded(a.device_id)
    assert {h.device_name for h in coordinator.holders(model).values()} == {"a"}
    b, first_b = coordinator.register(DeviceInfo("b", "127.0.0.1:2"))
    moving = {r.index for r in first_b.submodels}
    assert len(moving) == 2
    # Until b has loaded its share, a keeps serving all four.
    assert len(coordinator.assignment_for(coordinator.registry.get(a.device_id)).submodels) == 4
    assert {h.device_name for h in coordinator.holders(model).values()} == {"a"}
    report_loaded(b.device_id)
    coordinator._place()
    holders = coordinator.holders(model)
    assert {i for i, h in holders.items() if h.device_name == "b"} == moving and len(holders) == 4
    kept = {r.index for r in coordinator.assignment_for(coordinator.registry.get(a.device_id)).submodels}
    assert kept == set(range(4)) - moving, "a releases what b now serves"


def test_a_device_timeout_shorter_than_two_heartbeats_is_refused(split_catalog) -> None:
    coordinator = Coordinator(split_catalog, CoordinatorConfig(heartbeat_interval_s=2.0, device_timeout_s=3.0))
    with pytest.raises(InvalidInput, match="at least twice"):
        coordinator.check_timeouts()
    # A scheduler with short slots shortens the heartbeats, which makes the same timeout fine.
    Scheduler(coordinator, SchedulerConfig(policy="local", slot_s=0.5))
    coordinator.check_timeouts()

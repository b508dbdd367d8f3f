"""Placement by speed on the assignment alone: exact against brute force, few moves, replicas."""

from __future__ import annotations

import itertools
import random

import pytest

from coinfer.core.errors import InvalidInput
from coinfer.server.placement import device_times_ms, place_by_speed


def brute_force(work: dict, speeds: dict) -> float:
    """The smallest critical path over every assignment of sub-models to devices."""
    keys, devices = list(work), list(speeds)
    best = float("inf")
    for choice in itertools.product(devices, repeat=len(keys)):
        loads = dict.fromkeys(devices, 0.0)
        for key, device in zip(keys, choice):
            loads[device] += work[key]
        best = min(best, max(loads[d] / speeds[d] for d in devices))
    return best


def check_valid(plan, work: dict, speeds: dict) -> None:
    placed = [k for keys in plan.primaries.values() for k in keys]
    assert sorted(placed) == sorted(work), "every sub-model placed exactly once"
    assert set(plan.primaries) == set(speeds)
    times = device_times_ms(plan.primaries, work, speeds)
    assert plan.critical_path_ms == pytest.approx(max(times.values()))


@pytest.mark.parametrize("seed", range(40))
def test_the_optimum_equals_brute_force_on_small_fleets(seed: int) -> None:
    rng = random.Random(seed)
    work = {("m", i): rng.choice([1.0, 2.0, 3.5, rng.uniform(0.2, 5.0)]) for i in range(rng.randint(1, 6))}
    speeds = {f"d{j}": rng.choice([0.25, 0.5, 1.0, rng.uniform(0.1, 2.0)]) for j in range(rng.randint(1, 5))}
    plan = place_by_speed(work, speeds, tolerance=0.0)
    check_valid(plan, work, speeds)
    optimum = brute_force(work, speeds)
    assert plan.exact
    assert plan.optimal_critical_path_ms == pytest.approx(optimum)
    assert plan.critical_path_ms == pytest.approx(optimum)


def test_large_submodels_go_to_fast_devices() -> None:
    # A bundle sized for speeds 1,1,0.5,0.5 on a fleet of those speeds, registered slow ones first.
    work = {("m", 0): 10.0, ("m", 1): 10.0, ("m", 2): 5.0, ("m", 3): 5.0}
    speeds = {"slow-a": 0.5, "slow-b": 0.5, "fast-a": 1.0, "fast-b": 1.0}
    plan = place_by_speed(work, speeds)
    assert {plan.primaries["fast-a"], plan.primaries["fast-b"]} == {(("m", 0),), (("m", 1),)}
    assert plan.critical_path_ms == pytest.approx(10.0)
    # The worst mapping (slow devices holding the large ones) would take twice as long.
    worst = {"slow-a": (("m", 0),), "slow-b": (("m", 1),), "fast-a": (("m", 2),), "fast-b": (("m", 3),)}
    assert max(device_times_ms(worst, work, speeds).values()) == pytest.approx(20.0)


def test_a_good_enough_placement_is_kept_and_a_bad_one_moves_little() -> None:
    work = {("m", i): w for i, w in enumerate([10.0, 10.0, 5.0, 5.0])}
    speeds = {"a": 1.0, "b": 1.0, "c": 0.5, "d": 0.5}
    good = {"a": [("m", 1)], "b": [("m", 0)], "c": [("m", 3)], "d": [("m", 2)]}
    plan = place_by_speed(work, speeds, good)
    assert plan.moves == 0 and {d: list(k) for d, k in plan.primaries.items()} == good
    # Device a slows to a quarter: one sub-model must leave it, and only the swap needed happens.
    slowed = {**speeds, "a": 0.25}
    plan = place_by_speed(work, slowed, good)
    assert plan.critical_path_ms <= plan.optimal_critical_path_ms * 1.05 + 1e-9
    assert plan.moves <= 2
    assert brute_force(work, slowed) == pytest.approx(plan.optimal_critical_path_ms)


def test_within_tolerance_nothing_moves_but_beyond_it_does() -> None:
    work = {("m", 0): 10.0, ("m", 1): 10.0}
    current = {"a": [("m", 0)], "b": [("m", 1)], "c": []}
    speeds = {"a": 1.0, "b": 0.97, "c": 1.0}  # b is 3 % slower than c: within 5 %, kept
    assert place_by_speed(work, speeds, current).moves == 0
    speeds = {"a": 1.0, "b": 0.8, "c": 1.0}  # 25 % slower: the sub-model moves to c
    plan = place_by_speed(work, speeds, current)
    assert plan.moves == 1 and plan.primaries["c"] == (("m", 1),)


def test_spare_devices_hold_replicas_of_the_critical_path_first() -> None:
    work = {("m", 0): 8.0, ("m", 1): 2.0}
    speeds = {"a": 1.0, "b": 1.0, "c": 0.5, "d": 0.4}
    plan = place_by_speed(work, speeds)
    spares = [d for d, keys in plan.primaries.items() if not keys]
    assert sorted(spares) == ["c", "d"]
    assert all(len(plan.replicas[d]) == 1 for d in spares)
    assert plan.replicas["c"] == (("m", 0),)  # the faster spare backs up the slowest sub-model
    assert {k for d in spares for k in plan.replicas[d]} == {("m", 0), ("m", 1)}
    assert all(not plan.replicas[d] for d in ("a", "b"))


def test_sixteen_devices_and_sub_models_are_solved_exactly() -> None:
    rng = random.Random(7)
    work = {("m", i): rng.uniform(1.0, 10.0) for i in range(16)}
    speeds = {f"d{j}": rng.choice([0.25, 0.5, 1.0]) for j in range(16)}
    plan = place_by_speed(work, speeds)
    check_valid(plan, work, speeds)
    assert plan.exact
    # No device can beat the largest sub-model on the fastest device, and every device gets <= 2.
    assert plan.optimal_critical_path_ms >= max(work.values()) / max(speeds.values()) - 1e-9


def test_no_live_device_places_nothing_and_bad_speeds_are_refused() -> None:
    assert place_by_speed({("m", 0): 1.0}, {}).primaries == {}
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(InvalidInput, match="speed"):
            place_by_speed({("m", 0): 1.0}, {"a": bad})

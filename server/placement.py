"""Which live device runs which DeViT sub-model: by count, or by speed.

**By count** (`place_submodels`, ``coinfer serve --placement count``): placement is sticky: a
sub-model stays where it is while its device is live, so a device that dies costs only its own
sub-models (each then goes to the least-loaded live device, which downloads it), and a device
that joins takes sub-models from the most-loaded ones until every device holds within one of
every other. Ties go to the device registered first, so the result depends only on the inputs.

**By speed** (`place_by_speed`, the default): each sub-model has an expected compute time on a
device of speed 1 (its work), and a device of speed s runs the sub-models it holds in
work / s summed over them (they run side by side for every request). The critical path is
the largest such time over the devices. Two steps:

1. The smallest critical path C*, exactly: bisection on C over "can every sub-model be placed
   so that no device needs more than C?", each answered exactly by a dynamic programme over
   the subsets of sub-models (devices filled one after another, largest first; of two partial
   packings, the one on an earlier device, or on the same with less in it, leaves at least as
   much room for the rest), O(2^M M) for M sub-models. The bisection ends when the gap is
   below a millionth of C*, and the placement found is one that meets the upper end.
2. Among the placements within ``tolerance`` of C*, one that moves the fewest sub-models away
   from the devices holding them now: branch and bound (largest sub-models first, their current
   holders tried first, devices of equal speed and load tried once, pruned by the sub-models
   that have no holder and by a check that the rest can still fit). The current placement is
   therefore kept while it is within the tolerance, so noise in the speeds does not shuffle
   sub-models around. This search stops after ``node_limit`` nodes and keeps the best found
   (``fewest_moves`` then says False; the placement found still meets the tolerance).

Devices left without a sub-model (more devices than sub-models) each hold a replica of a
sub-model, those on the critical path first. Up to ``MAX_EXACT_SUBMODELS`` sub-models are placed
exactly (the fleets served have at most 16); beyond, the largest-first greedy placement is used.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Collection, Mapping, Sequence

import numpy as np

SubModelKey = tuple[str, int]
"""(DeViT model name, sub-model index)."""

DEFAULT_TOLERANCE = 0.05
"""A placement within 5 % of the optimal critical path is kept rather than moved."""
NODE_LIMIT = 20_000
"""Nodes the fewest-moves search may visit (about a second in the worst case seen)."""
MAX_EXACT_SUBMODELS = 18
"""Above this many sub-models the optimum is not searched (the subsets would not fit in memory)."""
BISECTION_GAP = 1e-6
_EPS = 1e-9


def place_submodels(
    submodels: Sequence[SubModelKey],
    current: Mapping[str, Sequence[SubModelKey]],
    live: Sequence[str],
) -> dict[str, tuple[SubModelKey, ...]]:
    """New holdings of every live device (in ``live`` order) given the current ones.

    ``submodels`` lists every sub-model to place; ``current`` maps device ids (live or not) to
    what they hold now. With no live device, nothing is placed.
    """
    wanted = list(dict.fromkeys(submodels))
    holdings: dict[str, list[SubModelKey]] = {device: [] for device in live}
    if not live:
        return {}
    placed: set[SubModelKey] = set()
    for device in live:
        for key in current.get(device, ()):
            if key in wanted and key not in placed:
                holdings[device].append(key)
                placed.add(key)
    rank = {device: i for i, device in enumerate(live)}

    def least_loaded() -> str:
        return min(live, key=lambda d: (len(holdings[d]), rank[d]))

    def most_loaded() -> str:
        return max(live, key=lambda d: (len(holdings[d]), -rank[d]))

    for key in wanted:
        if key not in placed:
            holdings[least_loaded()].append(key)
            placed.add(key)
    while True:
        high, low = most_loaded(), least_loaded()
        if len(holdings[high]) - len(holdings[low]) <= 1:
            break
        holdings[low].append(holdings[high].pop())
    order = {key: i for i, key in enumerate(wanted)}
    return {device: tuple(sorted(keys, key=order.__getitem__)) for device, keys in holdings.items()}


@dataclass(frozen=True)
class SpeedPlacement:
    """Where every sub-model goes, and what the critical path is expected to be."""

    primaries: dict[str, tuple[SubModelKey, ...]]
    """Device -> the sub-models it runs for the fan-out (every live device present)."""
    replicas: dict[str, tuple[SubModelKey, ...]]
    """Device -> copies it keeps for when a primary holder cannot answer (spare devices only)."""
    critical_path_ms: float
    """Largest expected time over the devices of the primaries they hold."""
    optimal_critical_path_ms: float
    """The smallest critical path any placement reaches."""
    moves: int
    """Sub-models placed on a device that does not hold them now."""
    exact: bool
    """True when ``optimal_critical_path_ms`` is the optimum (False beyond ``MAX_EXACT_SUBMODELS``)."""
    fewest_moves: bool = True
    """False when the fewest-moves search hit its node limit (the placement still meets the tolerance)."""


def device_times_ms(
    primaries: Mapping[str, Collection[SubModelKey]], work_ms: Mapping[SubModelKey, float], speeds: Mapping[str, float]
) -> dict[str, float]:
    """Expected time of each device for one request: the work of what it holds over its speed."""
    return {d: sum(work_ms[k] for k in keys) / speeds[d] for d, keys in primaries.items()}


def _check(work_ms: Mapping[SubModelKey, float], speeds: Mapping[str, float]) -> None:
    from coinfer.core.errors import InvalidInput

    for key, w in work_ms.items():
        if not (math.isfinite(w) and w >= 0):
            raise InvalidInput(f"sub-model {key}: expected work must be a finite number >= 0, got {w!r}")
    for device, s in speeds.items():
        if not (math.isfinite(s) and s > 0):
            raise InvalidInput(f"device {device!r}: speed must be a finite number > 0, got {s!r}")


def _makespan(work: Sequence[float], speeds: Sequence[float], assignment: Sequence[int]) -> float:
    loads = [0.0] * len(speeds)
    for w, d in zip(work, assignment):
        loads[d] += w
    return max(load / s for load, s in zip(loads, speeds))


def _greedy(work: Sequence[float], speeds: Sequence[float]) -> list[int]:
    """Each sub-model, largest first, onto the device that would finish it first."""
    loads = [0.0] * len(speeds)
    out = [0] * len(work)
    for j in sorted(range(len(work)), key=lambda j: -work[j]):
        d = min(range(len(speeds)), key=lambda i: ((loads[i] + work[j]) / speeds[i], i))
        loads[d] += work[j]
        out[j] = d
    return out


# Step 1: the optimal critical path --------------------------------------------------------


@functools.lru_cache(maxsize=4)
def _layers(m: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """For each subset size k = 1..m: the subsets (bit masks), the sub-models in each (k
    columns), and each subset without that sub-model."""
    masks = np.arange(1 << m, dtype=np.int64)
    bits = (masks[:, None] >> np.arange(m)) & 1
    size = bits.sum(axis=1)
    out = []
    for k in range(1, m + 1):
        chosen = masks[size == k]
        members = np.nonzero(bits[chosen])[1].reshape(len(chosen), k)
        out.append((chosen, members, chosen[:, None] ^ (np.int64(1) << members)))
    return out


def _pack(work: np.ndarray, room: np.ndarray) -> list[int] | None:
    """A device index per sub-model such that no device gets more than its ``room`` (sorted
    largest first), or None when there is none.

    Every placement can be written as a sequence that fills device 0, then device 1, ...; for
    each subset the programme keeps the best state such a sequence can reach — the device being
    filled and what it holds — where an earlier device, or the same with less in it, is better
    (it leaves at least as much room: the devices come largest first).
    """
    m, n = len(work), len(room)
    device = np.full(1 << m, n, dtype=np.int64)  # n = no sequence reaches this subset
    filled = np.zeros(1 << m)
    last = np.full(1 << m, -1, dtype=np.int64)
    device[0] = 0
    room_of = np.append(room * (1 + _EPS) + _EPS, -1.0)  # device n has no room
    scale = float(room.max()) + float(work.sum()) + 1.0
    for chosen, members, before in _layers(m):
        d, f = device[before], filled[before]
        w = work[members]
        stays = (d < n) & (f + w <= room_of[np.minimum(d, n)])
        moves_on = ~stays & (d < n) & (w <= room_of[np.minimum(d + 1, n)])
        new_device = np.where(stays, d, np.where(moves_on, d + 1, n))
        new_fill = np.where(stays, f + w, w)
        pick = np.argmin(new_device * scale + new_fill, axis=1)
        rows = np.arange(len(chosen))
        device[chosen] = new_device[rows, pick]
        filled[chosen] = new_fill[rows, pick]
        last[chosen] = members[rows, pick]
    mask = (1 << m) - 1
    if device[mask] >= n:
        return None
    out = [0] * m
    while mask:
        j = int(last[mask])
        out[j] = int(device[mask])
        mask ^= 1 << j
    return out


def optimal_assignment(work: Sequence[float], speeds: Sequence[float]) -> tuple[float, list[int], bool]:
    """(smallest critical path, a device index per sub-model reaching it, exact).

    Within ``BISECTION_GAP`` of the optimum when exact; the greedy placement beyond
    ``MAX_EXACT_SUBMODELS`` sub-models.
    """
    best = _greedy(work, speeds)
    high = _makespan(work, speeds, best)
    if not work or len(work) > MAX_EXACT_SUBMODELS:
        return high, best, not work
    order = sorted(range(len(speeds)), key=lambda d: (-speeds[d], d))
    rates = np.array([speeds[d] for d in order])
    w = np.asarray(work, dtype=float)
    low = max(float(w.max()) / float(rates.max()), float(w.sum()) / float(rates.sum()))
    trial = low
    while high - low > BISECTION_GAP * high:
        found = _pack(w, trial * rates)
        if found is None:
            low = trial
        else:
            best = [order[d] for d in found]
            high = _makespan(work, speeds, best)
        trial = (low + high) / 2
    return high, best, True


# Step 2: fewest moves within the tolerance ---------------------------------------------------


class _FewestMoves:
    """Branch and bound: placements whose critical path stays within a limit, fewest moves first."""

    def __init__(self, work: list[float], speeds: list[float], homes: list[set[int]], limit: float, node_limit: int) -> None:
        self.work, self.speeds, self.homes = work, speeds, homes
        self.limit = limit * (1 + _EPS) + _EPS
        self.n = len(speeds)
        self.homeless = [sum(1 for h in homes[j:] if not h) for j in range(len(homes) + 1)]
        self.loads = [0.0] * self.n
        self.assigned = [-1] * len(work)
        self.nodes, self.node_limit, self.exhausted = 0, node_limit, False

    def search(self, start: list[int]) -> tuple[int, list[int]]:
        """The placement with the fewest moves (``start``, which meets the limit, unless one
        with strictly fewer exists)."""
        self.best_moves = sum(1 for j, d in enumerate(start) if d not in self.homes[j])
        self.best = list(start)
        self._visit(0, 0)
        return self.best_moves, self.best

    def _fits(self, j: int) -> bool:
        """Whether jobs j.. (largest first) could still be placed within the limit: the k
        largest of them, each at least w, need k places that take w (a device with room r
        takes r // w of them), and their total must fit where such a sub-model fits at all."""
        room = [self.limit * s - load for s, load in zip(self.speeds, self.loads)]
        total = 0.0
        for k in range(j, len(self.work)):
            w = self.work[k]
            total += w
            places, space = 0, 0.0
            for r in room:
                if r >= w:
                    places += int(r // w) if w > 0 else len(self.work)
                    space += r
            if places < k - j + 1 or total > space:
                return False
        return True

    def _visit(self, j: int, moves: int) -> None:
        if moves + self.homeless[j] >= self.best_moves:
            return  # cannot beat the best: the sub-models with no holder left must all move
        self.nodes += 1
        if self.nodes > self.node_limit:
            self.exhausted = True
            return
        if j == len(self.work):
            self.best_moves, self.best = moves, list(self.assigned)
            return
        w, home = self.work[j], self.homes[j]
        by_finish = sorted(range(self.n), key=lambda d: ((self.loads[d] + w) / self.speeds[d], d))
        tried: set[tuple[float, float]] = set()
        for d in [d for d in by_finish if d in home] + [d for d in by_finish if d not in home]:
            if (self.loads[d] + w) / self.speeds[d] > self.limit:
                continue
            if d not in home:
                signature = (self.speeds[d], self.loads[d])
                if signature in tried:
                    continue  # an identical device in the same state: the same subtree
                tried.add(signature)
            self.loads[d] += w
            self.assigned[j] = d
            if self._fits(j + 1):
                self._visit(j + 1, moves + (d not in home))
            self.loads[d] -= w
            self.assigned[j] = -1
            if self.exhausted:
                return


def place_by_speed(
    work_ms: Mapping[SubModelKey, float],
    speeds: Mapping[str, float],
    current: Mapping[str, Collection[SubModelKey]] | None = None,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    node_limit: int = NODE_LIMIT,
) -> SpeedPlacement:
    """Place every sub-model of ``work_ms`` (its expected ms on a device of speed 1) on the live
    devices of ``speeds`` (id -> speed; their order breaks ties), minimising the critical path.

    ``current`` maps devices to the sub-models they hold now (as primaries or replicas): among
    placements within ``tolerance`` of the optimum the one moving the fewest of them is taken.
    With no live device nothing is placed.
    """
    _check(work_ms, speeds)
    current = current or {}
    devices = list(speeds)
    if not devices:
        return SpeedPlacement({}, {}, 0.0, 0.0, 0, True)
    index = {d: i for i, d in enumerate(devices)}
    order = {key: i for i, key in enumerate(work_ms)}
    jobs = sorted(work_ms, key=lambda k: (-work_ms[k], order[k]))
    work = [work_ms[k] for k in jobs]
    rates = [speeds[d] for d in devices]
    homes = [{index[d] for d, held in current.items() if d in index and key in held} for key in jobs]

    optimum, best, exact = optimal_assignment(work, rates)
    limit = optimum * (1 + tolerance)
    start = [min(h) if h else best[j] for j, h in enumerate(homes)]  # keeping things where they are
    if _makespan(work, rates, start) > limit * (1 + _EPS) + _EPS:
        start = best
    search = _FewestMoves(work, rates, homes, limit, node_limit)
    moves, chosen = search.search(start)

    primaries: dict[str, list[SubModelKey]] = {d: [] for d in devices}
    for j, d in enumerate(chosen):
        primaries[devices[d]].append(jobs[j])
    out = {d: tuple(sorted(keys, key=order.__getitem__)) for d, keys in primaries.items()}
    times = device_times_ms(out, work_ms, speeds)
    replicas = _replicas(out, times, work_ms, speeds, current, order)
    return SpeedPlacement(out, replicas, max(times.values()), optimum, moves, exact, not search.exhausted)


def _replicas(
    primaries: Mapping[str, tuple[SubModelKey, ...]],
    times: Mapping[str, float],
    work_ms: Mapping[SubModelKey, float],
    speeds: Mapping[str, float],
    current: Mapping[str, Collection[SubModelKey]],
    order: Mapping[SubModelKey, int],
) -> dict[str, tuple[SubModelKey, ...]]:
    """One replica per spare device: a spare keeps one it holds already, the others take the
    sub-models with the fewest replicas, those on the slowest devices (the critical path) first."""
    holder = {key: d for d, keys in primaries.items() for key in keys}
    ranked = sorted(holder, key=lambda k: (-times[holder[k]], -work_ms[k], order[k]))
    spares = sorted((d for d, keys in primaries.items() if not keys), key=lambda d: (-speeds[d], list(speeds).index(d)))
    count = {key: 0 for key in ranked}
    out: dict[str, tuple[SubModelKey, ...]] = {d: () for d in primaries}
    if not ranked:
        return out
    waiting = []
    for d in spares:
        kept = [k for k in ranked if k in current.get(d, ())]
        if kept:
            out[d] = (kept[0],)
            count[kept[0]] += 1
        else:
            waiting.append(d)
    for d in waiting:
        key = min(ranked, key=lambda k: (count[k], ranked.index(k)))
        out[d] = (key,)
        count[key] += 1
    return out

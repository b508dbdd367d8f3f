"""Per-device compute budgets for heterogeneous devices, balanced on measured latency.

DeViT gives every device the same sub-model. With relative speeds s_i (fastest = 1), device i
takes latency_i / s_i, and the ensemble waits for the slowest. Sizing MACs in proportion to
speed is not enough at batch 1: a small ViT's latency has a large fixed part (per-layer launch
overhead) that does not shrink with MACs. So the fastest devices get the base budget
(``macs_ratio`` of the teacher), and each slower device's budget is searched (bisection on a
log scale, starting from the MAC-proportional guess) for the largest sub-model whose measured
latency on this machine is at most s_i times the fastest devices' latency. Each candidate is
timed in alternation with the fastest device's architecture, so the ratio survives changes of
load on a shared machine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Callable, Sequence

from coinfer.core.errors import InvalidInput
from coinfer.core.models.vit import ViTConfig
from coinfer.server.dekd.latency import architecture_latency_ms, latency_ratio
from coinfer.server.dekd.prune import PrunePlan, UnitImportance, architecture_cost, plan_cost, plan_pruning


@dataclass(frozen=True)
class DeviceBudget:
    """The sub-model chosen for one device."""

    speed: float
    """Relative speed of the device (fastest = 1)."""
    macs_budget: float
    """MACs per image the plan was fitted to."""
    plan: PrunePlan
    """Teacher parts the sub-model keeps."""
    planned_latency_ms: float
    """Latency of the architecture on this machine when it was sized (0 when not measured)."""
    target_latency_ms: float
    """Latency it was sized to reach on this machine (0 for the fastest devices)."""


def size_submodels(
    teacher: ViTConfig,
    importances: Sequence[UnitImportance],
    speeds: Sequence[float],
    macs_ratio: float,
    latency_fn: Callable[[ViTConfig], float] | None = None,
    search_steps: int = 10,
    tolerance: float = 0.05,
) -> list[DeviceBudget]:
    """One budget and pruning plan per device (importances and speeds in device order).

    ``latency_fn(config) -> ms`` replaces measurement (tests use a latency model); by default
    latencies are measured on this machine, each candidate against the reference architecture.
    """
    if len(importances) != len(speeds):
        raise InvalidInput(f"{len(importances)} importance sets for {len(speeds)} devices")
    if not 0 < macs_ratio <= 1:
        raise InvalidInput(f"macs_ratio must be in (0, 1], got {macs_ratio!r}")
    if any(not (s > 0 and math.isfinite(s)) for s in speeds):
        raise InvalidInput(f"device speeds must be positive numbers, got {list(speeds)}")
    top = max(speeds)
    speeds = [s / top for s in speeds]
    base = macs_ratio * architecture_cost(teacher, "macs")
    plans = [plan_pruning(teacher, imp, base) for imp in importances]
    if all(abs(s - 1.0) < 1e-9 for s in speeds):
        return [DeviceBudget(1.0, base, p, 0.0, 0.0) for p in plans]

    fastest = [i for i, s in enumerate(speeds) if abs(s - 1.0) < 1e-9]
    reference_plan = plans[fastest[0]]
    if latency_fn is None:
        reference_ms = architecture_latency_ms(reference_plan.config(teacher, 0))

        def relative(plan: PrunePlan) -> float:
            return latency_ratio(plan.config(teacher, 0), reference_plan.config(teacher, 0))
    else:
        reference_ms = latency_fn(reference_plan.config(teacher, 0))

        def relative(plan: PrunePlan) -> float:
            return latency_fn(plan.config(teacher, 0)) / reference_ms

    out: list[DeviceBudget] = []
    for i, (speed, imp) in enumerate(zip(speeds, importances)):
        if i in fastest:
            out.append(DeviceBudget(1.0, base, plans[i], reference_ms, 0.0))
            continue
        found = _search(teacher, imp, speed, base, speed * (1 + tolerance), relative, search_steps)
        out.append(replace(found, planned_latency_ms=found.planned_latency_ms * reference_ms, target_latency_ms=speed * reference_ms))
    return out


def _search(teacher, importance, speed, base, limit, latency, steps) -> DeviceBudget:
    """Largest budget in (0, base] whose plan's relative latency is at most ``limit``
    (latencies here are fractions of the reference; the caller scales them to ms)."""
    floor = plan_cost(teacher, plan_pruning(teacher, importance, 1.0, depth=1), "macs")
    lo, hi = floor, base
    best: tuple[float, PrunePlan, float] | None = None
    guess = min(base, max(floor, speed * base))
    candidates = [guess]
    for _ in range(steps):
        budget = candidates.pop() if candidates else math.sqrt(lo * hi)
        plan = plan_pruning(teacher, importance, budget)
        lat = latency(plan)
        if lat <= limit:
            if best is None or budget > best[0]:
                best = (budget, plan, lat)
            lo = budget
        else:
            hi = budget
        if hi / lo < 1.02:
            break
    if best is None:
        # Even the smallest model is too slow for this device: use the smallest, the report shows the imbalance.
        plan = plan_pruning(teacher, importance, floor, depth=1)
        best = (floor, plan, latency(plan))
    return DeviceBudget(speed, best[0], best[1], best[2], speed)

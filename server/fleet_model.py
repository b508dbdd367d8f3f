"""What the coordinator expects of its fleet: each sub-model's work, each device's speed, and
whether the fleet still matches the speeds a bundle was sized for.

**Work.** A sub-model's work is its expected compute time in ms on a device of speed 1.0 (the
calibration's reference, docs/runtime.md). The bundle gives its shape: a fixed cost plus a cost
per MAC, fitted to the batch-1 latencies of ``report.json`` (what `coinfer decompose` measured
and balanced the sub-models with; a fit, because one noisy measurement must not make two equal
sub-models look different), else the MACs of each architecture at the reference's MAC rate. Real requests give the scale:
``scale`` is the median over every device's moving estimates of observed ms x the device's
speed / the work it holds, so expected times come out in the milliseconds the devices measure.

**Speed.** A device's effective speed is the speed it reported (calibrated or configured),
corrected by what its real requests took: the median over its sub-models of expected /
observed ms. Corrections within +-10 % are ignored (noise), and are clamped to [0.2, 5]. A
device that reported no speed counts as 1.0. Only devices that hold one sub-model of a model
are timed for it: a device holding several runs them side by side for every request, and how
much that slows each depends on more than its speed (devices sharing one machine's cores, as
on a test host, share their slowdown too), so counting them would let the placement feed on
its own choices.

**Fleet match.** A bundle sized for speeds s_i (the manifest's ``devit.device_speeds``) matches
the fleet when every sub-model's holder has, relative to the fastest holder, the speed the
sub-model was sized for, within 25 %, and there is a device for every sub-model.
"""

from __future__ import annotations

import json
import logging
import math
import statistics
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from coinfer.protos.v1 import LoadReport, SubModelTiming
from coinfer.server.placement import SubModelKey

log = logging.getLogger(__name__)

MACS_PER_MS_AT_SPEED_1 = 9.7e6
"""MACs per millisecond of a speed-1.0 device: the reference workload's 38.8 M MACs at 250 passes/s."""
MIN_TIMED_CALLS = 5
"""Calls a moving estimate needs before it counts."""
CORRECTION_DEAD_BAND = 0.10
CORRECTION_RANGE = (0.2, 5.0)
MATCH_TOLERANCE = 0.25


@dataclass(frozen=True)
class SubModelSize:
    """One sub-model as the bundle describes it."""

    key: SubModelKey
    work: float
    """Expected ms on a device of speed 1 before any request is timed."""
    macs: int
    sized_for_speed: float
    """Relative speed of the device the bundle sized it for (1.0 when it says nothing)."""


def bundle_sizes(model) -> list[SubModelSize]:
    """Sizes of a served DeViT model's sub-models (a `DeViTServing`), from its bundle."""
    bundle = model.bundle
    n = model.num_submodels
    macs = [_macs(bundle.part(part).config) for part in model.submodel_parts]
    speeds = _sized_for(bundle.metadata.get("devit", {}).get("device_speeds"), n)
    latency = _report_latencies(bundle.path / "report.json", n)
    work = _fit_latency(macs, latency) if latency is not None else None
    if work is None:
        work = [m / MACS_PER_MS_AT_SPEED_1 for m in macs]
    return [SubModelSize((model.name, i), work[i], macs[i], speeds[i]) for i in range(n)]


def _macs(config: Mapping) -> int:
    """MACs per image of a sub-model's architecture (built on the meta device: no memory, no time)."""
    import torch

    from coinfer.core.models import build_model

    with torch.device("meta"):
        module = build_model(config)
    return int(module.macs()) if hasattr(module, "macs") else 0


def _sized_for(raw: object, n: int) -> list[float]:
    if isinstance(raw, list) and len(raw) == n and all(isinstance(s, (int, float)) and math.isfinite(s) and s > 0 for s in raw):
        top = max(raw)
        return [float(s) / top for s in raw]
    if raw is not None:
        log.warning("ignoring the bundle's device_speeds %r: not %d positive numbers", raw, n)
    return [1.0] * n


def _fit_latency(macs: Sequence[int], latency: Sequence[float]) -> list[float] | None:
    """Latency = fixed + per-MAC x MACs, least squares; None when the fit is not physical (a
    negative part). All sub-models the same size: their mean latency."""
    x, y = np.asarray(macs, dtype=float), np.asarray(latency, dtype=float)
    if np.ptp(x) == 0:
        return [float(y.mean())] * len(x)
    per_mac, fixed = np.polyfit(x, y, 1)
    if per_mac <= 0 or fixed < 0:
        return None
    return [float(fixed + per_mac * m) for m in x]


def _report_latencies(path, n: int) -> list[float] | None:
    """The per-device batch-1 latencies of a DEKD report.json, or None when it has none for all n."""
    try:
        devices = json.loads(path.read_text())["ensemble"]["devices"]
        latency = [float(d["latency_ms"]) for d in devices]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if len(latency) != n or not all(math.isfinite(v) and v > 0 for v in latency):
        return None
    return latency


@dataclass(frozen=True)
class DeviceEstimate:
    """One live device as the placement sees it."""

    device_id: str
    reported_speed: float
    """What the device said (1.0 when it said nothing)."""
    effective_speed: float
    """reported x correction."""
    correction: float


@dataclass(frozen=True)
class FleetEstimate:
    """Work of every sub-model in ms and the devices' effective speeds."""

    work_ms: dict[SubModelKey, float]
    devices: dict[str, DeviceEstimate]
    scale: float
    """Observed ms per unit of the bundles' work (1.0 before any request was timed)."""

    @property
    def speeds(self) -> dict[str, float]:
        return {d: e.effective_speed for d, e in self.devices.items()}


@dataclass(frozen=True)
class LiveDevice:
    """What the estimate needs of one live device: its id, speed, primaries and last report."""

    device_id: str
    reported_speed: float | None
    primaries: tuple[SubModelKey, ...]
    load: LoadReport | None


def _timed(device: LiveDevice, sizes: Mapping[SubModelKey, SubModelSize]) -> list[tuple[SubModelTiming, float]]:
    """(timing, the sub-model's work) for each trustworthy estimate: enough calls, and the only
    sub-model of its model the device holds."""
    if device.load is None:
        return []
    out = []
    for t in device.load.submodel_timings:
        key = (t.model_name, t.index)
        if key not in sizes or key not in device.primaries or t.calls < MIN_TIMED_CALLS or not t.compute_ms > 0:
            continue
        if sum(1 for k in device.primaries if k[0] == t.model_name) == 1 and sizes[key].work > 0:
            out.append((t, sizes[key].work))
    return out


def estimate(devices: Sequence[LiveDevice], sizes: Mapping[SubModelKey, SubModelSize]) -> FleetEstimate:
    """Work in ms and effective speeds, from the bundles' sizes, reported speeds and timings."""
    reported = {d.device_id: d.reported_speed or 1.0 for d in devices}
    timed = {d.device_id: _timed(d, sizes) for d in devices}
    ratios = [t.compute_ms * reported[d] / held for d, pairs in timed.items() for t, held in pairs]
    scale = statistics.median(ratios) if ratios else 1.0
    estimates = {}
    for d in devices:
        correction = 1.0
        pairs = timed[d.device_id]
        if pairs:
            expected = [scale * held / reported[d.device_id] for _, held in pairs]
            observed = [t.compute_ms for t, _ in pairs]
            raw = statistics.median(e / o for e, o in zip(expected, observed))
            if abs(math.log(raw)) > math.log1p(CORRECTION_DEAD_BAND):
                correction = min(max(raw, CORRECTION_RANGE[0]), CORRECTION_RANGE[1])
        speed = reported[d.device_id]
        estimates[d.device_id] = DeviceEstimate(d.device_id, speed, speed * correction, correction)
    work = {key: size.work * scale for key, size in sizes.items()}
    return FleetEstimate(work, estimates, scale)


def fleet_mismatch(
    sized_for: Mapping[SubModelKey, float], holders: Mapping[SubModelKey, str], speeds: Mapping[str, float], names: Mapping[str, str]
) -> str:
    """Why the fleet no longer matches the speeds a model was sized for ("" when it matches).

    ``sized_for`` covers one model's sub-models, ``holders`` maps them to their primary device.
    """
    missing = [k for k in sized_for if k not in holders]
    distinct = {holders[k] for k in sized_for if k in holders}
    problems = []
    if missing or len(distinct) < len(sized_for):
        problems.append(f"{len(distinct)} device(s) hold its {len(sized_for)} sub-models")
    if distinct:
        top_live = max(speeds[d] for d in distinct)
        top_sized = max(sized_for.values())
        for key in sorted(k for k in sized_for if k in holders):
            live = speeds[holders[key]] / top_live
            sized = sized_for[key] / top_sized
            if abs(math.log(live / sized)) > math.log1p(MATCH_TOLERANCE):
                problems.append(f"sub-model {key[1]} sized for {sized:.2f} runs on {names.get(holders[key], holders[key])} at {live:.2f}")
    return "; ".join(problems)

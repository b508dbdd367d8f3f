"""Measure a split bundle's per-point cost on this machine, as a `coinfer.profile/1` device profile.

For every split point of the bundle the device half (head, encoder, codec; see
``coinfer.core.split_point.DeviceHalf``) runs on the bundle's own sample images, one at a time:

* latency: median of repeated batch-1 runs after warm-up, with a fixed number of threads;
* energy and power: the same work repeated for a measuring window bracketed by an energy meter
  (RAPL where readable, else the CPU power model; ``edge.energy``), divided by the runs;
* bytes: the exact payloads ``to_bytes`` produces for the sample images; ``uplink_bits`` is 8 x
  their mean (point 0: the raw uint8 image message; the last point: 0).

The result has the schema of the built-in paper tables, so the simulator and the scheduler take
it unchanged. Per-point details (p90, payload range, busy cores, energy source) go to ``extra``.
"""

from __future__ import annotations

import math
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from coinfer.core.errors import InvalidInput
from coinfer.core.profile import DeviceProfile, PointCost
from coinfer.edge.energy import CpuPowerModel, POWERCAP_ROOT, describe_meter, make_meter


@dataclass
class ProfileConfig:
    """How to profile a bundle."""

    threads: int = 1
    """Torch intra-op threads of the device side."""
    warmup: int = 5
    """Untimed runs before timing."""
    repeats: int = 30
    """Timed batch-1 runs per point (the latency is their median)."""
    energy_window_s: float = 0.5
    """Seconds of repeated runs over which energy is measured (at least ``repeats`` runs)."""
    power_model: CpuPowerModel | None = None
    """Power model used where no energy counter is readable (None = the default preset)."""
    energy: str = "auto"
    """"auto" (RAPL where readable), "measured" (RAPL or fail) or "modelled"."""
    powercap_root: Path = POWERCAP_ROOT
    """Where RAPL counters are looked for."""
    name: str | None = None
    """Profile name (default: "<host>-<backbone>")."""
    device: str | None = None
    """Device description (default: the CPU model and thread count)."""
    progress: bool = True
    """Show a progress bar."""


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def profile_bundle(bundle_path: str | Path, config: ProfileConfig | None = None) -> DeviceProfile:
    """Profile every point of a split bundle on this machine (hashes are verified first)."""
    import torch
    from tqdm.auto import tqdm

    from coinfer.core.bundle import load_bundle
    from coinfer.core.measure import measure_latency, torch_threads
    from coinfer.core.models import count_macs
    from coinfer.core.data import to_float
    from coinfer.core.split_point import MODEL_PART, DeviceHalf, load_samples, load_split_plan

    config = config or ProfileConfig()
    if isinstance(config.threads, bool) or not isinstance(config.threads, int) or config.threads < 1:
        raise InvalidInput(f"threads must be a positive integer, got {config.threads!r}")
    if config.repeats < 1 or config.warmup < 0 or not config.energy_window_s > 0:
        raise InvalidInput("repeats must be >= 1, warmup >= 0 and energy_window_s > 0")
    bundle = load_bundle(bundle_path)  # IntegrityError on any hash mismatch: nothing is measured
    plan = load_split_plan(bundle)
    images, _ = load_samples(bundle)
    if len(images) == 0:
        raise InvalidInput(f"{bundle.path}: the bundle carries no sample images to profile with")
    model = bundle.load_module(MODEL_PART)
    meter = make_meter(config.power_model, config.powercap_root, config.energy)  # type: ignore[arg-type]
    last = plan.points[-1].index
    costs, details = [], []
    bar = tqdm(plan.points, desc="profile", disable=not config.progress, leave=False)
    for point in bar:
        device = DeviceHalf.from_bundle(bundle, point.index, plan)
        # The untimed passes too run on the profiled thread count: torch's default pool is far
        # slower on cores other jobs keep busy, and autograd is never needed here.
        with torch_threads(config.threads), torch.inference_mode():
            sizes = np.array([sum(map(len, device(images[i : i + 1]))) for i in range(len(images))], dtype=np.int64)
        image = images[:1]
        stats = measure_latency(lambda: device(image), warmup=config.warmup, repeats=config.repeats,
                                threads=config.threads)
        # Energy over a window of back-to-back runs: one run is too short for any meter.
        runs = max(config.repeats, math.ceil(config.energy_window_s / max(stats.median_ms * 1e-3, 1e-6)))
        with torch_threads(config.threads), torch.inference_mode():
            meter.start()
            for i in range(runs):
                device(images[i % len(images)][None])
            reading = meter.stop()
        energy_j = reading.energy_j / runs
        if point.index == 0:
            feature_bits = 8 * int(np.prod(plan.input_shape))
            encoder_macs = 0
        elif point.index == last:
            feature_bits = 0
            encoder_macs = 0
        else:
            with torch_threads(config.threads), torch.inference_mode():
                feature = model.forward_head(to_float(image), point.index)
                encoder_macs = count_macs(device.modules[-1], feature)  # the encoder, after the head
            feature_bits = 32 * int(feature[0].numel())
        head_macs = model.head_macs(point.index) + encoder_macs
        uplink_bits = 0 if point.index == last else 8 * int(round(float(sizes.mean())))
        costs.append(PointCost(
            index=point.index, name=point.name, head_latency_s=stats.median_ms * 1e-3,
            head_power_w=reading.power_w, head_energy_j=energy_j, feature_bits=feature_bits,
            uplink_bits=uplink_bits, head_macs=int(head_macs),
        ))
        details.append({
            "index": point.index, "energy_source": reading.energy_source,
            "latency_p90_ms": round(stats.p90_ms, 4), "latency_min_ms": round(stats.min_ms, 4),
            "latency_runs": stats.runs, "energy_runs": runs, "energy_window_s": round(reading.wall_s, 4),
            "busy_cores": round(reading.busy_cores, 3), "payload_bytes_mean": float(sizes.mean()),
            "payload_bytes_min": int(sizes.min()), "payload_bytes_max": int(sizes.max()),
            "bits": point.codec_bits, "compress": point.codec_compress, "encoder_macs": int(encoder_macs),
        })
    bar.close()
    source = describe_meter(meter)
    host = platform.node() or "host"
    return DeviceProfile(
        name=config.name or f"{host}-{plan.backbone}",
        backbone=plan.backbone,
        device=config.device or f"{_cpu_name()}, {config.threads} thread(s)",
        energy_source=source["energy_source"],
        points=tuple(costs),
        raw_input_bytes=int(np.prod(plan.input_shape)),
        notes=f"Measured by `coinfer profile` on {time.strftime('%Y-%m-%d')} from bundle {bundle.name} "
        f"({plan.dataset}); latency = median batch-1 device side (head, encoder, codec); energy is "
        f"{source['energy_source']}.",
        extra={"bundle": str(bundle.path), "dataset": plan.dataset, "threads": config.threads,
               "samples": len(images), "energy": source, "points": details},
    )

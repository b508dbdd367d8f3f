"""How fast this device computes: a fixed reference workload, timed for about a second.

The reference workload (``REFERENCE``) is a small head-less ViT at batch 1 — the kind of work a
DeViT sub-model is — with fixed weights and a fixed input, run in the torch threads the daemon
serves with. Its speed is the number of forward passes per second over ``REFERENCE_PASSES_PER_S``,
what one core of the development machine did with one thread (docs/runtime.md, "Device speed"):
1.0 runs as fast as that core, 0.5 half as fast. The passes are counted over a fixed wall time,
not a fixed count, so a slow device calibrates no longer than a fast one: five bursts of a fifth
of it, and the median burst's rate is the speed, so that a moment when something else took the
CPU does not decide it. A burst lasts 200 ms for the default second, many periods of a CPU
quota (10 ms on the testbed), so a quota shows as the fraction of each period it allows.

    python -m coinfer.edge.calibration [--seconds 1] [--threads N] [--json]

runs it once and prints the result (the testbed's CPU-quota test runs it inside a cgroup).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import time
from dataclasses import asdict

from coinfer.core.errors import InvalidInput
from coinfer.protos.v1 import DeviceSpeed, check_speed

REFERENCE = "coinfer-vit-ref/1"
"""Name and version of the reference workload; a change to it or to the figure below gets a new version."""

REFERENCE_PASSES_PER_S = 250.0
"""Forward passes per second of the reference workload on one core of the development machine
(AMD EPYC, one torch thread; 242 to 256 per second of CPU time it got): the speed 1.0."""

DEFAULT_SECONDS = 1.0
BURSTS = 5
WARMUP_PASSES = 3


def reference_model():
    """The reference workload: a head-less ViT, 32 x 32 RGB input, 64 patches, width 128, 4 blocks."""
    import torch

    from coinfer.core.models.vit import ViTConfig, VisionTransformer

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = VisionTransformer(
            ViTConfig(image_size=32, in_chans=3, patch_size=4, embed_dim=128, depth=4, num_heads=4, mlp_ratio=2.0, num_classes=0)
        ).eval()
        image = torch.rand(1, 3, 32, 32)
    return model, image


def cpu_model() -> str:
    """The CPU's name as the operating system gives it ("" when it does not)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def calibrate(seconds: float = DEFAULT_SECONDS) -> DeviceSpeed:
    """Run the reference workload for ``seconds`` in torch's current threads; the measured speed."""
    import torch

    if not (math.isfinite(seconds) and 0.05 <= seconds <= 60):
        raise InvalidInput(f"calibration time must be between 0.05 and 60 s, got {seconds!r}")
    model, image = reference_model()
    started = time.perf_counter()
    rates = []
    with torch.inference_mode():
        for _ in range(WARMUP_PASSES):
            model(image)
        for _ in range(BURSTS):
            timed = time.perf_counter()
            passes = 0
            while True:
                model(image)
                passes += 1
                elapsed = time.perf_counter() - timed
                if elapsed >= seconds / BURSTS:
                    break
            rates.append(passes / elapsed)
    speed = DeviceSpeed(
        relative_speed=statistics.median(rates) / REFERENCE_PASSES_PER_S,
        source="calibrated",
        reference=REFERENCE,
        calibration_ms=(time.perf_counter() - started) * 1e3,
        cpu_model=cpu_model(),
        threads=torch.get_num_threads(),
    )
    return check_speed(speed, "the calibration")


def configured(relative_speed: float) -> DeviceSpeed:
    """The speed an owner gives (`coinfer edge --speed`), checked like a measured one."""
    import torch

    return check_speed(
        DeviceSpeed(relative_speed=relative_speed, source="configured", reference=REFERENCE, cpu_model=cpu_model(),
                    threads=torch.get_num_threads()),
        "--speed",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m coinfer.edge.calibration", description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=DEFAULT_SECONDS, help="how long to time the workload (default 1 s)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    import torch

    if args.threads < 1:
        print("calibration: --threads must be at least 1", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    speed = calibrate(args.seconds)
    if args.json:
        print(json.dumps(asdict(speed)))
    else:
        print(f"speed {speed.relative_speed:.3f} x {speed.reference} ({speed.threads} thread(s), {speed.cpu_model}, "
              f"{speed.calibration_ms:.0f} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

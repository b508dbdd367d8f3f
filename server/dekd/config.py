"""Settings of a DEKD run, and the preset of each named budget the CLI and the benchmark use."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from coinfer.core.errors import InvalidInput
from coinfer.core.training import TrainConfig
from coinfer.server.dekd.baseline import BaselineConfig
from coinfer.server.dekd.distill import DistillConfig
from coinfer.server.dekd.ensemble import EnsembleConfig
from coinfer.server.dekd.partition import PARTITION_METHODS
from coinfer.server.dekd.recipes import BUDGET_NAMES, stage_loops


@dataclass
class DecomposeConfig:
    """Everything ``coinfer decompose`` decides, except the teacher and the data."""

    num_devices: int = 4
    """N, the number of devices (and sub-models)."""
    partition: str = "affinity"
    """Class partition: "affinity" (confusable classes together) or "random" (DeViT's)."""
    device_speeds: tuple[float, ...] | None = None
    """Relative speed of each device; None means identical devices."""
    macs_ratio: float = 0.12
    """MACs of the fastest devices' sub-models as a fraction of the teacher's (0.12: teacher 8.3x larger)."""
    affinity_embedding_weight: float = 0.5
    """Share of CLS-embedding similarity (vs teacher confusion) in the class affinity."""
    importance_samples: int = 1024
    """Training images of a group used to rank its units for pruning."""
    fusion_init_samples: int = 8192
    """Training images used for the closed-form start of the fusion head (0 starts it at random, as DeViT)."""
    distill: DistillConfig = field(default_factory=DistillConfig)
    """Sub-task distillation of each sub-model on its group."""
    ensemble: EnsembleConfig = field(default_factory=EnsembleConfig)
    """Joint training of sub-models and fusion on all data."""
    baseline: BaselineConfig | None = field(default_factory=BaselineConfig)
    """The single-student baseline; None skips it (its report entry is then null)."""
    reference: TrainConfig | None = None
    """The recipe of the reference CNN trained beside the teacher (None skips it)."""
    online_teacher: bool = True
    """Run the teacher on every training batch of every stage, which may then augment its images as
    its loop says; False: the teacher's outputs are computed once per image and the images train
    as they are (cheaper, no augmentation)."""
    budget: str | None = None
    """The named budget the stages' recipe was built from (recorded in the report)."""
    device: str = "cpu"
    """Where importance scoring, the teacher's targets and every training stage run ('cpu', 'cuda',
    'auto'); it replaces the stage loops' own device. Evaluation, latency and the bundle are on the CPU."""
    latency_rounds: int = 5
    """Interleaved timing rounds per model."""
    latency_repeats: int = 20
    """Timed runs per model and round (after warm-up)."""
    target_batch_size: int = 256
    """Images per teacher forward pass when computing targets."""
    seed: int = 0
    """Seeds the random partition, dropout masks and shuffling."""
    progress: bool = True
    """Progress bars and one line per epoch."""

    def __post_init__(self) -> None:
        if self.partition not in PARTITION_METHODS:
            raise InvalidInput(f"partition must be one of {', '.join(PARTITION_METHODS)}, got {self.partition!r}")
        if isinstance(self.num_devices, bool) or not isinstance(self.num_devices, int) or self.num_devices < 2:
            raise InvalidInput(f"the number of devices must be an integer >= 2, got {self.num_devices!r}")
        if self.device_speeds is not None:
            speeds = tuple(self.device_speeds)
            if len(speeds) != self.num_devices:
                raise InvalidInput(f"{len(speeds)} device speeds for {self.num_devices} devices")
            if any(isinstance(s, bool) or not isinstance(s, (int, float)) or not math.isfinite(s) or s <= 0 for s in speeds):
                raise InvalidInput(f"device speeds must be positive numbers, got {list(speeds)}")
            self.device_speeds = speeds
        if not 0 < self.macs_ratio <= 1:
            raise InvalidInput(f"macs_ratio must be in (0, 1], got {self.macs_ratio!r}")
        if self.importance_samples < 1:
            raise InvalidInput(f"importance_samples must be >= 1, got {self.importance_samples!r}")

    def speeds(self) -> list[float]:
        """Speeds normalised to a maximum of 1."""
        if self.device_speeds is None:
            return [1.0] * self.num_devices
        top = max(self.device_speeds)
        return [s / top for s in self.device_speeds]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def preset(
    budget: str = "default",
    num_devices: int = 4,
    partition: str = "affinity",
    device_speeds: tuple[float, ...] | None = None,
    seed: int = 0,
    progress: bool = True,
    baseline: bool = True,
    baseline_init: str = "scratch",
    hflip: bool = False,
    device: str = "cpu",
    reference: TrainConfig | None = None,
) -> DecomposeConfig:
    """The recipe of ``coinfer decompose --budget`` (:mod:`coinfer.server.dekd.recipes`): every
    stage's budget named ``budget`` and resolved from its data, augmentation alike everywhere
    (``hflip`` where the data allows mirroring), the teacher run on every batch.

    ``quick`` also measures latency with fewer rounds and ranks units on fewer images (the demo
    path); ``reference`` is the recipe of the reference CNN (None skips it).
    """
    if budget not in BUDGET_NAMES:
        raise InvalidInput(f"unknown budget {budget!r}; valid: {', '.join(BUDGET_NAMES)}")
    quick = budget == "quick"
    batch, samples, rounds, repeats = (64, 512, 3, 10) if quick else (128, 1024, 15, 30)
    distill, ensemble, student = stage_loops(budget, hflip, batch, seed, progress, device)
    return DecomposeConfig(
        num_devices=num_devices,
        partition=partition,
        device_speeds=device_speeds,
        importance_samples=samples,
        distill=DistillConfig(loop=distill),
        ensemble=EnsembleConfig(loop=ensemble),
        baseline=BaselineConfig(loop=student, init=baseline_init) if baseline else None,
        reference=reference,
        latency_rounds=rounds,
        latency_repeats=repeats,
        seed=seed,
        progress=progress,
        budget=budget,
        device=device,
    )

"""``report.json`` of a decomposition: the figures benchmarks and reviewers read.

Accuracies are top-1 on the held-out test split, in [0, 1]. Every latency is batch 1, one
thread, warm-up then the median of repeated runs, on the machine that ran the decomposition;
a device of relative speed s is taken to need latency / s (the fastest device = this machine).
Network transfer is not included: each device sends ``payload_bytes`` once per image.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

SCHEMA = "coinfer.dekd-report/1"


@dataclass
class TeacherFigures:
    """The model being decomposed."""

    accuracy: float
    """Top-1 on the test split."""
    params: int
    """Parameter count."""
    macs: int
    """Multiply-accumulates per image."""
    latency_ms: float
    """Batch-1, one-thread latency on this machine."""


@dataclass
class DeviceFigures:
    """One device's sub-model."""

    device: int
    """Device index (bundle part ``device-{i}``)."""
    classes: list[int]
    """Class ids the sub-model specialised in."""
    params: int
    """Parameter count of the deployed (head-less) sub-model."""
    macs: int
    """Multiply-accumulates per image."""
    latency_ms: float
    """Measured on this machine."""
    payload_bytes: int
    """Bytes of the encoded CLS feature the device sends per image."""
    speed: float
    """Relative speed of the device (fastest = 1)."""
    scaled_latency_ms: float
    """latency_ms / speed: the device's own latency."""
    depth: int
    """Transformer blocks kept."""
    heads: list[int]
    """Attention heads kept per block."""
    mlp_hidden: list[int]
    """MLP neurons kept per block."""
    group_accuracy: float
    """Accuracy of the sub-model on its own classes (test images of those classes) after sub-task distillation."""


@dataclass
class EnsembleFigures:
    """The N sub-models with the fusion head."""

    accuracy: float
    """Top-1 on the test split with every device present."""
    accuracy_missing_one: list[float]
    """Accuracy with device i marked missing, one entry per device."""
    latency_ms: float
    """Critical path: the slowest device's scaled latency plus the fusion head's."""
    fusion_latency_ms: float
    """Batch-1 latency of the fusion head."""
    params: int
    """All sub-models plus the fusion head."""
    latency_balance: float
    """Slowest over fastest scaled device latency (1 = perfectly balanced)."""
    devices: list[DeviceFigures] = field(default_factory=list)


@dataclass
class StudentFigures:
    """The single compact ViT of the same total parameters, trained with vanilla KD."""

    accuracy: float
    """Top-1 on the test split."""
    params: int
    """Parameter count (the ensemble's, within a few hundred)."""
    macs: int
    """Multiply-accumulates per image."""
    latency_ms: float
    """Batch-1, one-thread latency on this machine."""
    init: str = "scratch"
    """"scratch" (a fresh dense compact ViT) or "pruned" (the teacher pruned to the budget)."""


@dataclass
class ReferenceFigures:
    """A plain small CNN trained with the teacher's recipe: a teacher below it is a weak teacher."""

    arch: str
    """Architecture name (``coinfer.core.models``)."""
    width_mult: float
    """Channel width multiplier."""
    accuracy: float
    """Top-1 on the test split."""
    params: int
    """Parameter count."""
    macs: int
    """Multiply-accumulates per image."""
    latency_ms: float
    """Batch-1, one-thread latency on this machine."""


@dataclass
class DEKDReport:
    """Everything one ``coinfer decompose`` run measured."""

    dataset: str
    """Dataset name."""
    num_classes: int
    """Classes of the task."""
    devices: int
    """N, the number of devices."""
    partition: list[list[int]]
    """Class ids of each device, in device order."""
    partition_method: str
    """"affinity" or "random"."""
    class_names: list[str]
    """Names of the class ids."""
    teacher: TeacherFigures
    """The teacher's figures."""
    ensemble: EnsembleFigures
    """The DeViT ensemble's figures."""
    single_student: StudentFigures | None
    """None when the run skipped the baseline."""
    speedup: float
    """teacher.latency_ms / ensemble.latency_ms."""
    within_group_affinity: float
    """Sum of the teacher's class affinities inside groups (higher: confusable classes kept together)."""
    stage_seconds: dict[str, float] = field(default_factory=dict)
    """Wall time of each pipeline stage."""
    config: dict[str, Any] = field(default_factory=dict)
    """The settings of the run."""
    reference: ReferenceFigures | None = None
    """The reference CNN; None when the run skipped it."""
    recipe: dict[str, Any] = field(default_factory=dict)
    """What trained and why: the budget, the training images, the device and processes, the
    teacher's recipe when known, and per stage the steps the budget resolved to from the data
    (``why``), the steps taken, the samples seen and where early stopping ended it."""
    schema: str = SCHEMA
    """Report format identifier."""

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict."""
        return asdict(self)

    def to_json(self) -> str:
        """What ``report.json`` holds."""
        return json.dumps(self.to_dict(), indent=2) + "\n"

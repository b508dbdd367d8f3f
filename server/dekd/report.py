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
    params: int
    macs: int
    """Multiply-accumulates per image."""
    latency_ms: float


@dataclass
class DeviceFigures:
    """One device's sub-model."""

    device: int
    classes: list[int]
    """Class ids the sub-model specialised in."""
    params: int
    macs: int
    latency_ms: float
    """Measured on this machine."""
    payload_bytes: int
    """Bytes of the encoded CLS feature the device sends per image."""
    speed: float
    """Relative speed of the device (fastest = 1)."""
    scaled_latency_ms: float
    """latency_ms / speed: the device's own latency."""
    depth: int
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
    accuracy_missing_one: list[float]
    """Accuracy with device i marked missing, one entry per device."""
    latency_ms: float
    """Critical path: the slowest device's scaled latency plus the fusion head's."""
    fusion_latency_ms: float
    params: int
    """All sub-models plus the fusion head."""
    latency_balance: float
    """Slowest over fastest scaled device latency (1 = perfectly balanced)."""
    devices: list[DeviceFigures] = field(default_factory=list)


@dataclass
class StudentFigures:
    """The single compact ViT of the same total parameters, trained with vanilla KD."""

    accuracy: float
    params: int
    macs: int
    latency_ms: float
    init: str = "scratch"
    """"scratch" (a fresh dense compact ViT) or "pruned" (the teacher pruned to the budget)."""


@dataclass
class DEKDReport:
    """Everything one ``coinfer decompose`` run measured."""

    dataset: str
    num_classes: int
    devices: int
    partition: list[list[int]]
    """Class ids of each device, in device order."""
    partition_method: str
    class_names: list[str]
    teacher: TeacherFigures
    ensemble: EnsembleFigures
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
    schema: str = SCHEMA

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

"""`report.json` of a split bundle: accuracy, bytes on the wire and cost of every split point.

Fields required by the issue: ``backbone``, ``dataset``, ``backbone_accuracy``,
``raw_input_bytes`` and ``points`` with ``index``, ``name``, ``accuracy``,
``feature_fp32_bytes``, ``payload_bytes``, ``compression`` (feature_fp32_bytes /
payload_bytes), ``head_macs`` and ``head_latency_ms``; the rest says how each point was made.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

REPORT_SCHEMA = "coinfer.split-report/1"


@dataclass
class CandidateReport:
    """One bottleneck tried at a point (``coinfer split --bottleneck auto`` tries both designs)."""

    design: str
    """"paper" or "ours"."""
    latent_shape: list[int]
    """Shape of one image's latent."""
    val_accuracy: float
    """Accuracy on the validation split through the codec (what chose the design)."""
    test_accuracy: float
    """Accuracy on the test split through the codec."""
    payload_bytes: float
    """Mean wire bytes per image on the test split."""
    train_seconds: float
    """Wall time spent training it."""


@dataclass
class PointReport:
    """One split point: what it costs the device and the network, and what accuracy it keeps."""

    index: int
    name: str
    accuracy: float
    """Top-1 accuracy on the test split with this point's head, codec round trip and tail."""
    feature_fp32_bytes: int
    """One image's feature at the point as float32 (the float input at point 0, the logits at the last)."""
    payload_bytes: float
    """Mean bytes one image puts on the wire (codec message: header, scale, zero point, codes); 0 at the last point."""
    compression: float | None
    """feature_fp32_bytes / payload_bytes; null at the last point, which sends nothing."""
    head_macs: int
    """Multiply-accumulates the device runs for one image (head plus encoder)."""
    head_latency_ms: float
    """Median batch-1 time of the device side (head, encoder, codec) on the machine that trained it."""
    payload_bytes_min: int = 0
    payload_bytes_max: int = 0
    design: str | None = None
    """Bottleneck design used ("paper" / "ours"); null at points 0 and 5."""
    bits: int = 0
    """Codec bits of the latent (0 = not quantised)."""
    latent_shape: list[int] | None = None
    candidates: list[CandidateReport] = field(default_factory=list)


@dataclass
class SplitReport:
    """Everything `coinfer split` measured; written as BUNDLE/report.json."""

    backbone: str
    dataset: str
    backbone_accuracy: float
    """Test accuracy of the unsplit backbone."""
    raw_input_bytes: int
    """One uint8 input image (C x H x W bytes)."""
    points: list[PointReport]
    backbone_config: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    """The run's settings (bits, compression target, training budgets, seed)."""
    timings_s: dict[str, float] = field(default_factory=dict)
    """Wall time of each phase."""
    schema: str = REPORT_SCHEMA

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    def table(self) -> str:
        """A plain-text table of the points, for the console."""
        lines = [
            f"{self.backbone} on {self.dataset}: backbone accuracy {100 * self.backbone_accuracy:.2f}%, "
            f"raw input {self.raw_input_bytes} B",
            f"{'pt':>2} {'name':<14} {'design':<6} {'bits':>4} {'acc %':>7} {'fp32 B':>8} {'wire B':>8} "
            f"{'x':>7} {'MMAC':>7} {'ms':>7}",
        ]
        for p in self.points:
            comp = f"{p.compression:.1f}" if p.compression is not None else "-"
            lines.append(
                f"{p.index:>2} {p.name:<14} {p.design or '-':<6} {p.bits:>4} {100 * p.accuracy:>7.2f} "
                f"{p.feature_fp32_bytes:>8} {p.payload_bytes:>8.1f} {comp:>7} {p.head_macs / 1e6:>7.2f} "
                f"{p.head_latency_ms:>7.3f}"
            )
        return "\n".join(lines)

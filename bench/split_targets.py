"""The split benchmark's targets, computed from its rows (one row = bottleneck x bit width).

* Compression target: intermediate points that have a row with compression >= 64 whose
  accuracy is at most 1 pt below the backbone's (the issue asks for at least two).
* Equal payload: at a point, for every row of the paper's bottleneck, our bottleneck's best
  accuracy with a payload no larger (within 5%, so zlib's per-image wobble does not decide) is
  compared with the paper's; the point is ours when we win more of these comparisons than we
  lose (the issue asks for three of the four points).
"""

from __future__ import annotations

from dataclasses import dataclass

PAYLOAD_TOLERANCE = 0.05
"""Relative payload slack that still counts as "equal payload"."""


@dataclass(frozen=True)
class Row:
    """One bottleneck at one bit width at one point, measured on the test split."""

    point: int
    name: str
    design: str
    reduction: float
    """Element reduction the bottleneck was sized for (feature elements / latent elements)."""
    latent_shape: tuple[int, ...]
    bits: int
    accuracy: float
    payload_bytes: float
    """Mean wire bytes per image."""
    compression: float
    """feature_fp32_bytes / payload_bytes."""
    train_s: float = 0.0


@dataclass(frozen=True)
class CompressionTarget:
    """Best row with compression >= the target at each point, and whether it keeps accuracy."""

    min_compression: float
    max_drop: float
    """Accuracy drop allowed, as a fraction (0.01 = 1 pt)."""
    best_per_point: dict[int, Row | None]
    """Per point: the most accurate row with compression >= min_compression (None if there is none)."""
    points_met: list[int]
    """Points whose best row is within max_drop of the backbone."""


def compression_target(rows: list[Row], backbone_accuracy: float, min_compression: float = 64.0,
                       max_drop: float = 0.01) -> CompressionTarget:
    """See the module docstring."""
    best: dict[int, Row | None] = {}
    for point in sorted({r.point for r in rows}):
        eligible = [r for r in rows if r.point == point and r.compression >= min_compression]
        best[point] = max(eligible, key=lambda r: (r.accuracy, r.compression)) if eligible else None
    # A tiny epsilon keeps "exactly 1.00 pt below" on the passing side despite float rounding.
    met = [p for p, r in best.items() if r is not None and r.accuracy >= backbone_accuracy - max_drop - 1e-9]
    return CompressionTarget(min_compression, max_drop, best, met)


@dataclass(frozen=True)
class EqualPayloadPoint:
    """Our bottleneck against the paper's at one point."""

    point: int
    wins: int
    losses: int
    ties: int
    mean_gap_pt: float | None
    """Mean (ours - paper) accuracy over the comparisons, in points; None without comparisons."""

    @property
    def ours_better(self) -> bool:
        return self.wins > self.losses


def equal_payload(rows: list[Row], tolerance: float = PAYLOAD_TOLERANCE) -> list[EqualPayloadPoint]:
    """Per point, compare every "paper" row with the best "ours" row of no larger payload."""
    out = []
    for point in sorted({r.point for r in rows}):
        paper = [r for r in rows if r.point == point and r.design == "paper"]
        ours = [r for r in rows if r.point == point and r.design == "ours"]
        wins = losses = ties = 0
        gaps = []
        for ref in paper:
            budget = ref.payload_bytes * (1 + tolerance)
            affordable = [r.accuracy for r in ours if r.payload_bytes <= budget]
            # With nothing of ours that small, the paper's design wins this comparison.
            mine = max(affordable) if affordable else None
            if mine is None or mine < ref.accuracy:
                losses += 1
            elif mine > ref.accuracy:
                wins += 1
            else:
                ties += 1
            if mine is not None:
                gaps.append(100 * (mine - ref.accuracy))
        out.append(EqualPayloadPoint(point, wins, losses, ties, sum(gaps) / len(gaps) if gaps else None))
    return out

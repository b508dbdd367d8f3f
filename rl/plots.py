"""Plots of learning curves and sweeps (matplotlib, written to PNG)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def mean_and_spread(runs: list[list[tuple[int, float]]]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Steps, mean, min and max over runs, on the steps of the shortest run."""
    length = min(len(r) for r in runs)
    steps = np.array([s for s, _ in runs[0][:length]])
    values = np.array([[v for _, v in r[:length]] for r in runs])
    return steps, values.mean(axis=0), values.min(axis=0), values.max(axis=0)


def plot_learning_curve(
    curves: dict[str, list[list[tuple[int, float]]]],
    path: Path,
    title: str,
    baselines: dict[str, float] | None = None,
    bands: dict[str, list[list[tuple[int, float, float]]]] | None = None,
    ylabel: str = "held-out mean reward",
) -> None:
    """Evaluation reward against environment steps, per algorithm.

    Several runs: their mean and the min-max band over runs. One run: its curve and, if
    ``bands`` has it, its 95 % interval at every point.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    shown: list[float] = []
    for name, runs in curves.items():
        runs = [r for r in runs if r]
        if not runs:
            continue
        steps, mean, low, high = mean_and_spread(runs)
        label = f"{name} (mean of {len(runs)} seeds, min-max band)" if len(runs) > 1 else name
        one_band = [b for b in (bands or {}).get(name, []) if b]
        if len(runs) == 1 and one_band:
            points = one_band[0][: len(steps)]
            low, high = np.array([b[1] for b in points]), np.array([b[2] for b in points])
            label = f"{name} (95% interval band)"
        ax.plot(steps, mean, label=label)
        if len(runs) > 1 or one_band:
            ax.fill_between(steps[: len(low)], low, high, alpha=0.25)
        shown += [float(np.nanmin(low)), float(np.nanmax(high))]
    # A baseline far below every curve (greedy, offload) would squash the curves into one line:
    # it is named in the corner instead of drawn.
    floor = min(shown) - 2 * (max(shown) - min(shown) or 1.0) if shown else -np.inf
    off_axis = []
    for name, value in (baselines or {}).items():
        if value < floor:
            off_axis.append(f"{name} {value:.2f}")
            continue
        ax.axhline(value, linestyle="--", linewidth=0.9, color="grey")
        ax.annotate(name, (0.01, value), xycoords=("axes fraction", "data"), fontsize=7, color="dimgrey", va="bottom")
    if off_axis:
        ax.annotate("below the axis: " + ", ".join(off_axis), (0.01, 0.02), xycoords="axes fraction", fontsize=7, color="dimgrey")
    ax.set_xlabel("environment steps")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)

"""Rate-accuracy plots: payload bytes against accuracy, one curve per bottleneck and bit width."""

from __future__ import annotations

from pathlib import Path

from coinfer.bench.split_targets import Row

_STYLE = {"paper": ("tab:blue", "--", "o"), "ours": ("tab:red", "-", "s")}
_ALPHA = {8: 1.0, 4: 0.7, 2: 0.45}


def rate_accuracy_png(path: str | Path, backbone: str, dataset: str, rows: list[Row], backbone_accuracy: float,
                      point_fp32_bytes: dict[int, int], min_compression: float = 64.0) -> Path:
    """One panel per split point; writes ``path`` and returns it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = sorted({r.point for r in rows})
    fig, axes = plt.subplots(1, len(points), figsize=(4.2 * len(points), 3.8), squeeze=False)
    for ax, point in zip(axes[0], points):
        here = [r for r in rows if r.point == point]
        for design in ("paper", "ours"):
            for bits in sorted({r.bits for r in here}, reverse=True):
                curve = sorted((r for r in here if r.design == design and r.bits == bits), key=lambda r: r.payload_bytes)
                if not curve:
                    continue
                colour, line, marker = _STYLE.get(design, ("black", ":", "x"))
                ax.plot([r.payload_bytes for r in curve], [100 * r.accuracy for r in curve], line, marker=marker,
                        color=colour, alpha=_ALPHA.get(bits, 1.0), label=f"{design} {bits}-bit")
        ax.axhline(100 * backbone_accuracy, color="black", lw=0.8, label="backbone")
        ax.axhline(100 * backbone_accuracy - 1, color="grey", lw=0.8, ls=":", label="backbone - 1 pt")
        if point in point_fp32_bytes:
            ax.axvline(point_fp32_bytes[point] / min_compression, color="green", lw=0.8, ls="-.",
                       label=f"{min_compression:g}x compression")
        ax.set_xscale("log")
        ax.set_xlabel("payload bytes per image (log)")
        ax.set_title(f"point {point} ({here[0].name})" if here else f"point {point}")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("test accuracy (%)")
    axes[0][-1].legend(fontsize=7, loc="lower right")
    fig.suptitle(f"{backbone} on {dataset}: rate-accuracy of the split-point bottlenecks")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

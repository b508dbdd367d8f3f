"""The demo's closing report: report.json, report.md and PNG plots from every stage's outputs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {}


def _plot_accuracy_latency(devit: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4))
    rows = [("teacher", devit.get("teacher", {})), ("ensemble (critical path)", devit.get("ensemble", {})),
            ("single student", devit.get("single_student", {}))]
    for label, row in rows:
        if "accuracy" in row and "latency_ms" in row:
            ax.scatter(row["latency_ms"], row["accuracy"], s=60, label=label)
    ax.set_xlabel("batch-1 latency (ms, one thread)")
    ax.set_ylabel("test accuracy")
    ax.set_title("DEKD: accuracy against latency")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def _plot_split(split: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [p for p in split.get("points", []) if p.get("payload_bytes")]
    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.scatter([p["payload_bytes"] for p in points], [p["accuracy"] for p in points], s=60)
    for p in points:
        ax.annotate(f"{p['index']}: {p['name']}", (p["payload_bytes"], p["accuracy"]), fontsize=8,
                    xytext=(4, 4), textcoords="offset points")
    if "backbone_accuracy" in split:
        ax.axhline(split["backbone_accuracy"], ls="--", color="grey", label="backbone, no split")
        ax.legend()
    ax.set_xscale("log")
    ax.set_xlabel("payload per image (bytes, log)")
    ax.set_ylabel("test accuracy")
    ax.set_title(f"Split points of {split.get('backbone', '?')}: payload against accuracy")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def _plot_scheduler(scheduler: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(scheduler)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.8))
    for ax, key, label in ((axes[0], "latency_per_task_s", "seconds per task"), (axes[1], "energy_per_task_j", "joules per task")):
        values = [scheduler[n].get(key, 0.0) for n in names]
        ax.bar(names, values, color=["tab:red" if n.startswith("mahppo") else "tab:blue" for n in names])
        ax.set_title(label)
        ax.tick_params(axis="x", rotation=30)
        ax.grid(alpha=0.3, axis="y")
    fig.suptitle("Scheduler against the baselines (simulated, measured profile)")
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def write_demo_report(runs: Path, devit_dir: Path, split_dir: Path, profile_path: Path, scheduler_eval: Path,
                      runtime: dict[str, Any], timings: dict[str, float],
                      scheduler_scenario: str | None = None, reused: list[str] | None = None) -> dict[str, Any]:
    """Gather every stage's figures into runs/report.json and report.md, draw the plots, print the table.

    ``scheduler_scenario`` is the one-line description of the simulated cell the scheduler was
    trained and compared in; ``reused`` names the stages taken from an earlier run (no time).
    """
    devit = _load(devit_dir / "report.json")
    split = _load(split_dir / "report.json")
    scheduler_raw = _load(scheduler_eval)
    scheduler = {
        name: {k: row.get(k) for k in ("latency_per_task_s", "task_latency_mean_s", "task_latency_p95_s", "energy_per_task_j", "reward")}
        for name, row in scheduler_raw.items() if isinstance(row, dict)
    }
    compressions = [p.get("compression", 0) for p in split.get("points", [])[1:-1]]
    report: dict[str, Any] = {
        "teacher_accuracy": devit.get("teacher", {}).get("accuracy"),
        "ensemble_accuracy": devit.get("ensemble", {}).get("accuracy"),
        "ensemble_accuracy_missing_one": devit.get("ensemble", {}).get("accuracy_missing_one"),
        "single_student_accuracy": devit.get("single_student", {}).get("accuracy"),
        "speedup": devit.get("speedup"),
        "split_backbone": split.get("backbone"),
        "split_backbone_accuracy": split.get("backbone_accuracy"),
        "split_best_compression": max(compressions) if compressions else None,
        "split_points": split.get("points", []),
        "scheduler": scheduler,
        "scheduler_scenario": scheduler_scenario,
        **runtime,
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
        "reused_stages": list(reused or []),
    }
    plots = {
        "accuracy_latency.png": lambda p: _plot_accuracy_latency(devit, p),
        "split_payload_accuracy.png": lambda p: _plot_split(split, p),
        "scheduler.png": lambda p: _plot_scheduler(scheduler, p),
    }
    for name, draw in plots.items():
        draw(runs / name)
    report["plots"] = list(plots)
    (runs / "report.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    md = _markdown(report)
    (runs / "report.md").write_text(md)
    print(md)
    return report


def _f(value: Any, digits: int = 4) -> str:
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return "—" if value is None else str(value)


def _markdown(r: dict[str, Any]) -> str:
    lines = [
        "# coinfer demo report", "",
        "| stage | figure | value |", "| --- | --- | --- |",
        f"| DEKD | teacher accuracy | {_f(r['teacher_accuracy'])} |",
        f"| DEKD | ensemble accuracy (4 devices) | {_f(r['ensemble_accuracy'])} |",
        f"| DEKD | ensemble accuracy, one device missing (mean) | {_f(_mean(r.get('ensemble_accuracy_missing_one')))} |",
        f"| DEKD | single student, same parameters | {_f(r['single_student_accuracy'])} |",
        f"| DEKD | speedup over the teacher | {_f(r['speedup'])} |",
        f"| split | {r.get('split_backbone')} accuracy without a split | {_f(r['split_backbone_accuracy'])} |",
        f"| split | best compression at a mid point | {_f(r['split_best_compression'])} |",
        f"| runtime | requests / errors | {r.get('runtime_requests')} / {r.get('runtime_errors')} |",
        f"| runtime | latency p50 / p99 (ms) | {_f(r.get('latency_ms_p50'))} / {_f(r.get('latency_ms_p99'))} |",
        f"| runtime | degraded answers after killing one edge | {r.get('degraded_answers')} |",
    ]
    for key in ("devit_runtime_accuracy", "split_runtime_accuracy", "degraded_accuracy"):
        if key in r:
            lines.append(f"| runtime | {key.replace('_', ' ')} | {_f(r[key])} |")
    lines += ["", "## Scheduler (simulated on the measured profile)", ""]
    if r.get("scheduler_scenario"):
        lines += [f"Cell: {r['scheduler_scenario']}.", ""]
    lines += [
              "| policy | s per task (paper metric) | task latency mean / p95 (s) | J per task | reward |",
              "| --- | --- | --- | --- | --- |"]
    for name, row in r["scheduler"].items():
        lines.append(f"| {name} | {_f(row['latency_per_task_s'])} | {_f(row['task_latency_mean_s'])} / "
                     f"{_f(row['task_latency_p95_s'])} | {_f(row['energy_per_task_j'])} | {_f(row['reward'])} |")
    lines += ["", "Stage times (s): " + ", ".join(f"{k} {v}" for k, v in r["timings_s"].items())
              + (f"; reused from an earlier run: {', '.join(r['reused_stages'])}" if r.get("reused_stages") else ""), "",
              "Plots: " + ", ".join(r["plots"]), ""]
    return "\n".join(lines)


def _mean(values: Any) -> float | None:
    if not values:
        return None
    return float(sum(values) / len(values))

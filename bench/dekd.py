"""DEKD benchmark: the default recipe on small and larger data, and the deployment figures, against
the issue's targets and DeViT's figures.

    python -m coinfer.bench.dekd --out runs/bench/dekd [--quick] [--threads N] [--fresh]
        [--device cpu|cuda|auto] [--only NAME,...]

For each dataset — digits and Fashion-MNIST subsets of 2,000, 5,000 and 20,000 training images
(seeded and stratified, drawn by the bench from the official training set, 10% of them held out
for validation; the official 10,000-image test set) — the defaults of ``coinfer teacher train``
and ``coinfer decompose`` with N = 4 and no flags: a ViT teacher, the reference CNN, the
ensemble and the single student at equal parameters, each on the default budget of its data.
Targets on every dataset: ensemble >= teacher - 1 pt, ensemble > single student, teacher >=
reference CNN. A table and a plot (accuracy against training set size) show them together.

From the same runs: the speedup, the accuracy with one device missing and the sub-model sizes
(largest subset); the affinity partition against DeViT's random one (a second run on the
5,000-image subset); the latency balance for device speeds 1, 1, 0.5, 0.5 (a run with one
epoch per stage on the 2,000-image subset: it only depends on the architectures).

Every teacher and run is cached under OUT (a key file beside it), so an interrupted bench resumes
where it stopped; ``--fresh`` retrains. ``--quick`` runs digits alone on the quick budget (the
test path). Everything trains where ``--device`` says (default auto: the GPU when there is one);
evaluation and latencies are on the CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from coinfer.core.device import DEVICE_CHOICES
from coinfer.server.dekd.recipes import TEACHER_ARCH

HETERO_SPEEDS = (1.0, 1.0, 0.5, 0.5)
RUN_FORMAT = 2
"""Bumped when what a cached run means changes (older caches are retrained)."""


@dataclass(frozen=True)
class BenchData:
    """One dataset of the benchmark."""

    name: str
    """Name in the tables (and the folder under OUT)."""
    dataset: str
    """Dataset name for coinfer.core.data.load_dataset."""
    subset: int | None = None
    """Labelled training images drawn from it (None: its own splits)."""


@dataclass(frozen=True)
class BenchSettings:
    """What the benchmark trains."""

    datasets: tuple[BenchData, ...]
    """The datasets, in table order."""
    budget: str = "default"
    """The budget every stage gets (the defaults of the CLI)."""
    devices: int = 4
    """N."""
    random_on: str = "fashion-mnist-5000"
    """Dataset of the random-partition run."""
    hetero_on: str = "fashion-mnist-2000"
    """Dataset of the heterogeneous-speeds run."""
    deployment_on: str = "fashion-mnist-20000"
    """Dataset whose main run gives the speedup, missing-device and size rows."""
    hetero_epochs: int = 1
    """Epochs of each stage of the heterogeneous run (its figure of merit is latency)."""
    teacher_arch: str = TEACHER_ARCH
    """The teacher's size (the default of ``coinfer teacher train``; tests shrink it)."""
    teacher_stem: str = "patch"
    """The teacher's stem (``coinfer teacher train --stem``): ``patch`` as the CLI's default, or ``conv``."""
    teacher_epochs: int | None = None
    """Fixed teacher epochs instead of the budget (tests)."""
    stage_epochs: int | None = None
    """Fixed epochs of every DEKD stage instead of the budget (tests)."""


FASHION_SUBSETS = tuple(BenchData(f"fashion-mnist-{n}", "fashion-mnist", n) for n in (2000, 5000, 20000))
FULL = BenchSettings(datasets=(BenchData("digits", "digits"), *FASHION_SUBSETS))
QUICK = BenchSettings(datasets=(BenchData("digits", "digits"),), budget="quick", random_on="digits", hetero_on="digits",
                      deployment_on="digits")


@dataclass
class TargetRow:
    """One line of the benchmark table."""

    name: str
    """What is measured."""
    target: str
    """The issue's goal for it."""
    ours: float | None
    """Our figure as a number (units as in ours_text)."""
    ours_text: str
    """Our figure with its context, as printed."""
    anchor: str
    """DeViT's figure for the same quantity (ANCHORS.md), or why there is none."""
    met: bool | None
    """Whether the target is met (None: informative row without a target)."""


@dataclass
class AccuracyRow:
    """One dataset's accuracies: a line of the table and a point of the plot."""

    dataset: str
    train_images: int
    teacher: float
    ensemble: float
    single_student: float
    reference_cnn: float
    teacher_steps: int
    ensemble_steps: int
    stopped_early: dict[str, int | None] = field(default_factory=dict)
    """Stage -> epoch (from 0) where early stopping ended it, None where the whole budget ran."""


def load_bench_splits(data: BenchData):
    """The splits of one benchmark dataset (a seeded, stratified subset where it says so)."""
    from coinfer.core.data import load_dataset, stratified_subset

    splits = load_dataset(data.dataset)
    return splits if data.subset is None else stratified_subset(splits, data.subset, seed=0)


def _key_matches(folder: Path, key: dict) -> bool:
    path = folder / "bench_key.json"
    return path.is_file() and json.loads(path.read_text()) == json.loads(json.dumps(key))


def _write_key(folder: Path, key: dict) -> None:
    (folder / "bench_key.json").write_text(json.dumps(key, indent=2) + "\n")


def _measured_settings(settings: Any) -> Any:
    """``settings`` without what does not change a measurement (where it ran, progress bars, labels)."""
    if isinstance(settings, dict):
        return {k: _measured_settings(v) for k, v in settings.items() if k not in ("device", "progress", "desc")}
    if isinstance(settings, (list, tuple)):
        return [_measured_settings(v) for v in settings]
    return settings


def teacher_recipe_for(settings: BenchSettings, splits, device: str, progress: bool):
    """The TrainConfig ``coinfer teacher train`` uses on ``splits`` (the bench's fixed epochs on top)."""
    from coinfer.server.dekd.jobs import teacher_train_config

    return teacher_train_config(settings.budget, splits, seed=0, device=device, progress=progress,
                                epochs=settings.teacher_epochs)


def teacher_cache_key(settings: BenchSettings, data: BenchData, train, config) -> dict[str, Any]:
    """What a cached teacher must have been trained with to be reused: its recipe and its
    architecture (``config``, a ViTConfig: a default such as the patch size can change under the
    same preset name), not where it ran (a teacher trained on a GPU is reused by a CPU run)."""
    return {"format": RUN_FORMAT, "data": asdict(data), "arch": settings.teacher_arch, "config": asdict(config),
            "recipe": _measured_settings(asdict(train))}


def _teacher(settings: BenchSettings, data: BenchData, splits, folder: Path, fresh: bool, progress: bool, device: str):
    """(teacher on the CPU, its metadata, seconds spent training it: 0.0 when the cached one was reused)."""
    from coinfer.core.training import evaluate
    from coinfer.server.dekd.teacher import load_teacher, save_teacher, teacher_config, train_teacher

    path = folder / "teacher"
    train = teacher_recipe_for(settings, splits, device, progress)
    config = teacher_config(settings.teacher_arch, splits.image_shape, splits.num_classes, stem=settings.teacher_stem)
    key = teacher_cache_key(settings, data, train, config)
    if path.exists() and not fresh and _key_matches(folder, {"teacher": key}):
        model, meta = load_teacher(path)
        return model, meta, 0.0
    started = time.perf_counter()
    model, result = train_teacher(splits, config, train)
    seconds = time.perf_counter() - started
    meta = {
        "dataset": splits.name, "class_names": list(splits.class_names), "image_shape": list(splits.image_shape),
        "arch": settings.teacher_arch, "val_accuracy": result.best_val_accuracy, "test_accuracy": evaluate(model, splits.test),
        "recipe": result.recipe(train), "train_seconds": round(seconds, 1), "train_device": device,
    }
    save_teacher(model, path, meta, overwrite=True)
    _write_key(folder, {"teacher": key})
    return model, meta, seconds


def _run(settings: BenchSettings, data: BenchData, splits, teacher, teacher_meta, folder: Path, name: str, *,
         partition="affinity", speeds=None, baseline=True, reference=True, stage_epochs=None, fresh=False,
         progress=True, device="cpu") -> dict:
    """One decomposition (cached in ``folder / name``): its report as a dict."""
    from coinfer.server.dekd.jobs import decompose_config
    from coinfer.server.dekd.pipeline import decompose

    config = decompose_config(
        splits, settings.budget, devices=settings.devices, partition=partition, device_speeds=speeds,
        baseline=baseline, reference=teacher_recipe_for(settings, splits, device, progress) if reference else None,
        seed=0, device=device, progress=progress, distill_epochs=stage_epochs, ensemble_epochs=stage_epochs,
    )
    out = folder / name
    key = {"format": RUN_FORMAT, "teacher": teacher_meta.get("recipe"), "teacher_accuracy": teacher_meta.get("test_accuracy"),
           "config": _measured_settings(config.to_dict())}
    if (out / "report.json").is_file() and not fresh and _key_matches(out, key):
        return json.loads((out / "report.json").read_text())
    started = time.perf_counter()
    report = decompose(teacher, splits, config, out=out, overwrite=True,
                       metadata={"bench": name, "teacher_metadata": teacher_meta})
    _write_key(out, key)
    print(f"[bench] {data.name} {name}: {time.perf_counter() - started:.0f} s", flush=True)
    return report.to_dict()


def accuracy_row(data: BenchData, splits, teacher_meta: dict, report: dict) -> AccuracyRow:
    stages = report["recipe"]["stages"]
    stopped = {"teacher": (teacher_meta.get("recipe") or {}).get("stopped_early_at_epoch"),
               "ensemble": stages["ensemble"]["stopped_early_at_epoch"],
               "single student": stages["single student"]["stopped_early_at_epoch"],
               "reference cnn": stages["reference cnn"]["stopped_early_at_epoch"]}
    return AccuracyRow(
        dataset=data.name, train_images=len(splits.train), teacher=report["teacher"]["accuracy"],
        ensemble=report["ensemble"]["accuracy"], single_student=report["single_student"]["accuracy"],
        reference_cnn=report["reference"]["accuracy"],
        teacher_steps=(teacher_meta.get("recipe") or {}).get("steps", 0), ensemble_steps=stages["ensemble"]["steps"],
        stopped_early=stopped,
    )


def accuracy_targets(row: AccuracyRow) -> list[TargetRow]:
    """The three targets of one dataset."""
    gap = 100 * (row.ensemble - row.teacher)
    lead = 100 * (row.ensemble - row.single_student)
    over_cnn = 100 * (row.teacher - row.reference_cnn)
    return [
        TargetRow(f"{row.dataset}: ensemble vs teacher", ">= -1.0 pt", gap,
                  f"{gap:+.2f} pt ({row.ensemble:.4f} vs {row.teacher:.4f})", "-1.65 pt (CIFAR-100, ViT-L/16 teacher)",
                  gap >= -1.0),
        TargetRow(f"{row.dataset}: ensemble vs single student at equal parameters", "> 0 pt", lead,
                  f"{lead:+.2f} pt (student {row.single_student:.4f})", "+3.54 pt vs MobileViT-S (ImageNet)", lead > 0),
        TargetRow(f"{row.dataset}: teacher vs reference CNN (VGG11 x0.25, same budget)", ">= 0 pt", over_cnn,
                  f"{over_cnn:+.2f} pt (CNN {row.reference_cnn:.4f})", "none: DeViT starts from a pretrained teacher",
                  over_cnn >= 0),
    ]


def deployment_targets(main: dict, random_run: dict, hetero: dict) -> list[TargetRow]:
    """Speedup, missing device, sizes, latency balance and the partition comparison."""
    e, t = main["ensemble"], main["teacher"]
    rows = [TargetRow("speedup (teacher / ensemble critical path)", ">= 3.0x", main["speedup"],
                      f"{main['speedup']:.2f}x ({t['latency_ms']:.3f} / {e['latency_ms']:.3f} ms)", "2.89x (GPU server)",
                      main["speedup"] >= 3.0)]
    mean_missing = sum(e["accuracy_missing_one"]) / len(e["accuracy_missing_one"])
    ratio = mean_missing / e["accuracy"] if e["accuracy"] else 0.0
    rows.append(TargetRow("mean accuracy with one device missing", ">= 0.8 x ensemble", ratio,
                          f"{ratio:.3f} x ({mean_missing:.4f})", "none: every DeViT device must answer", ratio >= 0.8))
    balance = hetero["ensemble"]["latency_balance"]
    rows.append(TargetRow("latency balance with speeds 1,1,0.5,0.5 (slowest / fastest scaled)", "<= 1.20", balance,
                          f"{balance:.3f} (" + ", ".join(f"{d['scaled_latency_ms']:.3f}" for d in hetero["ensemble"]["devices"])
                          + " ms)", "none: DeViT assumes identical devices", balance <= 1.2))
    macs_ratio = t["macs"] / max(d["macs"] for d in e["devices"])
    rows.append(TargetRow("teacher MACs / largest sub-model MACs", ">= 8x", macs_ratio, f"{macs_ratio:.1f}x",
                          "sub-models at 30% of the base model's MACs", macs_ratio >= 8))
    r = random_run["ensemble"]
    diff = 100 * (random_run["affinity_accuracy"] - r["accuracy"])
    rows.append(TargetRow("affinity partition vs random (DeViT's)", "informative", diff,
                          f"{diff:+.2f} pt ({random_run['affinity_accuracy']:.4f} vs {r['accuracy']:.4f}, "
                          f"{random_run['dataset']})", "random partition", None))
    return rows


def format_table(rows: list[TargetRow], headers: tuple[str, str, str, str] = ("target", "goal", "ours", "DeViT"),
                 widths: tuple[int, int, int, int] = (70, 20, 50, 45)) -> str:
    """The target table a DEKD benchmark prints: our figure beside each target and the anchor."""
    def line(cells) -> str:
        return " ".join(f"{c:<{w}}" for c, w in zip(cells, widths))

    lines = [line(headers) + " ok"]
    for r in rows:
        ok = "-" if r.met is None else ("yes" if r.met else "NO")
        lines.append(line((r.name, r.target, r.ours_text, r.anchor)) + f" {ok}")
    return "\n".join(lines)


def format_accuracy_table(rows: list[AccuracyRow]) -> str:
    """Accuracy per dataset: teacher / ensemble / single student / reference CNN."""
    lines = [f"{'dataset':<22} {'train':>7} {'teacher':>8} {'ensemble':>9} {'student':>8} {'CNN':>7} "
             f"{'teacher steps':>14} {'ensemble steps':>15}"]
    for r in rows:
        lines.append(f"{r.dataset:<22} {r.train_images:>7,} {r.teacher:>8.4f} {r.ensemble:>9.4f} {r.single_student:>8.4f} "
                     f"{r.reference_cnn:>7.4f} {r.teacher_steps:>14,} {r.ensemble_steps:>15,}")
    return "\n".join(lines)


def accuracy_plot(path: Path, rows: list[AccuracyRow]) -> Path:
    """Accuracy against training set size: Fashion-MNIST subsets as curves, other datasets as marked points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 5.4))
    series = (("teacher", "tab:blue", "o"), ("ensemble", "tab:red", "s"), ("single_student", "tab:green", "^"),
              ("reference_cnn", "tab:grey", "D"))
    curve = sorted((r for r in rows if r.dataset.startswith("fashion-mnist")), key=lambda r: r.train_images)
    others = [r for r in rows if not r.dataset.startswith("fashion-mnist")]
    for attr, colour, marker in series:
        label = attr.replace("_", " ")
        if curve:
            ax.plot([r.train_images for r in curve], [100 * getattr(r, attr) for r in curve], "-", marker=marker,
                    color=colour, label=f"{label} (Fashion-MNIST)")
        for r in others:
            ax.plot([r.train_images], [100 * getattr(r, attr)], marker=marker, color=colour, ls="none", mfc="none",
                    label=f"{label} ({r.dataset})")
    ax.set_xscale("log")
    ax.set_xlabel("training images (log)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("DEKD defaults, N = 4: accuracy against training set size")
    ax.grid(alpha=0.3)
    # Below the axes: wherever it sits inside, some dataset's points fall under it.
    ax.legend(fontsize=7, ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.15))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _write_results(out: Path, result: dict) -> None:
    tmp = out / "results.json.tmp"
    tmp.write_text(json.dumps(result, indent=2, default=str) + "\n")
    tmp.replace(out / "results.json")


def run_benchmark(
    out_dir: str | Path,
    quick: bool = False,
    fresh: bool = False,
    progress: bool = True,
    settings: BenchSettings | None = None,
    device: str = "auto",
    only: tuple[str, ...] | None = None,
) -> dict[str, Any]:
    """Run the benchmark, print the tables and write ``out_dir/results.json`` (after every dataset,
    so a stopped run shows what it has) and the plot; return what it wrote.

    ``settings`` replaces the preset chosen by ``quick`` (tests use it to shrink every stage);
    ``only`` restricts it to some datasets (the runs that need others are then left out and said so).
    """
    import torch

    from coinfer.core.device import resolve_device

    settings = settings or (QUICK if quick else FULL)
    resolved = str(resolve_device(device))  # checked before anything is written
    datasets = [d for d in settings.datasets if only is None or d.name in only]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    load_before = os.getloadavg()
    result: dict[str, Any] = {"settings": asdict(settings), "device": resolved, "datasets": {}, "accuracy": [],
                              "targets": [], "left_out": []}
    rows: list[AccuracyRow] = []
    reports: dict[str, dict] = {}
    loaded: dict[str, tuple] = {}
    for data in datasets:
        t0 = time.perf_counter()
        splits = load_bench_splits(data)
        folder = out / data.name
        folder.mkdir(parents=True, exist_ok=True)
        teacher, meta, teacher_s = _teacher(settings, data, splits, folder, fresh, progress, resolved)
        report = _run(settings, data, splits, teacher, meta, folder, "affinity", stage_epochs=settings.stage_epochs,
                      fresh=fresh, progress=progress, device=resolved)
        loaded[data.name] = (data, splits, teacher, meta)
        reports[data.name] = report
        rows.append(accuracy_row(data, splits, meta, report))
        result["datasets"][data.name] = {"teacher": meta, "teacher_train_seconds": round(teacher_s, 1),
                                         "seconds": round(time.perf_counter() - t0, 1), "report": report}
        result["accuracy"] = [asdict(r) for r in rows]
        result["targets"] = [asdict(t) for r in rows for t in accuracy_targets(r)]
        _write_results(out, result)
        print(f"[bench] {data.name} done in {time.perf_counter() - t0:.0f} s", flush=True)
    targets = [t for r in rows for t in accuracy_targets(r)]
    needed = (settings.deployment_on, settings.random_on, settings.hetero_on)
    if all(name in loaded for name in needed):
        data, splits, teacher, meta = loaded[settings.random_on]
        random_run = _run(settings, data, splits, teacher, meta, out / data.name, "random", partition="random",
                          baseline=False, reference=False, stage_epochs=settings.stage_epochs, fresh=fresh,
                          progress=progress, device=resolved)
        random_run = {**random_run, "affinity_accuracy": reports[data.name]["ensemble"]["accuracy"], "dataset": data.name}
        data, splits, teacher, meta = loaded[settings.hetero_on]
        hetero = _run(settings, data, splits, teacher, meta, out / data.name, "hetero", speeds=HETERO_SPEEDS,
                      baseline=False, reference=False, stage_epochs=settings.hetero_epochs, fresh=fresh,
                      progress=progress, device=resolved)
        targets += deployment_targets(reports[settings.deployment_on], random_run, hetero)
        result["reports"] = {"random": random_run, "hetero": hetero}
    else:
        result["left_out"].append(f"deployment rows: need the runs of {', '.join(needed)}")
    wall = time.perf_counter() - started
    load_after = os.getloadavg()
    targets.append(TargetRow(
        "benchmark wall time (this invocation; cached runs are reused)", "informative", wall / 60,
        f"{wall / 60:.1f} min, {torch.get_num_threads()} thread(s), load average {load_before[0]:.1f} -> "
        f"{load_after[0]:.1f} on {os.cpu_count()} cores, device {resolved}", "n/a", None,
    ))
    result.update(targets=[asdict(t) for t in targets], wall_seconds=round(wall, 1), load_average_before=load_before,
                  load_average_after=load_after, cpu_count=os.cpu_count(), torch_threads=torch.get_num_threads())
    if rows:
        result["plot"] = str(accuracy_plot(out / "accuracy_vs_size.png", rows))
    _write_results(out, result)
    print(format_accuracy_table(rows))
    print(format_table(targets))
    for note in result["left_out"]:
        print(f"left out: {note}")
    return result


def main(argv: list[str] | None = None) -> int:
    from coinfer.server.dekd.teacher import STEMS

    parser = argparse.ArgumentParser(prog="python -m coinfer.bench.dekd", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/bench/dekd"), help="output folder (default runs/bench/dekd)")
    parser.add_argument("--quick", action="store_true", help="digits on the quick budget: minutes instead of hours")
    parser.add_argument("--fresh", action="store_true", help="retrain every teacher and run instead of reusing OUT")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--device", default="auto", choices=DEVICE_CHOICES,
                        help="where every stage trains (default auto: the GPU if there is one); evaluation stays on the CPU")
    parser.add_argument("--only", default=None,
                        help="comma list of datasets to run (digits, fashion-mnist-2000, -5000, -20000); default all")
    parser.add_argument("--teacher-stem", default="patch", choices=STEMS,
                        help="the teachers' stem (coinfer teacher train --stem; default patch); give conv its own --out")
    args = parser.parse_args(argv)
    import logging

    import torch

    from coinfer.core.device import resolve_device
    from coinfer.core.errors import InvalidInput

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        resolve_device(args.device)
    except InvalidInput as exc:
        parser.error(f"--device: {exc}")
    settings = replace(QUICK if args.quick else FULL, teacher_stem=args.teacher_stem)
    only = None
    if args.only is not None:
        only = tuple(name.strip() for name in args.only.split(",") if name.strip())
        unknown = sorted(set(only) - {d.name for d in settings.datasets})
        if unknown:
            parser.error(f"--only: unknown dataset(s) {unknown}; valid: {', '.join(d.name for d in settings.datasets)}")
    if args.threads is not None:
        if args.threads < 1:
            parser.error("--threads must be at least 1")
        torch.set_num_threads(args.threads)
    run_benchmark(args.out, quick=args.quick, fresh=args.fresh, progress=not args.no_progress, settings=settings,
                  device=args.device, only=only)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

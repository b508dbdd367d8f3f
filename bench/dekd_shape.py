"""DEKD at real ViT shape: timm's ViT-S/16 and ViT-B/16 at 224 x 224 x 3, from checkpoint to served answers.

    python -m coinfer.bench.dekd_shape --out runs/bench/dekd_shape [--quick]

For each teacher, as a user would run it:

1. a seeded random initialisation written as a timm state dict (safetensors, timm's key names
   and shapes) and ``coinfer teacher import`` of it, checked against the data;
2. ``coinfer decompose --devices 4 --quick`` (fewer epochs) on an ``imagefolder`` of 224-px RGB images (Fashion-MNIST
   upscaled and tinted: it tests shapes and costs, not accuracy), in a child process whose peak
   memory (ru_maxrss) and CPU time come from ``wait4``;
3. the bundle served by a coordinator and 4 edge daemons (processes on loopback), answering
   ModelInfer with 224-px RGB requests.

The figures: teacher and sub-model parameters and MACs (``core.models.macs``), batch-1 one-thread
latencies and the speedup from ``report.json`` (timed interleaved), payload bytes per device, peak
memory and time of ``decompose``, seconds per DEKD step, and end-to-end latency through the edges.
A run that would not fit this machine's memory, or that passes its time limit, is reported as such
with the figures of the steps that did run; nothing is left out silently. ``--quick`` uses a few
images and one epoch per stage at the same real shapes (checks the path, not the targets).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from coinfer.bench.dekd import TargetRow
from coinfer.bench.dekd import format_table as dekd_table
from coinfer.bench.processes import coinfer_command
from coinfer.server.dekd.timm_vit import TIMM_VITS, TimmViTShape

SPEEDUP_TARGET = 4.0
MACS_RATIO_TARGET = 8.0
SPEEDUP_ANCHOR = "DeViT: 2.89x (ViT-L/16, GPU server); 1.72x over MobileViT-S (4 Jetson Nano)"
GIB = 1 << 30


@dataclass(frozen=True)
class TeacherRun:
    """One teacher and the data it is decomposed on."""

    label: str
    """Name in the rows, e.g. 'ViT-S/16'."""
    shape: TimmViTShape
    """The architecture written as a timm checkpoint."""
    images_per_class: int
    """Images per class in the image folder (10% go to validation, 20% to test)."""
    time_limit_min: float
    """Wall-clock limit of its ``decompose`` on this machine; past it the run is stopped and reported."""


@dataclass(frozen=True)
class ShapeSettings:
    """What the benchmark runs."""

    teachers: tuple[TeacherRun, ...]
    """Teachers in order (the smaller first: its figures are kept if a larger one does not fit)."""
    source: str = "fashion-mnist"
    """Grey dataset the 224-px RGB images are made from (its training split)."""
    classes: int = 4
    """Classes in the image folder, the source's first ones (one class per device with 4 and 4)."""
    devices: int = 4
    """N, the number of devices."""
    decompose_flags: tuple[str, ...] = ("--quick",)
    """Training flags of ``coinfer decompose`` (the pruning budget stays the default)."""
    threads: int = 1
    """Torch threads of the ``decompose`` child (1: best on a machine other jobs keep busy)."""
    requests: int = 40
    """Timed ModelInfer requests through the 4 edges (after 5 warm-up requests)."""
    seed: int = 0
    """Seeds the checkpoints, the tints, the data split and the decomposition."""


VIT_S16 = TIMM_VITS["vit_small_patch16_224"]
VIT_B16 = TIMM_VITS["vit_base_patch16_224"]
# 40 images per class is the probe (160 images: ViT-S/16 decomposed with --quick in 6.4 min
# on 2 idle cores). ViT-B/16 costs about 3.8x as much per image, so it gets 16 per class. Fixed
# epochs instead of the quick budget's, and no reference CNN: these runs measure shapes and costs,
# not accuracy, and the per-step figures do not depend on the number of epochs. The limits are
# about 10x an idle run.
SHAPE_FLAGS = ("--quick", "--distill-epochs", "4", "--ensemble-epochs", "2", "--baseline-epochs", "2", "--no-reference")
FULL = ShapeSettings(
    teachers=(TeacherRun("ViT-S/16", VIT_S16, 40, 60.0), TeacherRun("ViT-B/16", VIT_B16, 16, 150.0)),
    decompose_flags=SHAPE_FLAGS,
)
QUICK = ShapeSettings(
    teachers=(TeacherRun("ViT-S/16", VIT_S16, 6, 30.0), TeacherRun("ViT-B/16", VIT_B16, 6, 60.0)),
    decompose_flags=("--quick", "--distill-epochs", "1", "--ensemble-epochs", "1", "--no-baseline", "--no-reference"),
    requests=5,
)


# Data ----------------------------------------------------------------------------------------


def make_imagefolder(root: Path, source: str, image_size: int, classes: int, per_class: int, seed: int) -> Path:
    """Images of dataset ``source`` upscaled to ``image_size`` and tinted to RGB, one folder per class.

    Each image gets its own seeded tint (r, g, b in [0.4, 1]), so the three channels differ and
    the loader keeps them as RGB. Reused when a folder of the same settings is already there.
    """
    from PIL import Image

    from coinfer.core.data import load_dataset

    stamp = {"source": source, "image_size": image_size, "classes": classes, "per_class": per_class, "seed": seed}
    done = root / "settings.json"
    if done.is_file() and json.loads(done.read_text()) == stamp:
        return root
    shutil.rmtree(root, ignore_errors=True)
    train = load_dataset(source, seed=seed).train
    rng = np.random.default_rng(seed)
    for c in range(classes):
        folder = root / f"class-{c}"
        folder.mkdir(parents=True)
        for j, i in enumerate(np.flatnonzero(train.y == c)[:per_class]):
            grey = np.asarray(Image.fromarray(train.x[i, 0]).resize((image_size, image_size), Image.BILINEAR), np.float32)
            rgb = np.rint(grey[..., None] * rng.uniform(0.4, 1.0, 3)).astype(np.uint8)
            Image.fromarray(rgb, "RGB").save(folder / f"{j:04d}.png")
    done.write_text(json.dumps(stamp))
    return root


# Child processes -----------------------------------------------------------------------------


@dataclass
class ChildRun:
    """A ``coinfer`` command run as a child process."""

    argv: list[str]
    """What ran."""
    returncode: int | None
    """Exit status (negative: killed by that signal); None if it was stopped at the time limit."""
    wall_s: float
    """Wall-clock seconds."""
    cpu_s: float
    """User + system CPU seconds of the child."""
    max_rss_bytes: int
    """Peak resident memory of the child (ru_maxrss)."""
    log: str
    """Path of its output."""

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def why_not(self, limit_min: float) -> str:
        """What went wrong, in words, for a row."""
        if self.returncode is None:
            return f"stopped at its {limit_min:.0f}-min limit on this machine"
        if self.returncode == -signal.SIGKILL:
            return "killed (SIGKILL: out of memory?)"
        return f"exit status {self.returncode}: {_tail(Path(self.log), 3)}"


def _tail(path: Path, lines: int) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


def run_child(args: list[str], log: Path, time_limit_s: float) -> ChildRun:
    """Run ``coinfer ARGS`` niced, with its output in ``log``; stop it (and its group) at ``time_limit_s``.

    Peak memory and CPU time are this child's own (``wait4``), not those of earlier children.
    """
    argv = ["nice", "-n", "10", *coinfer_command(*args)]
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with open(log, "wb") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                   env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = started + time_limit_s
    stopped = False
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            break
        if time.perf_counter() > deadline and not stopped:
            os.killpg(process.pid, signal.SIGKILL)
            stopped = True
        time.sleep(0.5)
    process.returncode = os.waitstatus_to_exitcode(status)  # reaped by wait4: tell Popen
    return ChildRun(
        argv=argv, returncode=None if stopped else process.returncode, wall_s=time.perf_counter() - started,
        cpu_s=usage.ru_utime + usage.ru_stime, max_rss_bytes=usage.ru_maxrss * 1024, log=str(log),
    )


# Memory ---------------------------------------------------------------------------------------


def decompose_memory_estimate_bytes(
    shape: TimmViTShape, num_classes: int, train_images: int, group_images: int, devices: int = 4, train_batch: int = 64,
) -> int:
    """A generous estimate of ``decompose``'s peak memory, to refuse a run that cannot fit.

    Always live: the interpreter and torch, the teacher's weights (twice while loading), every
    image as float (train, validation and test) and the cached Q/K/V relations (3 x T x T
    float16 per training image). On top, the larger of two stages:

    * importance: the activations a micro-batch (``importance_batch_size``) keeps through every
      teacher block for its backward pass, about 24 token vectors of width C and two T x T maps
      per head per block (1.6 times what a ViT-S/16 was measured to keep);
    * ensemble training: all N sub-models (depth ``default_depth``, full width C in the residual
      stream) training together on a batch of ``train_batch``, about 20 token vectors of width C
      per block and image (a ViT-S/16 run on 160 images with 4 devices and batches of 64 peaked
      at 5.4 GiB, about 16 vectors' worth).

    An estimate with a margin (the benchmark's JSON puts it beside ru_maxrss), not a bound.
    """
    from coinfer.server.dekd.config import DecomposeConfig
    from coinfer.server.dekd.prune import default_depth, importance_batch_size

    config = shape.config(num_classes)
    T, C, H, D = config.num_tokens, config.embed_dim, config.num_heads, config.depth
    params = sum(
        [T * C + C + C * 3 * config.patch_size**2 + C, (num_classes + 2) * C + num_classes]
        + [12 * C * C + 13 * C] * D
    )
    images = math.ceil(train_images / 0.7)
    always = 600 * (1 << 20) + 2 * params * 4 + images * 3 * config.image_size**2 * 4 + train_images * 3 * T * T * 2
    micro = min(importance_batch_size(config), max(1, group_images))
    importance = micro * D * (24 * T * C + 2 * H * T * T) * 4
    sub_depth = default_depth(config, DecomposeConfig().macs_ratio)
    ensemble = min(train_batch, train_images) * devices * sub_depth * 20 * T * C * 4
    return always + max(importance, ensemble)


def _train_batch(flags: tuple[str, ...]) -> int:
    """Images per step of the ensemble stage that ``coinfer decompose FLAGS`` runs."""
    from coinfer.server.dekd.config import preset

    return preset("quick" if "--quick" in flags else "default", progress=False).ensemble.loop.batch_size


def available_memory_bytes() -> int:
    """Memory the kernel can give a new process now (MemAvailable)."""
    import psutil

    return int(psutil.virtual_memory().available)


# Figures --------------------------------------------------------------------------------------


def count_model_macs(model, image_size: int, in_chans: int = 3) -> int:
    """MACs of one 224-px image through ``model``, counted by the layers that do the work."""
    import torch

    from coinfer.core.models.macs import count_macs

    with torch.no_grad():
        return count_macs(model, torch.zeros(1, in_chans, image_size, image_size))


@dataclass
class StepFigures:
    """How long one DEKD stage took per optimiser step."""

    steps: int
    """Optimiser steps the stage took: epochs x batches per epoch (the loop's own count)."""
    images_per_step: float
    """Mean images per step (a group smaller than the batch makes smaller steps)."""
    seconds_per_step: float
    """The stage's wall seconds (report.json) over its steps, per-epoch validation included."""


def step_figures(report: dict, train_labels: np.ndarray) -> dict[str, StepFigures]:
    """Per trained stage, its steps and wall seconds per step.

    Distillation trains each device on its group's images; the ensemble and the single student
    on every training image.
    """
    cfg, seconds = report["config"], report.get("stage_seconds", {})
    stages = {"distill": ("distill", [int(np.isin(train_labels, g).sum()) for g in report["partition"]]),
              "ensemble": ("ensemble", [len(train_labels)]), "single student": ("baseline", [len(train_labels)])}
    figures = {}
    for stage, (key, sizes) in stages.items():
        loop = (cfg.get(key) or {}).get("loop")
        if loop is None or seconds.get(stage) is None:
            continue  # the stage did not run (no baseline) or the report does not say how
        epochs, batch = int(loop["epochs"]), int(loop["batch_size"])
        steps = sum(epochs * max(1, math.ceil(n / batch)) for n in sizes)
        figures[stage] = StepFigures(steps, epochs * sum(sizes) / steps, seconds[stage] / steps)
    return figures


@dataclass
class TeacherResult:
    """What one teacher's run produced (None where a step did not run; ``notes`` say why)."""

    label: str
    """The teacher's name in the rows."""
    images: int
    """Images in the folder (all splits)."""
    train_images: int
    """Images of the training split."""
    memory_estimate_bytes: int
    """decompose_memory_estimate_bytes for this run."""
    memory_available_bytes: int
    """MemAvailable when the run was planned."""
    teacher_params: int = 0
    """Parameters of the imported teacher."""
    teacher_macs: int = 0
    """MACs of one image through the teacher (counted)."""
    import_run: dict | None = None
    """The ``teacher import`` child (ChildRun as a dict)."""
    decompose_run: dict | None = None
    """The ``decompose`` child (ChildRun as a dict)."""
    report: dict | None = None
    """The bundle's report.json."""
    submodel_params: list[int] = field(default_factory=list)
    """Parameters of each sub-model, device order."""
    submodel_macs: list[int] = field(default_factory=list)
    """MACs of one image through each sub-model (counted)."""
    teacher_latency_ms: float | None = None
    """Batch-1 one-thread latency: report.json's (timed with the sub-models), else timed alone."""
    steps: dict[str, StepFigures] = field(default_factory=dict)
    """Seconds per optimiser step, by stage."""
    serving: dict | None = None
    """What serve_and_time measured."""
    notes: list[str] = field(default_factory=list)
    """Why a step did not run or did not finish."""


def _teacher_figures(run: TeacherRun, settings: ShapeSettings, folder: Path, images: Path) -> TeacherResult:
    """Import, decompose and serve one teacher in ``folder``; every step that cannot run is noted."""
    from coinfer.core.data import load_dataset
    from coinfer.core.measure import measure_latency
    from coinfer.core.devit_bundle import load_devit
    from coinfer.server.dekd.teacher import load_teacher
    from coinfer.server.dekd.timm_vit import write_timm_vit

    splits = load_dataset("imagefolder", images, seed=settings.seed)
    config = run.shape.config(settings.classes)
    group = math.ceil(len(splits.train) / settings.devices)
    estimate = decompose_memory_estimate_bytes(run.shape, settings.classes, len(splits.train), group, settings.devices,
                                               _train_batch(settings.decompose_flags))
    result = TeacherResult(
        label=run.label, images=len(splits.train) + len(splits.val) + len(splits.test), train_images=len(splits.train),
        memory_estimate_bytes=estimate,
        memory_available_bytes=available_memory_bytes(),
    )
    checkpoint = write_timm_vit(folder / "checkpoint.safetensors", config, settings.seed, architecture=run.label)
    print(f"[shape] {run.label}: checkpoint {checkpoint} ({checkpoint.stat().st_size / 1e6:.0f} MB); importing", flush=True)
    imported = run_child(["teacher", "import", "--from", str(checkpoint), "--out", str(folder / "teacher"), "--overwrite",
                          "--dataset", "imagefolder", "--data-dir", str(images), "--seed", str(settings.seed)],
                         folder / "import.log", time_limit_s=run.time_limit_min * 60)
    result.import_run = asdict(imported)
    if not imported.ok:
        result.notes.append(f"teacher import failed: {imported.why_not(run.time_limit_min)}")
        return result
    teacher, _ = load_teacher(folder / "teacher")
    result.teacher_params = teacher.num_params()
    result.teacher_macs = count_model_macs(teacher, config.image_size)

    if result.memory_estimate_bytes > result.memory_available_bytes:
        result.notes.append(
            f"decompose not run: it needs an estimated {result.memory_estimate_bytes / GIB:.1f} GiB, "
            f"{result.memory_available_bytes / GIB:.1f} GiB available on this machine"
        )
    else:
        bundle = folder / f"devit-{run.label.lower().replace('/', '')}"
        print(f"[shape] {run.label}: decompose on {result.images} images of 224 px (estimate "
              f"{result.memory_estimate_bytes / GIB:.1f} GiB of {result.memory_available_bytes / GIB:.1f} GiB available, "
              f"limit {run.time_limit_min:.0f} min)", flush=True)
        decomposed = run_child(
            ["decompose", "--teacher", str(folder / "teacher"), "--dataset", "imagefolder", "--data-dir", str(images),
             "--devices", str(settings.devices), "--out", str(bundle), "--overwrite", "--seed", str(settings.seed),
             "--threads", str(settings.threads), *settings.decompose_flags],
            folder / "decompose.log", time_limit_s=run.time_limit_min * 60,
        )
        result.decompose_run = asdict(decomposed)
        print(f"[shape] {run.label}: decompose {'done' if decomposed.ok else 'FAILED'} in {decomposed.wall_s / 60:.1f} min "
              f"({decomposed.cpu_s / 60:.1f} CPU min), peak {decomposed.max_rss_bytes / GIB:.2f} GiB", flush=True)
        if decomposed.ok:
            result.report = json.loads((bundle / "report.json").read_text())
            result.teacher_latency_ms = result.report["teacher"]["latency_ms"]
            deployment = load_devit(bundle)
            result.submodel_params = [m.num_params() for m in deployment.submodels]
            result.submodel_macs = [count_model_macs(m, config.image_size) for m in deployment.submodels]
            result.steps = step_figures(result.report, splits.train.y)
            result.serving = serve_and_time(bundle, splits.test.x, settings.requests, folder / "fleet", settings.devices)
        else:
            result.notes.append(f"decompose did not finish: {decomposed.why_not(run.time_limit_min)}")
    if result.teacher_latency_ms is None:
        # What fits without the decomposition: the teacher's own batch-1 latency.
        import torch

        x = torch.rand(1, 3, config.image_size, config.image_size)
        result.teacher_latency_ms = measure_latency(lambda: teacher(x), warmup=2, repeats=10, threads=1).median_ms
    return result


def serve_and_time(bundle: Path, images: np.ndarray, requests: int, run_dir: Path, edges: int) -> dict[str, Any]:
    """Coordinator + ``edges`` edge daemons serving ``bundle``; ModelInfer latency of 224-px RGB requests."""
    from coinfer.bench.fleet import Fleet
    from coinfer.serving.client import InferenceClient

    model = bundle.name
    fleet = Fleet(run_dir, num_edges=edges, threads=1)
    latencies_ms, degraded, shapes = [], 0, set()
    try:
        started = time.perf_counter()
        fleet.start_coordinator([bundle])
        fleet.start_edges()
        ready_s = fleet.wait_ready([model], None, images[:1], timeout_s=300)
        with InferenceClient(fleet.address, timeout_s=60) as client:
            for i in range(requests + 5):
                image = images[i % len(images)][None]
                t0 = time.perf_counter()
                reply = client.infer(model, {"image": image})
                if i >= 5:  # warm-up: channels open, caches fill
                    latencies_ms.append((time.perf_counter() - t0) * 1e3)
                    degraded += bool(reply.parameters.get("degraded"))
                    shapes.add(tuple(reply.outputs["logits"].shape))
        startup_s = time.perf_counter() - started
    finally:
        statuses = fleet.stop()
    return {
        "requests": requests, "image_shape": list(images.shape[1:]), "image_dtype": str(images.dtype),
        "e2e_ms": {"p50": float(np.percentile(latencies_ms, 50)), "p95": float(np.percentile(latencies_ms, 95)),
                   "mean": float(np.mean(latencies_ms))},
        "degraded": degraded, "logits_shapes": sorted(shapes), "ready_s": ready_s, "startup_and_requests_s": startup_s,
        "exit_statuses": statuses,
    }


# Rows -----------------------------------------------------------------------------------------


def _gm(macs: int) -> str:
    return f"{macs / 1e9:.2f} GMACs"


def target_rows(results: list[TeacherResult], gpu_note: str) -> list[TargetRow]:
    """Every figure of every teacher, beside its target and anchor; a missing figure says why."""
    rows: list[TargetRow] = []
    for r in results:
        why = "; ".join(r.notes) or "not measured"
        rep = r.report
        rows.append(TargetRow(
            f"{r.label} teacher (224x224x3): params / MACs / batch-1 1-thread CPU latency", "informative",
            r.teacher_latency_ms,
            f"{r.teacher_params / 1e6:.2f} M / {_gm(r.teacher_macs)} / "
            + (f"{r.teacher_latency_ms:.1f} ms" if r.teacher_latency_ms else "not measured"),
            "DeViT's teacher: ViT-L/16 at 224 px", None,
        ))
        if rep is None:
            for name in ("speedup, teacher / ensemble critical path", "teacher MACs / largest sub-model MACs",
                         "sub-models: params / MACs / latency", "payload per device", "seconds per DEKD step, CPU",
                         "end-to-end latency, 224-px requests through 4 edges"):
                rows.append(TargetRow(f"{r.label} {name}", "see notes", None, why, "", None))
            if r.decompose_run is not None:
                rows.append(_memory_row(r))
            continue
        ens = rep["ensemble"]
        devices = ens["devices"]
        rows.append(TargetRow(
            f"{r.label} speedup, teacher / ensemble critical path (batch 1, 1 thread, CPU)", f">= {SPEEDUP_TARGET:g}x",
            rep["speedup"], f"{rep['speedup']:.2f}x ({rep['teacher']['latency_ms']:.1f} / {ens['latency_ms']:.1f} ms)",
            SPEEDUP_ANCHOR, rep["speedup"] >= SPEEDUP_TARGET,
        ))
        ratio = r.teacher_macs / max(r.submodel_macs)
        rows.append(TargetRow(
            f"{r.label} teacher MACs / largest sub-model MACs (default pruning budget)", f">= {MACS_RATIO_TARGET:g}x", ratio,
            f"{ratio:.2f}x ({_gm(r.teacher_macs)} / {_gm(max(r.submodel_macs))})",
            "DeViT: sub-models at 30% of the base model's MACs", ratio >= MACS_RATIO_TARGET,
        ))
        rows.append(TargetRow(
            f"{r.label} sub-models: params / MACs / latency (batch 1, 1 thread)", "informative", max(d["latency_ms"] for d in devices),
            "; ".join(f"{p / 1e6:.2f} M / {_gm(m)} / {d['latency_ms']:.1f} ms"
                      for p, m, d in zip(r.submodel_params, r.submodel_macs, devices)),
            "", None,
        ))
        payload = [d["payload_bytes"] for d in devices]
        rows.append(TargetRow(f"{r.label} payload per device and image", "informative", float(max(payload)),
                              ", ".join(f"{b:,} B" for b in payload), "DeViT: one CLS token (d floats) per device", None))
        rows.append(_memory_row(r))
        steps = r.steps
        rows.append(TargetRow(
            f"{r.label} seconds per DEKD step, CPU ({r.decompose_run['argv'][r.decompose_run['argv'].index('--threads') + 1]} "
            "thread; stage wall time / optimiser steps, validation included)", "informative",
            steps["distill"].seconds_per_step if "distill" in steps else None,
            ", ".join(f"{stage} {f.seconds_per_step:.2f} s ({f.images_per_step:.0f} images)" for stage, f in steps.items()),
            "", None,
        ))
        rows.append(TargetRow(f"{r.label} seconds per DEKD step, GPU", "when a GPU is available", None, gpu_note, "", None))
        s = r.serving
        rows.append(TargetRow(
            f"{r.label} end-to-end ModelInfer latency, 224-px RGB requests through 4 edges (p50 / p95)", "informative",
            s["e2e_ms"]["p50"],
            f"{s['e2e_ms']['p50']:.1f} / {s['e2e_ms']['p95']:.1f} ms over {s['requests']} requests, {s['degraded']} degraded, "
            f"logits {s['logits_shapes']}", "DeDeiT: 32.2 ms on 4 Jetson Nano (ImageNet)", None,
        ))
    return rows


def _memory_row(r: TeacherResult) -> TargetRow:
    d = r.decompose_run
    return TargetRow(
        f"{r.label} peak memory and time of decompose ({r.images} images)", "fits 24 GiB", d["max_rss_bytes"] / GIB,
        f"{d['max_rss_bytes'] / GIB:.2f} GiB peak (estimate {r.memory_estimate_bytes / GIB:.2f}); {d['wall_s'] / 60:.1f} min wall, "
        f"{d['cpu_s'] / 60:.1f} min CPU", "", d["max_rss_bytes"] <= 24 * GIB,
    )


def _gpu_note() -> str:
    import torch

    if not torch.cuda.is_available():
        return "not measured: no GPU on this machine (torch.cuda.is_available() is False)"
    return "not measured: coinfer decompose trains on the CPU (no --device option yet)"


# Benchmark ------------------------------------------------------------------------------------


def run_benchmark(out_dir: str | Path, quick: bool = False, settings: ShapeSettings | None = None) -> dict[str, Any]:
    """Run every teacher, print the rows, write ``out_dir/results.json``; return what was written."""
    from coinfer.bench.script import machine_snapshot, write_report

    settings = settings or (QUICK if quick else FULL)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"settings": asdict(settings), "machine_before": machine_snapshot(
        "decompose runs niced in a child process; other jobs may share this machine")}
    started = time.perf_counter()
    results = []
    for run in settings.teachers:
        images = make_imagefolder(out / f"images-{run.shape.image_size}px-{run.images_per_class}", settings.source,
                                  run.shape.image_size, settings.classes, run.images_per_class, settings.seed)
        results.append(_teacher_figures(run, settings, out / run.label.lower().replace("/", ""), images))
    rows = target_rows(results, _gpu_note())
    report.update({
        "teachers": [asdict(r) for r in results],
        "targets": [asdict(r) for r in rows],
        "wall_seconds": round(time.perf_counter() - started, 1),
        "machine_after": machine_snapshot(""),
    })
    write_report(report, out / "results.json")
    print(format_table(rows))
    return report


def format_table(rows: list[TargetRow]) -> str:
    """The table the benchmark prints: each figure beside its goal and the anchor."""
    return dekd_table(rows, ("figure", "goal", "ours", "anchor"), (90, 12, 78, 40))


def main(argv: list[str] | None = None) -> int:
    from coinfer.bench.script import bench_main

    return bench_main(argv, module=__name__, doc=__doc__, run=run_benchmark, default_out="runs/bench/dekd_shape",
                      quick_help="a few images and one epoch per stage, same real shapes")


if __name__ == "__main__":
    raise SystemExit(main())

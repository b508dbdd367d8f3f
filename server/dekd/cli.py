"""``coinfer teacher train|import`` and ``coinfer decompose``.

The train and decompose handlers only turn flags into the keyword arguments of their job
(:mod:`coinfer.server.dekd.jobs`), which a Python API calls the same way. Handlers import torch
only when they run, so ``coinfer --help`` stays fast. Every run also
works under torchrun (``torchrun --nproc_per_node 2 -m coinfer decompose ...``): each rank
trains its shard and rank 0 prints and writes.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

log = logging.getLogger(__name__)

def register(subparsers: argparse._SubParsersAction) -> None:
    from coinfer.core.device import DEVICE_CHOICES
    from coinfer.server.dekd.partition import PARTITION_METHODS
    from coinfer.server.dekd.teacher import PATCH_RULE, PRESETS, STEMS

    teacher = subparsers.add_parser("teacher", help="train or import the ViT teacher that DEKD decomposes")
    sub = teacher.add_subparsers(dest="teacher_command", metavar="ACTION", required=True)

    t = sub.add_parser("train", help="train a ViT teacher on a dataset (best validation epoch kept)")
    _add_data_args(t)
    t.add_argument("--arch", default=None, choices=sorted(PRESETS), help="teacher size (default vit-tiny)")
    t.add_argument("--out", type=Path, required=True, help="teacher folder to write")
    _add_budget_args(t)
    t.add_argument("--epochs", type=int, default=None, help="fixed training epochs instead of the budget")
    t.add_argument("--steps", type=int, default=None, help="fixed optimiser steps instead of the budget (at least one epoch's)")
    t.add_argument("--lr", type=float, default=None, help="peak learning rate (default: the recipe's, 1e-3)")
    t.add_argument("--batch-size", type=int, default=None, help="images per step over all processes (default 128)")
    t.add_argument("--patch-size", type=int, default=None, help=f"ViT patch side (default: {PATCH_RULE})")
    t.add_argument("--stem", default="patch", choices=STEMS,
                   help="patch: one patch-size convolution (default); conv: 3x3 stride-2 convolutions with batch norm, "
                        "then 1x1 (Xiao et al. 2021; on small images, the better teacher for a few percent more MACs)")
    t.add_argument("--embed-dim", type=int, default=None, help="override the preset's token width")
    t.add_argument("--depth", type=int, default=None, help="override the preset's number of blocks")
    t.add_argument("--num-heads", type=int, default=None, help="override the preset's heads per block")
    t.add_argument("--drop-path", type=float, default=0.1, help="stochastic depth rate (default 0.1)")
    t.add_argument("--seed", type=int, default=0, help="seed of the data split and training (default 0)")
    t.add_argument(
        "--device", default="cpu", choices=DEVICE_CHOICES,
        help="where the teacher trains (default cpu; auto: cuda when torch sees a GPU); the saved teacher is CPU tensors either way",
    )
    t.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    t.set_defaults(handler=_teacher_train)

    i = sub.add_parser("import", help="import a ViT state dict saved with timm's parameter names")
    i.add_argument("--from", dest="source", type=Path, required=True, help=".safetensors file, or a torch state dict (loaded with weights_only=True)")
    i.add_argument("--out", type=Path, required=True, help="teacher folder to write")
    i.add_argument("--num-heads", type=int, default=None, help="attention heads per block (default: width / 64, timm's convention)")
    i.add_argument("--dataset", default=None, help="dataset the teacher is for: checked against it and evaluated on its test split")
    i.add_argument("--data-dir", default=None, help="data path for the npz, imagefolder or fashion-mnist datasets")
    i.add_argument("--seed", type=int, default=0, help="seed of the data split (default 0)")
    i.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    i.set_defaults(handler=_teacher_import)

    d = subparsers.add_parser(
        "decompose",
        help="DEKD: decompose a ViT teacher into N device sub-models and a fusion head (a DeViT bundle)",
        description="Class partition, pruning to per-device budgets, sub-task distillation, ensemble "
        "training with device dropout, and a single-student baseline; writes BUNDLE and BUNDLE/report.json.",
    )
    d.add_argument("--teacher", type=Path, default=None, help="teacher folder (coinfer teacher train|import); default: train one first")
    _add_data_args(d)
    d.add_argument("--devices", type=int, default=4, help="number of devices N (default 4)")
    d.add_argument("--out", type=Path, required=True, help="bundle folder to write")
    d.add_argument(
        "--device-speeds", default=None,
        help="relative speeds s1,..,sN, or device profiles (names or coinfer.profile/1 JSON files; speed = 1 / local latency)",
    )
    d.add_argument(
        "--fleet", type=Path, default=None,
        help="speeds file of a live fleet (coinfer fleet --out FILE): size the sub-models for its devices' measured speeds",
    )
    d.add_argument("--partition", default="affinity", choices=PARTITION_METHODS, help="class partition (default affinity)")
    _add_budget_args(d)
    d.add_argument("--quick", action="store_true", help="the same as --budget quick (the demo path)")
    d.add_argument("--macs-ratio", type=float, default=None, help="fastest sub-model MACs / teacher MACs (default 0.12)")
    d.add_argument("--distill-epochs", type=int, default=None, help="fixed sub-task distillation epochs instead of the budget")
    d.add_argument("--ensemble-epochs", type=int, default=None, help="fixed ensemble training epochs instead of the budget")
    d.add_argument("--baseline-epochs", type=int, default=None,
                   help="fixed single-student epochs (default: the ensemble's training compute)")
    d.add_argument("--no-reference", action="store_true", help="skip the reference CNN trained beside the teacher")
    d.add_argument(
        "--device", default="cpu", choices=DEVICE_CHOICES,
        help="where importance scoring, the teacher's targets and every stage train (default cpu; auto: cuda when "
        "torch sees a GPU); evaluation, latency and the bundle are on the CPU",
    )
    d.add_argument("--no-baseline", action="store_true", help="skip the single-student baseline")
    d.add_argument(
        "--baseline-init", default="scratch", choices=("scratch", "pruned"),
        help="single student: a fresh compact ViT (default) or the teacher pruned to the same parameters",
    )
    d.add_argument("--seed", type=int, default=0, help="seed of the data split, partition and training (default 0)")
    d.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    d.set_defaults(handler=_decompose)


def _add_budget_args(p: argparse.ArgumentParser) -> None:
    from coinfer.server.dekd.recipes import BUDGET_NAMES

    p.add_argument(
        "--budget", default="default", choices=BUDGET_NAMES,
        help="training budget, in optimiser steps scaled to the training set's size (default: default; "
        "quick for a first look, thorough for the last points)",
    )
    p.add_argument(
        "--hflip", default=None, action=argparse.BooleanOptionalAction,
        help="random left-right flips (default: where the dataset allows them: Fashion-MNIST yes, digits and your own data no)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", default="digits", help="digits (default), fashion-mnist, npz or imagefolder")
    p.add_argument("--data-dir", default=None, help="data path for the npz, imagefolder or fashion-mnist datasets")
    p.add_argument(
        "--threads", type=int, default=None,
        help="torch threads for training (default: torch's choice; 1 is faster on a machine other jobs keep busy)",
    )


def _check_positive(name: str, value, kind=int) -> None:
    from coinfer.core.errors import InvalidInput

    if value is not None and (not isinstance(value, kind) or value <= 0):
        raise InvalidInput(f"{name} must be positive, got {value!r}")


def _teacher_train(args: argparse.Namespace) -> int:
    from coinfer.server.dekd.jobs import train_teacher_job

    run = train_teacher_job(
        out=args.out, dataset=args.dataset, data_dir=args.data_dir, arch=args.arch, budget=args.budget,
        epochs=args.epochs, steps=args.steps, lr=args.lr, batch_size=args.batch_size, patch_size=args.patch_size,
        stem=args.stem, embed_dim=args.embed_dim, depth=args.depth, num_heads=args.num_heads, drop_path=args.drop_path,
        hflip=args.hflip, seed=args.seed, device=args.device, threads=args.threads, overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    from coinfer.core.parallel import is_main

    if is_main():
        m, r = run.metadata, run.metadata["recipe"]
        stopped = "" if r["stopped_early_at_epoch"] is None else f", stopped early after epoch {r['stopped_early_at_epoch'] + 1}"
        print(f"teacher {m['arch']} on {m['dataset']}: val {m['val_accuracy']:.4f} (epoch {m['best_epoch'] + 1}), "
              f"test {m['test_accuracy']:.4f}, {m['params']:,} params, {m['macs']:,} MACs, patches {m['patch']}, stem {m['stem']}, trained on {m['train_device']} "
              f"({r['steps']} steps; {r['why']}{stopped}) -> {args.out}")
    return 0


def _teacher_import(args: argparse.Namespace) -> int:
    from coinfer.server.dekd.teacher import import_teacher

    model, meta = import_teacher(args.source, args.out, num_heads=args.num_heads, dataset=args.dataset, data_dir=args.data_dir,
                                 seed=args.seed, overwrite=args.overwrite)
    extra = f", test accuracy {meta['test_accuracy']:.4f} on {args.dataset}" if args.dataset else ""
    print(f"imported a {model.config.depth}-block ViT of width {model.config.embed_dim} ({model.num_params():,} params){extra} -> {args.out}")
    return 0


def _decompose(args: argparse.Namespace) -> int:
    from coinfer.server.dekd.jobs import decompose_job

    started = time.perf_counter()
    report = decompose_job(
        out=args.out, teacher=args.teacher, dataset=args.dataset, data_dir=args.data_dir, devices=args.devices,
        device_speeds=args.device_speeds, fleet=args.fleet, partition=args.partition, budget="quick" if args.quick else args.budget,
        macs_ratio=args.macs_ratio, distill_epochs=args.distill_epochs, ensemble_epochs=args.ensemble_epochs,
        baseline_epochs=args.baseline_epochs, baseline=not args.no_baseline, baseline_init=args.baseline_init,
        reference=not args.no_reference, hflip=args.hflip, seed=args.seed, device=args.device, threads=args.threads,
        overwrite=args.overwrite, progress=not args.no_progress,
    )
    if report is None:
        return 0
    print(summary(report))
    print(f"wrote {args.out} and {args.out / 'report.json'} in {time.perf_counter() - started:.0f} s")
    return 0


def summary(report) -> str:
    """A few lines a person reads after a run."""
    e, t, s = report.ensemble, report.teacher, report.single_student
    lines = [
        f"partition ({report.partition_method}): " + " | ".join(
            ",".join(report.class_names[c] for c in g) for g in report.partition
        ),
        f"teacher      acc {t.accuracy:.4f}  {t.params:,} params  {t.macs:,} MACs  {t.latency_ms:.3f} ms",
        f"ensemble     acc {e.accuracy:.4f}  {e.params:,} params  critical path {e.latency_ms:.3f} ms  "
        f"speedup {report.speedup:.2f}x  balance {e.latency_balance:.2f}",
        "missing one  acc " + ", ".join(f"{a:.4f}" for a in e.accuracy_missing_one),
    ]
    for d in e.devices:
        lines.append(
            f"  device {d.device}: {len(d.classes)} classes, speed {d.speed:.2f}, depth {d.depth}, heads {d.heads}, "
            f"{d.macs:,} MACs, {d.latency_ms:.3f} ms ({d.scaled_latency_ms:.3f} ms scaled), {d.payload_bytes} B/image"
        )
    if s is not None:
        lines.append(f"single student ({s.init}) acc {s.accuracy:.4f}  {s.params:,} params  {s.latency_ms:.3f} ms")
    if report.reference is not None:
        ref = report.reference
        lines.append(f"reference CNN ({ref.arch} x{ref.width_mult:g}) acc {ref.accuracy:.4f}  {ref.params:,} params  "
                     f"{ref.macs:,} MACs  {ref.latency_ms:.3f} ms")
    recipe = report.recipe
    if recipe:
        stages = recipe["stages"]
        ens = stages["ensemble"]
        lines.append(f"recipe: budget {recipe['budget']}, {recipe['train_images']:,} training images on {recipe['device']}"
                     f" x {recipe['processes']}; ensemble {ens['steps']} steps ({ens['why']})")
    lines.append("stage seconds: " + json.dumps(report.stage_seconds))
    return "\n".join(lines)

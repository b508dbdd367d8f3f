"""``coinfer teacher train|import`` and ``coinfer decompose``.

Handlers import torch only when they run, so ``coinfer --help`` stays fast. Every run also
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

QUICK_TEACHER = dict(arch="vit-nano", epochs=30, lr=3e-3, batch_size=32)
"""Teacher trained by ``decompose --quick`` without --teacher (the digits demo path)."""


def register(subparsers: argparse._SubParsersAction) -> None:
    from coinfer.core.device import DEVICE_CHOICES
    from coinfer.server.dekd.partition import PARTITION_METHODS
    from coinfer.server.dekd.teacher import PRESETS

    teacher = subparsers.add_parser("teacher", help="train or import the ViT teacher that DEKD decomposes")
    sub = teacher.add_subparsers(dest="teacher_command", metavar="ACTION", required=True)

    t = sub.add_parser("train", help="train a ViT teacher on a dataset (best validation epoch kept)")
    _add_data_args(t)
    t.add_argument("--arch", default="vit-tiny", choices=sorted(PRESETS), help="teacher size (default vit-tiny)")
    t.add_argument("--out", type=Path, required=True, help="teacher folder to write")
    t.add_argument("--epochs", type=int, default=10, help="training epochs (default 10)")
    t.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (default 1e-3)")
    t.add_argument("--batch-size", type=int, default=128, help="images per step (default 128)")
    t.add_argument("--patch-size", type=int, default=None, help="ViT patch side (default: image side / 4, or 16 from 64 px)")
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
    d.add_argument("--quick", action="store_true", help="few epochs everywhere: the demo path (digits: about a minute)")
    d.add_argument("--macs-ratio", type=float, default=None, help="fastest sub-model MACs / teacher MACs (default 0.12)")
    d.add_argument("--distill-epochs", type=int, default=None, help="override the sub-task distillation epochs")
    d.add_argument("--ensemble-epochs", type=int, default=None, help="override the ensemble training epochs")
    d.add_argument("--baseline-epochs", type=int, default=None, help="override the single-student epochs")
    d.add_argument("--no-baseline", action="store_true", help="skip the single-student baseline")
    d.add_argument(
        "--baseline-init", default="scratch", choices=("scratch", "pruned"),
        help="single student: a fresh compact ViT (default) or the teacher pruned to the same parameters",
    )
    d.add_argument("--seed", type=int, default=0, help="seed of the data split, partition and training (default 0)")
    d.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    d.set_defaults(handler=_decompose)


def _add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", default="digits", help="digits (default), fashion-mnist, npz or imagefolder")
    p.add_argument("--data-dir", default=None, help="data path for the npz, imagefolder or fashion-mnist datasets")
    p.add_argument(
        "--threads", type=int, default=None,
        help="torch threads for training (default: torch's choice; 1 is faster on a machine other jobs keep busy)",
    )


def _set_threads(threads: int | None) -> None:
    import torch

    _check_positive("--threads", threads)
    if threads is not None:
        torch.set_num_threads(threads)


def _check_positive(name: str, value, kind=int) -> None:
    from coinfer.core.errors import InvalidInput

    if value is not None and (not isinstance(value, kind) or value <= 0):
        raise InvalidInput(f"{name} must be positive, got {value!r}")


def _teacher_train(args: argparse.Namespace) -> int:
    import torch

    from coinfer.core.data import load_dataset
    from coinfer.core.device import resolve_device
    from coinfer.core.errors import InvalidInput
    from coinfer.core.training import TrainConfig, evaluate
    from coinfer.server.dekd.parallel import is_main, world
    from coinfer.server.dekd.teacher import save_teacher, teacher_config, train_teacher

    # First of all: cuda asked for on a machine without a GPU fails before anything is read or written.
    device = resolve_device(args.device)
    if device.type == "cpu":
        world()  # under torchrun: a gloo group, the tensors stay on the CPU
    # On a GPU, training creates the process group itself (nccl), one GPU per torchrun process.
    for name in ("epochs", "batch_size"):
        _check_positive(f"--{name.replace('_', '-')}", getattr(args, name))
    _set_threads(args.threads)
    _check_positive("--lr", args.lr, float)
    if args.out.exists() and not args.overwrite:
        raise InvalidInput(f"{args.out} already exists; choose another folder or pass --overwrite")
    splits = load_dataset(args.dataset, args.data_dir, seed=args.seed)
    config = teacher_config(
        args.arch, splits.image_shape, splits.num_classes, patch_size=args.patch_size,
        drop_path_rate=args.drop_path, embed_dim=args.embed_dim, depth=args.depth, num_heads=args.num_heads,
    )
    started = time.perf_counter()
    model, result = train_teacher(
        splits, config,
        TrainConfig(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, seed=args.seed, desc=f"teacher {args.arch}",
                    device=str(device)),
    )
    if not is_main():
        return 0
    test_acc = evaluate(model, splits.test)
    meta = {
        "dataset": splits.name,
        "class_names": list(splits.class_names),
        "image_shape": list(splits.image_shape),
        "arch": args.arch,
        "val_accuracy": result.best_val_accuracy,
        "test_accuracy": test_acc,
        "best_epoch": result.best_epoch,
        "val_accuracy_per_epoch": result.val_accuracy_per_epoch,
        "train_seconds": round(time.perf_counter() - started, 1),
        "train_device": str(device),
        "macs": model.macs(),
        "params": model.num_params(),
        "torch_version": torch.__version__,
    }
    save_teacher(model, args.out, meta, overwrite=args.overwrite)
    print(f"teacher {args.arch} on {splits.name}: val {result.best_val_accuracy:.4f} (epoch {result.best_epoch + 1}), "
          f"test {test_acc:.4f}, {model.num_params():,} params, {model.macs():,} MACs, trained on {device} -> {args.out}")
    return 0


def _teacher_import(args: argparse.Namespace) -> int:
    from coinfer.core.errors import InvalidInput
    from coinfer.core.training import evaluate
    from coinfer.server.dekd.teacher import check_compatible, import_timm_vit, save_teacher

    if args.out.exists() and not args.overwrite:
        raise InvalidInput(f"{args.out} already exists; choose another folder or pass --overwrite")
    _check_positive("--num-heads", args.num_heads)
    model = import_timm_vit(args.source, args.num_heads)
    meta = {"imported_from": str(args.source), "macs": model.macs(), "params": model.num_params()}
    if args.dataset:
        from coinfer.core.data import load_dataset

        splits = load_dataset(args.dataset, args.data_dir, seed=args.seed)
        check_compatible(model.config, splits)
        meta.update(dataset=splits.name, class_names=list(splits.class_names), image_shape=list(splits.image_shape),
                    test_accuracy=evaluate(model, splits.test))
    save_teacher(model, args.out, meta, overwrite=args.overwrite)
    extra = f", test accuracy {meta['test_accuracy']:.4f} on {args.dataset}" if args.dataset else ""
    print(f"imported a {model.config.depth}-block ViT of width {model.config.embed_dim} ({model.num_params():,} params){extra} -> {args.out}")
    return 0


def _decompose(args: argparse.Namespace) -> int:
    import torch

    from coinfer.core.data import load_dataset
    from coinfer.core.errors import InvalidInput
    from coinfer.core.training import TrainConfig
    from coinfer.server.dekd.config import preset
    from coinfer.server.dekd.parallel import is_main, world
    from coinfer.server.dekd.partition import check_group_count
    from coinfer.server.dekd.pipeline import decompose, validate
    from coinfer.server.dekd.speeds import fleet_speeds, parse_device_speeds
    from coinfer.server.dekd.teacher import check_compatible, load_teacher, teacher_config, train_teacher

    world()  # under torchrun: a gloo group, the tensors stay on the CPU
    # Cheap checks first: a bad request must fail before any data is read or model trained.
    if isinstance(args.devices, bool) or args.devices < 2:
        raise InvalidInput(f"--devices must be at least 2, got {args.devices}")
    if args.fleet is not None and args.device_speeds is not None:
        raise InvalidInput("give --device-speeds or --fleet, not both")
    speeds = fleet_speeds(args.fleet, args.devices) if args.fleet is not None else parse_device_speeds(args.device_speeds, args.devices)
    _set_threads(args.threads)
    for name in ("distill_epochs", "ensemble_epochs", "baseline_epochs"):
        _check_positive(f"--{name.replace('_', '-')}", getattr(args, name))
    if args.macs_ratio is not None and not 0 < args.macs_ratio <= 1:
        raise InvalidInput(f"--macs-ratio must be in (0, 1], got {args.macs_ratio}")
    if args.out.exists() and not args.overwrite:
        raise InvalidInput(f"{args.out} already exists; choose another folder or pass --overwrite")
    teacher, teacher_meta = (None, {}) if args.teacher is None else load_teacher(args.teacher)
    splits = load_dataset(args.dataset, args.data_dir, seed=args.seed)
    check_group_count(splits.num_classes, args.devices)
    if teacher is not None:
        check_compatible(teacher.config, splits)
        if teacher_meta.get("dataset") not in (None, splits.name):
            log.warning("the teacher was trained on %r, decomposing on %r", teacher_meta["dataset"], splits.name)
    config = preset(
        "quick" if args.quick else "default", num_devices=args.devices, partition=args.partition,
        device_speeds=tuple(speeds), seed=args.seed, baseline=not args.no_baseline, baseline_init=args.baseline_init,
    )
    if args.macs_ratio is not None:
        config.macs_ratio = args.macs_ratio
    for stage, value in (("distill", args.distill_epochs), ("ensemble", args.ensemble_epochs)):
        if value is not None:
            getattr(config, stage).loop.epochs = value
    if args.baseline_epochs is not None and config.baseline is not None:
        config.baseline.loop.epochs = args.baseline_epochs
    started = time.perf_counter()
    if teacher is None:
        q = QUICK_TEACHER if args.quick else dict(arch="vit-tiny", epochs=10, lr=1e-3, batch_size=128)
        if is_main():
            print(f"no --teacher: training a {q['arch']} teacher on {splits.name} first ({q['epochs']} epochs)")
        cfg = teacher_config(q["arch"], splits.image_shape, splits.num_classes, drop_path_rate=0.0 if args.quick else 0.1)
        teacher, _ = train_teacher(
            splits, cfg,
            TrainConfig(epochs=q["epochs"], lr=q["lr"], batch_size=q["batch_size"], warmup_epochs=2, seed=args.seed, desc="teacher"),
        )
    validate(teacher, splits, config, args.out, args.overwrite)
    torch.manual_seed(args.seed)
    report = decompose(teacher, splits, config, out=args.out, overwrite=args.overwrite,
                       metadata={"teacher_metadata": teacher_meta})
    if report is None or not is_main():
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
    lines.append("stage seconds: " + json.dumps(report.stage_seconds))
    return "\n".join(lines)

"""The two DEKD jobs as functions with typed keyword arguments: what ``coinfer teacher train`` and
``coinfer decompose`` run, and what a Python API calls.

Each checks everything it can before it reads data or trains (a GPU asked for and missing, bad
numbers, an existing output, a budget that cannot fit one epoch), trains with the recipe of
:mod:`coinfer.server.dekd.recipes` unless told otherwise, and writes its folder atomically at
the end. Under torchrun every process calls the same job; rank 0 writes and returns the result.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

from coinfer.core.errors import InvalidInput

log = logging.getLogger(__name__)


@dataclass
class TeacherRun:
    """What :func:`train_teacher_job` trained."""

    model: Any
    """The teacher (a VisionTransformer on the CPU, in evaluation mode, holding its best weights)."""
    metadata: dict[str, Any]
    """What the teacher folder records: dataset, accuracies, the recipe that ran and why, timing."""


def train_teacher_job(
    *,
    out: str | Path,
    dataset: str = "digits",
    data_dir: str | Path | None = None,
    arch: str | None = None,
    budget: str = "default",
    epochs: int | None = None,
    steps: int | None = None,
    lr: float | None = None,
    batch_size: int | None = None,
    patch_size: int | None = None,
    stem: str = "patch",
    embed_dim: int | None = None,
    depth: int | None = None,
    num_heads: int | None = None,
    drop_path: float = 0.1,
    hflip: bool | None = None,
    seed: int = 0,
    device: str = "cpu",
    threads: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> TeacherRun:
    """Train a ViT teacher on a dataset and write it as a teacher folder (``coinfer teacher train``).

    Args:
        out: the teacher folder to write.
        dataset: "digits", "fashion-mnist", "npz" or "imagefolder".
        data_dir: data path of the npz, imagefolder or fashion-mnist datasets.
        arch: teacher size (``coinfer.server.dekd.teacher.PRESETS``; default: the recipe's, vit-tiny).
        budget: "quick", "default" or "thorough": optimiser steps scaled to the training set's size
            (:class:`coinfer.core.training.Budget`); ``epochs`` or ``steps`` replace it.
        epochs: a fixed number of passes over the training images instead of the budget.
        steps: a fixed number of optimiser steps instead of the budget (at least one epoch's).
        lr: peak learning rate (default: the recipe's, 1e-3).
        batch_size: images per optimiser step over all processes (default: the recipe's, 128).
        patch_size: ViT patch side (default: ``teacher.PATCH_RULE``).
        stem: "patch" (the usual ViT) or "conv", a convolutional stem before the tokens
            (``teacher.conv_stem_channels``; docs/dekd-recipes.md has what it gains).
        embed_dim, depth, num_heads: override the preset's token width, blocks, heads per block.
        drop_path: stochastic depth rate.
        hflip: random left-right flips; None: where the dataset allows them (Fashion-MNIST yes,
            digits and unknown data no).
        seed: seed of the data split, the initial weights and training.
        device: "cpu", "cuda" (or "cuda:N") or "auto"; the saved teacher is CPU tensors either way.
        threads: torch threads (None: torch's choice).
        overwrite: replace ``out`` if it exists.
        progress: progress bars and one line per validation.

    Returns:
        The teacher and its metadata (on every rank; only rank 0 writes ``out``).
    """
    import torch

    from coinfer.core.data import load_dataset
    from coinfer.core.parallel import is_main, training_device, world
    from coinfer.core.training import evaluate, plan_steps
    from coinfer.server.dekd import teacher as teacher_module
    from coinfer.server.dekd.recipes import TEACHER_ARCH

    resolved = training_device(device)  # first of all: cuda without a GPU fails before anything is read
    world(resolved)
    _check_budget(budget)
    teacher_module.check_stem(stem)  # before the data is read
    arch = arch or TEACHER_ARCH
    _check_positive(epochs=epochs, steps=steps, batch_size=batch_size, threads=threads, patch_size=patch_size,
                    embed_dim=embed_dim, depth=depth, num_heads=num_heads)
    _check_positive_number(lr=lr)
    _check_free(out, overwrite)
    _set_threads(threads)
    splits = load_dataset(dataset, data_dir, seed=seed)
    train = replace(teacher_train_config(budget, splits, hflip, seed, str(resolved), progress, epochs, steps, lr, batch_size),
                    desc=f"teacher {arch}")
    plan_steps(train, len(splits.train), world()[1], whole_epoch=True)  # a budget that cannot fit one epoch fails here
    config = teacher_module.teacher_config(
        arch, splits.image_shape, splits.num_classes, patch_size=patch_size, drop_path_rate=drop_path,
        stem=stem, embed_dim=embed_dim, depth=depth, num_heads=num_heads,
    )
    started = time.perf_counter()
    model, result = teacher_module.train_teacher(splits, config, train)
    metadata = {
        "dataset": splits.name,
        "class_names": list(splits.class_names),
        "image_shape": list(splits.image_shape),
        "arch": arch,
        "patch": teacher_module.patch_choice(splits.image_shape[1], patch_size),
        "stem": teacher_module.stem_choice(config),
        "val_accuracy": result.best_val_accuracy,
        "test_accuracy": evaluate(model, splits.test),
        "best_epoch": result.best_epoch,
        "val_accuracy_per_epoch": result.val_accuracy_per_epoch,
        "recipe": result.recipe(train),
        "train_seconds": round(time.perf_counter() - started, 1),
        "train_device": str(resolved),
        "macs": model.macs(),
        "params": model.num_params(),
        "torch_version": torch.__version__,
    }
    if is_main():
        teacher_module.save_teacher(model, out, metadata, overwrite=overwrite)
    return TeacherRun(model, metadata)


def teacher_train_config(
    budget: str,
    splits,
    hflip: bool | None = None,
    seed: int = 0,
    device: str = "cpu",
    progress: bool = True,
    epochs: int | None = None,
    steps: int | None = None,
    lr: float | None = None,
    batch_size: int | None = None,
):
    """The teacher's TrainConfig for ``splits``: the recipe of ``budget`` (flips where the data
    allows them unless ``hflip`` says), with what the caller fixed on top."""
    from coinfer.core.data import mirror_safe
    from coinfer.server.dekd.recipes import teacher_recipe

    _check_budget(budget)
    flips = mirror_safe(splits.name) if hflip is None else hflip
    train = teacher_recipe(budget, hflip=flips, seed=seed, device=device, progress=progress)
    if epochs is not None:
        train = replace(train, epochs=epochs, budget=None)
    if steps is not None:
        train = replace(train, steps=steps, budget=None)
    if lr is not None:
        train = replace(train, lr=lr)
    if batch_size is not None:
        train = replace(train, batch_size=batch_size)
    return train


def decompose_job(
    *,
    out: str | Path,
    teacher: str | Path | None = None,
    dataset: str = "digits",
    data_dir: str | Path | None = None,
    devices: int = 4,
    device_speeds: str | Sequence[float] | None = None,
    fleet: str | Path | None = None,
    partition: str = "affinity",
    budget: str = "default",
    macs_ratio: float | None = None,
    distill_epochs: int | None = None,
    ensemble_epochs: int | None = None,
    baseline_epochs: int | None = None,
    baseline: bool = True,
    baseline_init: str = "scratch",
    reference: bool = True,
    hflip: bool | None = None,
    seed: int = 0,
    device: str = "cpu",
    threads: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
):
    """Decompose a ViT teacher into ``devices`` sub-models and a fusion head (``coinfer decompose``):
    a DeViT bundle at ``out`` with ``report.json``.

    Args:
        out: the bundle folder to write.
        teacher: a teacher folder (``coinfer teacher train|import``); None trains one first with
            the teacher recipe of the same budget.
        dataset: "digits", "fashion-mnist", "npz" or "imagefolder".
        data_dir: data path of the npz, imagefolder or fashion-mnist datasets.
        devices: N, the number of devices and sub-models (>= 2, at most the classes).
        device_speeds: relative speeds ("1,1,0.5,0.5", a list of numbers, or device profiles:
            names or coinfer.profile/1 JSON files; speed = 1 / local latency); None: identical devices.
        fleet: a speeds file of a live fleet (``coinfer fleet --out FILE``) instead of ``device_speeds``:
            the sub-models are sized for its devices' measured speeds.
        partition: "affinity" (confusable classes together) or "random" (DeViT's).
        budget: "quick", "default" or "thorough": every stage's optimiser steps scaled to its data
            (:mod:`coinfer.server.dekd.recipes`); the ``*_epochs`` arguments replace a stage's.
        macs_ratio: fastest sub-model's MACs / the teacher's (default 0.12).
        distill_epochs, ensemble_epochs: fixed epochs of sub-task distillation / ensemble training.
        baseline_epochs: fixed epochs of the single student (default: the ensemble's training compute).
        baseline: train the single-student baseline at the ensemble's parameters.
        baseline_init: "scratch" (a fresh compact ViT) or "pruned" (the teacher pruned to the budget).
        reference: train the reference CNN (a plain VGG11 at 1/4 width) with the teacher's recipe.
        hflip: random left-right flips in every stage; None: where the dataset allows them.
        seed: seed of the data split, partition and training.
        device: where importance scoring, the teacher's targets and every stage train: "cpu",
            "cuda" (or "cuda:N") or "auto". Evaluation, latency and the bundle are on the CPU.
        threads: torch threads (None: torch's choice).
        overwrite: replace ``out`` if it exists.
        progress: progress bars and one line per validation.

    Returns:
        The report (a :class:`coinfer.server.dekd.report.DEKDReport`) on rank 0, None on other ranks.
    """
    import torch

    from coinfer.core.data import load_dataset
    from coinfer.core.parallel import is_main, training_device, world
    from coinfer.server.dekd.partition import check_group_count
    from coinfer.server.dekd.pipeline import decompose, validate
    from coinfer.server.dekd.recipes import TEACHER_ARCH
    from coinfer.server.dekd.speeds import fleet_speeds, parse_device_speeds
    from coinfer.server.dekd import teacher as teacher_module

    resolved = training_device(device)  # first of all: cuda without a GPU fails before anything is read
    world(resolved)
    # Cheap checks first: a bad request must fail before any data is read or model trained.
    _check_budget(budget)
    if isinstance(devices, bool) or not isinstance(devices, int) or devices < 2:
        raise InvalidInput(f"--devices must be at least 2, got {devices}")
    if device_speeds is not None and not isinstance(device_speeds, str):
        device_speeds = ",".join(str(s) for s in device_speeds)
    if fleet is not None and device_speeds is not None:
        raise InvalidInput("give --device-speeds or --fleet, not both")
    speeds = fleet_speeds(fleet, devices) if fleet is not None else parse_device_speeds(device_speeds, devices)
    _check_positive(distill_epochs=distill_epochs, ensemble_epochs=ensemble_epochs, baseline_epochs=baseline_epochs,
                    threads=threads)
    if macs_ratio is not None and not 0 < macs_ratio <= 1:
        raise InvalidInput(f"--macs-ratio must be in (0, 1], got {macs_ratio}")
    _check_free(out, overwrite)
    _set_threads(threads)
    model, teacher_meta = (None, {}) if teacher is None else teacher_module.load_teacher(teacher)
    splits = load_dataset(dataset, data_dir, seed=seed)
    check_group_count(splits.num_classes, devices)
    if model is not None:
        teacher_module.check_compatible(model.config, splits)
        if teacher_meta.get("dataset") not in (None, splits.name):
            log.warning("the teacher was trained on %r, decomposing on %r", teacher_meta["dataset"], splits.name)
    teacher_train = teacher_train_config(budget, splits, hflip, seed, str(resolved), progress)
    config = decompose_config(
        splits, budget, devices=devices, partition=partition, device_speeds=tuple(speeds), baseline=baseline,
        baseline_init=baseline_init, reference=teacher_train if reference else None, hflip=hflip, seed=seed,
        device=str(resolved), progress=progress, macs_ratio=macs_ratio, distill_epochs=distill_epochs,
        ensemble_epochs=ensemble_epochs, baseline_epochs=baseline_epochs,
    )
    if model is None:
        from coinfer.core.models.vit import VisionTransformer
        from coinfer.core.training import plan_steps

        cfg = teacher_module.teacher_config(TEACHER_ARCH, splits.image_shape, splits.num_classes)
        plan_steps(teacher_train, len(splits.train), world()[1], whole_epoch=True)
        validate(VisionTransformer(cfg), splits, config, Path(out), overwrite)  # all of it, before the teacher trains
        if is_main():
            print(f"no teacher given: training a {TEACHER_ARCH} teacher on {splits.name} first (budget {budget})")
        model, result = teacher_module.train_teacher(splits, cfg, teacher_train)
        teacher_meta = {"dataset": splits.name, "arch": TEACHER_ARCH, "recipe": result.recipe(teacher_train)}
    torch.manual_seed(seed)
    return decompose(model, splits, config, out=out, overwrite=overwrite, metadata={"teacher_metadata": teacher_meta})


def decompose_config(
    splits,
    budget: str = "default",
    devices: int = 4,
    partition: str = "affinity",
    device_speeds: tuple[float, ...] | None = None,
    baseline: bool = True,
    baseline_init: str = "scratch",
    reference=None,
    hflip: bool | None = None,
    seed: int = 0,
    device: str = "cpu",
    progress: bool = True,
    macs_ratio: float | None = None,
    distill_epochs: int | None = None,
    ensemble_epochs: int | None = None,
    baseline_epochs: int | None = None,
):
    """The DecomposeConfig of :func:`decompose_job` for ``splits``: the preset of ``budget`` (flips
    where the data allows them unless ``hflip`` says), the reference CNN trained like ``reference``
    (the teacher's TrainConfig; None skips it), and the fixed epochs a caller gave on top."""
    from coinfer.core.data import mirror_safe
    from coinfer.server.dekd.config import preset
    from coinfer.server.dekd.recipes import reference_recipe

    config = preset(
        budget, num_devices=devices, partition=partition, device_speeds=device_speeds, seed=seed, progress=progress,
        baseline=baseline, baseline_init=baseline_init, hflip=mirror_safe(splits.name) if hflip is None else hflip,
        device=device, reference=None if reference is None else reference_recipe(reference),
    )
    if macs_ratio is not None:
        config.macs_ratio = macs_ratio
    for stage, value in (("distill", distill_epochs), ("ensemble", ensemble_epochs)):
        if value is not None:
            getattr(config, stage).loop.epochs, getattr(config, stage).loop.budget = value, None
    if baseline_epochs is not None and config.baseline is not None:
        config.baseline.loop.epochs, config.baseline.equal_compute = baseline_epochs, False
    return config


def _check_budget(budget: str) -> None:
    from coinfer.server.dekd.recipes import BUDGET_NAMES

    if budget not in BUDGET_NAMES:
        raise InvalidInput(f"unknown budget {budget!r}; valid: {', '.join(BUDGET_NAMES)}")


def _check_positive(**values) -> None:
    for name, value in values.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
            raise InvalidInput(f"--{name.replace('_', '-')} must be a positive integer, got {value!r}")


def _check_positive_number(**values) -> None:
    for name, value in values.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0):
            raise InvalidInput(f"--{name.replace('_', '-')} must be positive, got {value!r}")


def _check_free(out: str | Path, overwrite: bool) -> None:
    if Path(out).exists() and not overwrite:
        raise InvalidInput(f"{out} already exists; choose another folder or pass --overwrite")


def _set_threads(threads: int | None) -> None:
    if threads is not None:
        import torch

        torch.set_num_threads(threads)

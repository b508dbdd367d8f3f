"""The training recipes DEKD uses unless told otherwise, sized to the data.

A user names a budget (``quick``, ``default``, ``thorough``; :class:`coinfer.core.training.Budget`);
every stage resolves it to optimiser steps from its own training set: the named budget's epochs
at 4,000 images, scaled by sqrt(4000 / n), so a small set gets the many steps a ViT needs and a
large one fewer passes. Validation decides when to stop (``PATIENCE``) and which weights to keep.

What each stage gets of the budget, fixed before the benchmark was run:

* teacher and reference CNN: the whole budget over the training set;
* sub-task distillation: ``DISTILL_SCALE`` of the budget for each group's images (a group is 1/N
  of the data, so each sub-model sees its images more often than the teacher did);
* ensemble: ``ENSEMBLE_SCALE`` of the budget over the training set (the sub-models start
  distilled and the fusion head in closed form);
* single student: the ensemble's training compute, i.e. the distillation steps / N plus the
  ensemble steps (each sub-model is about 1/N of the student) — the comparison stays fair.

Augmentation is the same for all of them (teacher, reference, DEKD stages, student): random
shifts by up to 1/8 of the side, left-right flips where the data allows them
(:func:`coinfer.core.data.mirror_safe`: Fashion-MNIST yes, digits no, a user's data only when
asked), mixup 0.8 / cutmix 1.0 and label smoothing 0.1 as DeViT (DeiT's recipe). Augmented DEKD
stages run the teacher on every batch, since a shifted, flipped or mixed image has targets of
its own.
"""

from __future__ import annotations

from dataclasses import replace

from coinfer.core.training import BUDGETS, Budget, TrainConfig

BUDGET_NAMES = tuple(BUDGETS)
"""``--budget`` choices."""
TEACHER_ARCH = "vit-tiny"
"""The teacher ``coinfer teacher train`` (and ``decompose`` without a teacher) trains by default."""
REFERENCE_CNN = {"arch": "vgg11", "width_mult": 0.25}
"""The reference a user understands: a plain CNN (VGG11 with batch norm, a quarter of the width)."""
PATIENCE = 10
"""Validations without a better score before a stage stops early."""
DISTILL_SCALE = 0.5
"""Share of the named budget each sub-model's distillation gets (of its group's images)."""
ENSEMBLE_SCALE = 0.25
"""Share of the named budget the ensemble's joint training gets."""
MIXUP_ALPHA = 0.8
"""DeViT / DeiT's mixup."""
CUTMIX_ALPHA = 1.0
"""DeViT / DeiT's cutmix."""


def augmentation(hflip: bool) -> dict:
    """The augmentation fields every recipe shares; ``hflip`` where the data allows mirroring."""
    return dict(augment=True, hflip=hflip or None, mixup_alpha=MIXUP_ALPHA, cutmix_alpha=CUTMIX_ALPHA,
                label_smoothing=0.1)


def teacher_recipe(budget: str = "default", hflip: bool = False, seed: int = 0, device: str = "cpu",
                   progress: bool = True) -> TrainConfig:
    """How the teacher trains: the whole named budget, AdamW 1e-3 at batch 128, 5% warm-up, early stopping."""
    return TrainConfig(
        budget=Budget(budget), batch_size=128, lr=1e-3, weight_decay=0.05, warmup_fraction=0.05,
        patience=PATIENCE, seed=seed, device=device, progress=progress, desc="teacher", **augmentation(hflip),
    )


def reference_recipe(teacher: TrainConfig) -> TrainConfig:
    """The reference CNN trains like the teacher (same budget, batch, augmentation, stopping), at
    the learning rate a batch-normalised CNN takes."""
    return replace(teacher, lr=3e-3, desc="reference cnn")


def stage_loops(budget: str, hflip: bool, batch_size: int, seed: int, progress: bool, device: str = "cpu"):
    """The loops of sub-task distillation, the ensemble and the single student, in that order.

    The student's budget is set by the pipeline to the ensemble's training compute; its loop here
    carries the rest of its recipe. Pruned students start far from any optimum: a higher peak
    rate than DeViT's fine-tuning rates; the ensemble starts from a closed-form fusion and refines.
    """
    common = dict(batch_size=batch_size, warmup_fraction=0.05, patience=PATIENCE, seed=seed, progress=progress,
                  device=device, **augmentation(hflip))
    return (
        TrainConfig(budget=Budget(budget, DISTILL_SCALE), lr=3e-3, desc="distill", **common),
        TrainConfig(budget=Budget(budget, ENSEMBLE_SCALE), lr=1e-3, desc="ensemble", **common),
        TrainConfig(lr=2e-3, desc="single student", **common),
    )

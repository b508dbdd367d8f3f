"""The baseline DEKD must beat: one compact ViT with the ensemble's total parameters.

It is the single-model compression a user would otherwise pick, trained with vanilla knowledge
distillation, (1 - a) CE + a KD, on the full data. Two flavours (``BaselineConfig.init``):

* ``"scratch"`` (the issue's baseline): a dense compact ViT, the teacher's depth, patch size and
  MLP ratio at the width that fits the parameter budget, trained from scratch (DeiT-style KD);
* ``"pruned"``: the teacher pruned to the budget with DEKD's own importance machinery (on all
  classes), then the same KD. It shares the sub-models' head start from the teacher's
  weights, so the comparison isolates decomposition from initialisation.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from coinfer.core.errors import InvalidInput
from coinfer.core.measure import accuracy, predict
from coinfer.core.models.vit import ViTConfig
from coinfer.core.parallel import training_device
from coinfer.core.training import Batch, TrainConfig, TrainResult, train_loop
from coinfer.server.dekd.distill import kd_loss
from coinfer.server.dekd.targets import TeacherSignal, TeacherTargets, as_signal, batch_images, teacher_placed
from coinfer.server.dekd.prune import PrunePlan, UnitImportance, architecture_cost, plan_cost, plan_pruning


@dataclass
class BaselineConfig:
    """Schedule and loss of the single-student baseline."""

    loop: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=6, lr=1e-3, warmup_epochs=0.3, desc="single student"))
    """Batch size, learning rate, augmentation, label smoothing; the budget too when not ``equal_compute``."""
    equal_compute: bool = True
    """Train for the ensemble's training compute (distillation steps / N + ensemble steps), whatever
    the loop's own budget says; False: the loop's budget."""
    init: Literal["scratch", "pruned"] = "scratch"
    """A fresh dense compact ViT, or the teacher pruned to the budget."""
    alpha: float = 0.5
    """Weight a of the KD term; CE gets 1 - a."""
    kd_temperature: float = 1.0
    """Softmax temperature of the KD term."""

    def __post_init__(self) -> None:
        if self.init not in ("scratch", "pruned"):
            raise InvalidInput(f"baseline init must be 'scratch' or 'pruned', got {self.init!r}")


def compact_vit_config(teacher: ViTConfig, params_budget: int, head_width: int = 32) -> ViTConfig:
    """A dense ViT with the teacher's depth and patches, as wide as ``params_budget`` allows.

    The width steps by 8 at the teacher's MLP ratio (heads about ``head_width`` wide); then the
    MLP hidden width, the same in every block, grows to use what is left of the budget.
    """
    best = None
    for width in range(8, teacher.embed_dim * 2 + 1, 8):
        heads = max(1, width // head_width)
        while width % heads:
            heads -= 1
        cfg = replace(
            teacher, embed_dim=width, num_heads=heads, head_dim=None, block_heads=None, block_mlp_hidden=None,
            drop_path_rate=0.0,
        )
        if architecture_cost(cfg, "params") > params_budget:
            break
        best = cfg
    if best is None:
        raise InvalidInput(f"no compact ViT of depth {teacher.depth} fits {params_budget} parameters")
    hidden = best.mlp_hidden(0)
    spare = params_budget - architecture_cost(best, "params")
    hidden += spare // (best.depth * (2 * best.embed_dim + 1))  # each hidden unit: fc1 row + bias, fc2 column
    # +0.5 so that int(width * ratio) inside the config gives exactly `hidden`
    return replace(best, mlp_ratio=(hidden + 0.5) / best.embed_dim)


def single_student_plan(teacher: ViTConfig, importance: UnitImportance, params_budget: int) -> PrunePlan:
    """What the teacher keeps (heads, neurons, depth; head kept) to have about ``params_budget`` parameters."""
    if params_budget <= 0:
        raise InvalidInput(f"the single student needs a positive parameter budget, got {params_budget}")
    plan = plan_pruning(teacher, importance, params_budget, kind="params", num_classes=teacher.num_classes)
    if plan_cost(teacher, plan, "params", teacher.num_classes) > 1.05 * params_budget:
        raise InvalidInput(f"the smallest prunable student is larger than the budget of {params_budget} parameters")
    return plan


def train_single_student(
    student: nn.Module,
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    targets: TeacherTargets | TeacherSignal,
    x_val: torch.Tensor,
    y_val: torch.Tensor,
    config: BaselineConfig,
) -> TrainResult:
    """Vanilla KD on the full training set: ``targets`` holds the teacher's logits on ``x_train``
    (cached: the images train as they are), or is a signal running the teacher on every augmented batch."""
    signal = as_signal(targets)
    device = training_device(config.loop.device)
    signal = signal.to(device)
    x_train, y_train, x_val = x_train.to(device), y_train.to(device), x_val.to(device)
    a = config.alpha

    def loss_fn(module: nn.Module, batch: Batch) -> torch.Tensor:
        images = batch_images(signal, x_train[batch.index], config.loop, batch)
        teacher = signal(images.x, batch.index)
        logits = module(images.x)
        ce = images.mix(lambda y: F.cross_entropy(logits, y, label_smoothing=config.loop.label_smoothing), y_train[batch.index])
        return (1 - a) * ce + a * kd_loss(logits, teacher.logits, config.kd_temperature)

    def evaluate(module: nn.Module) -> float:
        return accuracy(predict(module, x_val), y_val.numpy()) if len(x_val) else 0.0

    with teacher_placed(signal, device):
        return train_loop(student, len(x_train), loss_fn, config.loop, evaluate)

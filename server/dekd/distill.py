"""Sub-task distillation: teach one pruned sub-model its group of classes (DeViT step 4).

    L = (1 - a) CE(student, y) + a KD(student, teacher restricted to the group)
        + g_q L_Q + g_k L_K + g_v L_V

on the group's images only (augmented, with the teacher run on each batch, when the recipe says so;
CE then weighs the two labels of a mixed image). L_X = KL(R_teacher || R_student) with R = softmax(X X^T / sqrt(d_head))
over tokens at the middle layer, X in {Q, K, V} with the heads concatenated: a T x T matrix for
any width or head count, which is how a narrow student learns from a wide teacher.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from coinfer.core.errors import InvalidInput
from coinfer.core.measure import accuracy, predict
from coinfer.core.models.vit import VisionTransformer
from coinfer.core.parallel import training_device
from coinfer.core.training import Batch, TrainConfig, TrainResult, train_loop
from coinfer.server.dekd.targets import (
    TeacherSignal,
    TeacherTargets,
    as_signal,
    batch_images,
    teacher_placed,
    token_relation,
)


@dataclass
class DistillConfig:
    """Loss weights and schedule of sub-task distillation."""

    loop: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=3, lr=1e-3, warmup_epochs=0.3, desc="distill"))
    """Budget, batch size, learning rate, warm-up and label smoothing (DeViT: 0.1)."""
    alpha: float = 0.5
    """Weight a of the KD term; CE gets 1 - a (DeViT: 0.5)."""
    gamma_q: float = 0.2
    """Weight of the query-relation loss (DeViT: 0.2)."""
    gamma_k: float = 0.1
    """Weight of the key-relation loss (DeViT: 0.1)."""
    gamma_v: float = 0.3
    """Weight of the value-relation loss (DeViT: 0.3)."""
    kd_temperature: float = 1.0
    """Softmax temperature of the KD term (the loss is scaled by its square)."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.alpha <= 1.0:
            raise InvalidInput(f"distill: alpha must be in [0, 1], got {self.alpha!r}")
        for name in ("gamma_q", "gamma_k", "gamma_v"):
            if getattr(self, name) < 0:
                raise InvalidInput(f"distill: {name} must be >= 0, got {getattr(self, name)!r}")
        if not self.kd_temperature > 0:
            raise InvalidInput(f"distill: kd_temperature must be positive, got {self.kd_temperature!r}")


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(softmax(t / T) || softmax(s / T)) x T^2, averaged over the batch."""
    return F.kl_div(
        F.log_softmax(student_logits / temperature, dim=-1),
        F.log_softmax(teacher_logits / temperature, dim=-1),
        reduction="batchmean",
        log_target=True,
    ) * (temperature**2)


def relation_kl(teacher_relation: torch.Tensor, student_x: torch.Tensor) -> torch.Tensor:
    """KL(R_teacher || R_student) per token row, averaged: teacher (B, T, T), student X (B, heads, T, hd)."""
    student_relation = token_relation(student_x)
    if student_relation.shape != teacher_relation.shape:
        raise InvalidInput(
            f"relation shapes differ: teacher {tuple(teacher_relation.shape)}, student {tuple(student_relation.shape)} "
            "(token counts must match)"
        )
    B, T, _ = student_relation.shape
    log_s = torch.log(student_relation.clamp_min(1e-8))
    return F.kl_div(log_s, teacher_relation.float(), reduction="sum") / (B * T)


def student_relation_layer(student: VisionTransformer) -> int:
    """The student block matched against the teacher's middle layer: its own middle (depth // 2)."""
    return student.config.depth // 2


class _TrainForward(nn.Module):
    """What DDP wraps: one forward that returns logits and the tapped (q, k, v)."""

    def __init__(self, student: VisionTransformer, layer: int) -> None:
        super().__init__()
        self.student = student
        self.layer = layer

    def forward(self, x: torch.Tensor):
        out = self.student.forward_with_qkv(x, [self.layer])
        q, k, v = out.qkv[self.layer]
        return out.logits, q, k, v


def distill_submodel(
    student: VisionTransformer,
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    targets: TeacherTargets | TeacherSignal,
    x_val: torch.Tensor,
    y_val: torch.Tensor,
    config: DistillConfig,
) -> TrainResult:
    """Train ``student`` on one group: ``y_*`` are group-local labels. ``targets`` are the teacher's
    outputs on ``x_train`` with logits restricted to the group's classes (cached: the images train
    as they are), or a signal running the teacher on every augmented batch (``classes`` = the group).

    Trains on ``config.loop.device``; the data moves there once.
    """
    signal = as_signal(targets)
    if signal.cached is not None:
        if signal.cached.relations is None:
            raise InvalidInput("sub-task distillation needs the teacher's token relations")
        if len(x_train) != len(signal.cached.logits):
            raise InvalidInput(f"distill: {len(x_train)} images but {len(signal.cached.logits)} teacher rows")
    if len(x_train) != len(y_train):
        raise InvalidInput(f"distill: {len(x_train)} images but {len(y_train)} labels")
    if student.config.block_heads is not None and student.config.block_heads[student_relation_layer(student)] == 0:
        raise InvalidInput("distill: the student's middle block has no attention head to match relations on")
    device = training_device(config.loop.device)
    signal = signal.to(device)
    x_train, y_train, x_val = x_train.to(device), y_train.to(device), x_val.to(device)
    wrapper = _TrainForward(student, student_relation_layer(student))
    a = config.alpha
    gammas = (config.gamma_q, config.gamma_k, config.gamma_v)

    def loss_fn(module: nn.Module, batch: Batch) -> torch.Tensor:
        images = batch_images(signal, x_train[batch.index], config.loop, batch)
        teacher = signal(images.x, batch.index, with_relations=True)
        logits, q, k, v = module(images.x)
        ce = images.mix(lambda y: F.cross_entropy(logits, y, label_smoothing=config.loop.label_smoothing), y_train[batch.index])
        loss = (1 - a) * ce + a * kd_loss(logits, teacher.logits, config.kd_temperature)
        for g, x, r in zip(gammas, (q, k, v), teacher.relations.unbind(dim=1)):
            if g:
                loss = loss + g * relation_kl(r, x)
        return loss

    def evaluate(module: nn.Module) -> float:
        return accuracy(predict(module.student, x_val), y_val.numpy()) if len(x_val) else 0.0

    with teacher_placed(signal, device):
        return train_loop(wrapper, len(x_train), loss_fn, config.loop, evaluate)


def group_rows(labels: torch.Tensor, classes: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(indices of the images whose label is in ``classes``, their labels re-numbered 0..len-1)."""
    size = max([int(labels.max()) if len(labels) else 0, *classes]) + 1
    lookup = torch.full((size,), -1, dtype=torch.long, device=labels.device)
    lookup[torch.tensor(list(classes), dtype=torch.long, device=labels.device)] = torch.arange(len(classes), device=labels.device)
    local = lookup[labels]
    index = torch.nonzero(local >= 0).flatten()
    return index, local[index]

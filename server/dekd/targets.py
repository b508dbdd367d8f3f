"""The teacher's outputs a distillation stage learns from: its logits, its final CLS token (the
ensemble's regression target) and its Q/K/V token relations at the middle layer (the sub-task
feature-matching target).

Two sources (:class:`TeacherSignal`): cached, computed once per training image
(:func:`compute_targets`) for stages that train on the images as they are; or online, the
teacher run on every augmented batch (a shifted, flipped or mixed image has its own targets),
which costs a teacher forward pass per step.

Relations are T x T per image whatever the width, kept as float16: a 17-token ViT costs about
1.7 kB per image for all three.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch
from tqdm.auto import tqdm

from coinfer.core.device import model_device
from coinfer.core.errors import InvalidInput
from coinfer.core.data import MixedImages
from coinfer.core.models.vit import VisionTransformer
from coinfer.core.parallel import gather_rows, shard_range, world
from coinfer.core.training import Batch, TrainConfig, augment_batch


@dataclass
class TeacherTargets:
    """Teacher outputs for one set of images, row i for image i."""

    logits: torch.Tensor
    """(n, num_classes) float32."""
    cls: torch.Tensor | None = None
    """(n, C) float32 final-normalised CLS token, when asked for."""
    relations: torch.Tensor | None = None
    """(n, 3, T, T) float16 softmax(X X^T / sqrt(head_dim)) for X = Q, K, V, when asked for."""

    def rows(self, index: torch.Tensor) -> "TeacherTargets":
        """The targets of images ``index``."""
        return TeacherTargets(
            logits=self.logits[index],
            cls=None if self.cls is None else self.cls[index],
            relations=None if self.relations is None else self.relations[index],
        )

    def to(self, device) -> "TeacherTargets":
        """The same targets on ``device``."""
        return TeacherTargets(
            logits=self.logits.to(device),
            cls=None if self.cls is None else self.cls.to(device),
            relations=None if self.relations is None else self.relations.to(device),
        )


@dataclass
class TeacherSignal:
    """Where a stage's teacher outputs come from: ``cached`` rows, or the ``teacher`` itself run on
    every batch the stage trains on (then the stage may augment its images)."""

    cached: TeacherTargets | None = None
    """Targets of every training image, row i for image i."""
    teacher: VisionTransformer | None = None
    """The teacher, in evaluation mode, on the training device (run without gradients)."""
    classes: list[int] | None = None
    """Restrict the online logits to these classes (a device's group); cached logits come restricted."""

    def __post_init__(self) -> None:
        if (self.cached is None) == (self.teacher is None):
            raise InvalidInput("a teacher signal is either cached targets or the teacher, not both or neither")

    @property
    def online(self) -> bool:
        """Whether the teacher runs on every batch (so the batch may be augmented)."""
        return self.teacher is not None

    def to(self, device) -> "TeacherSignal":
        """Cached targets moved to ``device`` (the online teacher is the caller's to place)."""
        return self if self.cached is None else TeacherSignal(cached=self.cached.to(device), classes=self.classes)

    def __call__(self, x: torch.Tensor, index: torch.Tensor, with_cls: bool = False,
                 with_relations: bool = False) -> TeacherTargets:
        """The targets of the images ``x`` (rows ``index`` of the training set)."""
        if self.cached is not None:
            return self.cached.rows(index)
        layer = relation_layer(self.teacher.config.depth)
        with torch.no_grad():
            out = self.teacher.forward_with_qkv(x, [layer] if with_relations else [])
        logits = out.logits.float()
        return TeacherTargets(
            logits=logits if self.classes is None else logits[:, self.classes],
            cls=out.cls_feature.float() if with_cls else None,
            relations=torch.stack([token_relation(t) for t in out.qkv[layer]], dim=1) if with_relations else None,
        )


def as_signal(targets: "TeacherTargets | TeacherSignal") -> TeacherSignal:
    """Cached targets as a signal; a signal as it is."""
    return targets if isinstance(targets, TeacherSignal) else TeacherSignal(cached=targets)


def batch_images(signal: TeacherSignal, x: torch.Tensor, loop: TrainConfig, batch: Batch) -> MixedImages:
    """A stage's images for one batch: augmented as ``loop`` says when the teacher runs online (it
    then sees the same augmented images), as they are when the targets are cached."""
    if signal.online:
        return augment_batch(x, loop, batch)
    return MixedImages(x, None, 1.0)


@contextmanager
def teacher_placed(signal: TeacherSignal, device: torch.device) -> Iterator[None]:
    """The online teacher on ``device`` while a stage trains, back where it was after."""
    if not signal.online or model_device(signal.teacher) == device:
        yield
        return
    home = model_device(signal.teacher)
    signal.teacher.to(device)
    try:
        yield
    finally:
        signal.teacher.to(home)


def token_relation(x: torch.Tensor) -> torch.Tensor:
    """softmax(X X^T / sqrt(head_dim)) over tokens for X given as (B, heads, T, head_dim).

    Heads are concatenated first (DeViT), so the result is (B, T, T) whatever the head count.
    """
    B, H, T, hd = x.shape
    flat = x.transpose(1, 2).reshape(B, T, H * hd)
    return torch.softmax(flat @ flat.transpose(1, 2) / hd**0.5, dim=-1)


def relation_layer(depth: int) -> int:
    """The 'middle layer' whose relations are matched: block depth // 2."""
    return depth // 2


@torch.no_grad()
def compute_targets(
    teacher: VisionTransformer,
    x: torch.Tensor,
    with_cls: bool = False,
    with_relations: bool = False,
    batch_size: int = 256,
    progress: bool = False,
    desc: str = "teacher targets",
    distributed: bool = True,
) -> TeacherTargets:
    """Run the teacher over float images ``x``; under torchrun each rank does a shard, all get all.

    The teacher runs where it is (batches of ``x`` go there); the targets come back on the CPU.
    ``distributed=False`` computes everything in this process (for work only rank 0 does).
    """
    rank, size = world() if distributed else (0, 1)
    lo, hi = shard_range(len(x), rank, size)
    layer = relation_layer(teacher.config.depth)
    device = model_device(teacher)
    teacher.eval()
    logits, cls, relations = [], [], []
    starts = range(lo, hi, batch_size)
    for start in tqdm(starts, desc=desc, disable=not progress or rank != 0, leave=False):
        xb = x[start : min(start + batch_size, hi)].to(device)
        out = teacher.forward_with_qkv(xb, [layer] if with_relations else [])
        logits.append(out.logits.float().cpu())
        if with_cls:
            cls.append(out.cls_feature.float().cpu())
        if with_relations:
            q, k, v = out.qkv[layer]
            relations.append(torch.stack([token_relation(t) for t in (q, k, v)], dim=1).half().cpu())
    C, T, K = teacher.config.embed_dim, teacher.config.num_tokens, teacher.config.num_classes

    def gather(local: torch.Tensor) -> torch.Tensor:
        return gather_rows(local, len(x)) if size > 1 else local

    result = TeacherTargets(logits=gather(torch.cat(logits) if logits else torch.zeros(0, K)))
    if with_cls:
        result.cls = gather(torch.cat(cls) if cls else torch.zeros(0, C))
    if with_relations:
        result.relations = gather(torch.cat(relations) if relations else torch.zeros(0, 3, T, T, dtype=torch.float16))
    return result

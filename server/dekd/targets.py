"""Teacher outputs computed once and reused by every distillation stage.

The teacher's forward pass costs several times a sub-model's; the students train for a few
epochs on un-augmented images, so the teacher is run once per image instead of once per step:
its logits, its final CLS token (the ensemble's regression target) and its Q/K/V token
relations at the middle layer (the sub-task feature-matching target).

Relations are T x T per image whatever the width, kept as float16: a 17-token ViT costs about
1.7 kB per image for all three.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from coinfer.core.models.vit import VisionTransformer
from coinfer.core.parallel import gather_rows, shard_range, world


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

    ``distributed=False`` computes everything in this process (for work only rank 0 does).
    """
    rank, size = world() if distributed else (0, 1)
    lo, hi = shard_range(len(x), rank, size)
    layer = relation_layer(teacher.config.depth)
    teacher.eval()
    logits, cls, relations = [], [], []
    starts = range(lo, hi, batch_size)
    for start in tqdm(starts, desc=desc, disable=not progress or rank != 0, leave=False):
        xb = x[start : min(start + batch_size, hi)]
        out = teacher.forward_with_qkv(xb, [layer] if with_relations else [])
        logits.append(out.logits.float())
        if with_cls:
            cls.append(out.cls_feature.float())
        if with_relations:
            q, k, v = out.qkv[layer]
            relations.append(torch.stack([token_relation(t) for t in (q, k, v)], dim=1).half())
    C, T, K = teacher.config.embed_dim, teacher.config.num_tokens, teacher.config.num_classes

    def gather(local: torch.Tensor) -> torch.Tensor:
        return gather_rows(local, len(x)) if size > 1 else local

    result = TeacherTargets(logits=gather(torch.cat(logits) if logits else torch.zeros(0, K)))
    if with_cls:
        result.cls = gather(torch.cat(cls) if cls else torch.zeros(0, C))
    if with_relations:
        result.relations = gather(torch.cat(relations) if relations else torch.zeros(0, 3, T, T, dtype=torch.float16))
    return result

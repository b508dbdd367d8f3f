"""Structured pruning of a ViT teacher into a sub-model: heads, MLP neurons and whole blocks.

1. :func:`unit_importance` scores every unit on the data the sub-model will specialise in:
   attention heads and MLP neurons by a first-order Taylor (Fisher) score, the squared gradient
   of the loss with respect to a gate on the unit, summed over batches; whole blocks by how much
   the loss rises when the block is replaced by its mean contribution. It also records the mean
   output of every unit and block, used to compensate what is removed.
2. :func:`plan_pruning` keeps, for a compute (MACs) or parameter budget, the most important
   blocks (the depth shrinks with the square root of the budget ratio, so depth and width share
   the reduction), at least one head per block, then units in order of importance relative to
   the average unit of their kind in their layer, while they fit; so attention and MLP shrink
   alike unless the importance says otherwise, and no layer is emptied by scale alone.
3. :func:`build_pruned_vit` copies the kept weights into a narrower ViT. Removed units are
   simply dropped: folding their mean output into biases lowered the loss before training but
   trained worse (a large constant in the residual stream swamps the little input-dependent
   signal a tiny sub-model keeps, once LayerNorm rescales it).

DeViT ranks units by HSIC and activation magnitude and searches per-layer ratios by validation
accuracy; the Taylor score ranks by the loss itself and needs one backward pass per batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from coinfer.core.device import model_device
from coinfer.core.errors import InvalidInput
from coinfer.core.models.vit import VisionTransformer, ViTConfig

CostKind = Literal["macs", "params"]

IMPORTANCE_ACTIVATION_BYTES = 2 << 30
"""Activations the importance pass may keep for its backward pass. Measured at 224 px, a ViT-S/16
keeps about 63 MiB per image: 8 GiB for a batch of 128, and a ViT-B/16 about twice as much."""


@dataclass
class UnitImportance:
    """Importance of every prunable unit of one ViT, on one set of images."""

    heads: np.ndarray
    """(depth, heads): Taylor score of each attention head."""
    neurons: list[np.ndarray]
    """Per block, (mlp_hidden,): Taylor score of each MLP neuron."""
    blocks: np.ndarray
    """(depth,): loss increase when the block is replaced by its mean contribution."""


@dataclass(frozen=True)
class PrunePlan:
    """Which parts of the teacher a sub-model keeps (indices into the teacher)."""

    blocks: tuple[int, ...]
    """Teacher blocks kept, in order."""
    heads: tuple[tuple[int, ...], ...]
    """Per kept block, the teacher heads kept."""
    neurons: tuple[tuple[int, ...], ...]
    """Per kept block, the teacher MLP neurons kept."""

    def config(self, teacher: ViTConfig, num_classes: int) -> ViTConfig:
        """The pruned architecture, with a head of ``num_classes`` (0: no head, CLS output)."""
        return replace(
            teacher,
            depth=len(self.blocks),
            num_classes=num_classes,
            head_dim=teacher.resolved_head_dim,
            block_heads=tuple(len(h) for h in self.heads),
            block_mlp_hidden=tuple(len(n) for n in self.neurons),
            drop_path_rate=0.0,
        )


def _embed(model: VisionTransformer, x: torch.Tensor) -> torch.Tensor:
    x = model.patch_embed(x)
    return torch.cat((model.cls_token.expand(x.shape[0], -1, -1), x), dim=1) + model.pos_embed


def _loss(logits: torch.Tensor, labels: torch.Tensor, classes: Sequence[int] | None) -> torch.Tensor:
    if classes is not None:
        logits = logits[:, list(classes)]
    return F.cross_entropy(logits, labels)


def unit_importance(
    model: VisionTransformer,
    x: torch.Tensor,
    labels: torch.Tensor,
    classes: Sequence[int] | None = None,
    batch_size: int = 128,
    block_samples: int = 512,
) -> UnitImportance:
    """Score heads, neurons and blocks of ``model`` on images ``x`` (float) with ``labels``.

    ``classes`` restricts the loss to those logits (a device's group); ``labels`` then index
    into ``classes``. The model's weights are not changed. Each batch's gradient is summed over
    micro-batches small enough for IMPORTANCE_ACTIVATION_BYTES (:func:`importance_batch_size`),
    so the scores are those of whole batches of ``batch_size`` whatever the image size. It runs
    where the model is (the images and labels go there); the scores come back as numpy arrays.
    """
    if len(x) == 0 or len(x) != len(labels):
        raise InvalidInput(f"importance needs images and as many labels, got {len(x)} and {len(labels)}")
    cfg = model.config
    D, H, hd = cfg.depth, cfg.num_heads, cfg.resolved_head_dim
    if cfg.block_heads is not None or cfg.block_mlp_hidden is not None:
        raise InvalidInput("importance is computed on an unpruned teacher ViT")
    micro = importance_batch_size(cfg, batch_size)
    was_training = model.training
    model.eval()
    device = model_device(model)
    x, labels = x.to(device), labels.to(device)
    head_gates = torch.ones(D, H, requires_grad=True, device=device)
    neuron_gates = [torch.ones(cfg.mlp_hidden(i), requires_grad=True, device=device) for i in range(D)]
    block_sum = [torch.zeros(cfg.num_tokens, cfg.embed_dim, device=device) for _ in range(D)]
    head_score = torch.zeros(D, H, device=device)
    neuron_score = [torch.zeros(cfg.mlp_hidden(i), device=device) for i in range(D)]
    hooks = []

    def gate_heads(i):
        def hook(module, inputs):
            (a,) = inputs
            return (a * head_gates[i].repeat_interleave(hd),)
        return hook

    def gate_neurons(i):
        def hook(module, inputs, output):
            return output * neuron_gates[i]
        return hook

    for i, blk in enumerate(model.blocks):
        hooks.append(blk.attn.proj.register_forward_pre_hook(gate_heads(i)))
        hooks.append(blk.mlp.act.register_forward_hook(gate_neurons(i)))
    requires = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        for start in range(0, len(x), batch_size):
            stop = min(start + batch_size, len(x))
            grads = [torch.zeros_like(g) for g in (head_gates, *neuron_gates)]
            for lo in range(start, stop, micro):
                xb, yb = x[lo : min(lo + micro, stop)], labels[lo : min(lo + micro, stop)]
                h = _embed(model, xb)
                for i, blk in enumerate(model.blocks):
                    out = blk(h)
                    block_sum[i].add_((out - h).detach().sum(dim=0))
                    h = out
                logits = model.head(model.norm(h)[:, 0])
                # The batch's mean loss, a micro-batch at a time.
                loss = _loss(logits, yb, classes) * (len(xb) / (stop - start))
                for total, g in zip(grads, torch.autograd.grad(loss, [head_gates, *neuron_gates])):
                    total += g
            head_score += grads[0] ** 2
            for i in range(D):
                neuron_score[i] += grads[1 + i] ** 2
    finally:
        for hook in hooks:
            hook.remove()
        for p, r in zip(model.parameters(), requires):
            p.requires_grad_(r)
    block_mean = [s / len(x) for s in block_sum]
    blocks = _block_scores(model, x[:block_samples], labels[:block_samples], classes, block_mean, micro)
    model.train(was_training)
    return UnitImportance(
        heads=head_score.cpu().numpy(),
        neurons=[s.cpu().numpy() for s in neuron_score],
        blocks=blocks,
    )


def importance_batch_size(cfg: ViTConfig, limit: int = 128) -> int:
    """Images per importance forward pass: at most ``limit``, and few enough that the activations
    kept for the backward pass (about 20 token vectors and one attention map per head, per block)
    fit IMPORTANCE_ACTIVATION_BYTES."""
    T, C = cfg.num_tokens, cfg.embed_dim
    per_image = cfg.depth * (20 * T * C + cfg.num_heads * T * T) * 4
    return max(1, min(limit, IMPORTANCE_ACTIVATION_BYTES // per_image))


@torch.no_grad()
def _block_scores(model, x, labels, classes, block_mean, batch_size) -> np.ndarray:
    """Loss increase when each block in turn is replaced by its mean contribution."""
    D = model.config.depth

    def loss_with(skip: int | None) -> float:
        total = 0.0
        for start in range(0, len(x), batch_size):
            h = _embed(model, x[start : start + batch_size])
            for i, blk in enumerate(model.blocks):
                h = h + block_mean[i] if i == skip else blk(h)
            logits = model.head(model.norm(h)[:, 0])
            total += float(_loss(logits, labels[start : start + batch_size], classes)) * len(h)
        return total / len(x)

    base = loss_with(None)
    return np.array([loss_with(i) - base for i in range(D)])


# Costs ---------------------------------------------------------------------------------------


def unit_costs(cfg: ViTConfig, kind: CostKind) -> tuple[int, int]:
    """(cost of one head, cost of one MLP neuron) in MACs per image or in parameters."""
    T, C, hd = cfg.num_tokens, cfg.embed_dim, cfg.resolved_head_dim
    if kind == "macs":
        return T * hd * (4 * C + 2 * T), 2 * T * C
    if kind == "params":
        return 4 * C * hd + (3 * hd if cfg.qkv_bias else 0), 2 * C + 1
    raise InvalidInput(f"cost kind must be 'macs' or 'params', got {kind!r}")


def architecture_cost(cfg: ViTConfig, kind: CostKind) -> int:
    """MACs per image or parameter count of an architecture (built on the meta device: free)."""
    with torch.device("meta"):
        model = VisionTransformer(cfg)
    return model.macs() if kind == "macs" else model.num_params()


def plan_cost(teacher: ViTConfig, plan: PrunePlan, kind: CostKind, num_classes: int = 0) -> int:
    """Cost of the sub-model a plan builds."""
    return architecture_cost(plan.config(teacher, num_classes), kind)


def default_depth(teacher: ViTConfig, ratio: float) -> int:
    """Blocks kept for a budget ``ratio`` of the full cost: depth x sqrt(ratio), at least 1."""
    return max(1, min(teacher.depth, round(teacher.depth * math.sqrt(max(ratio, 0.0)))))


def plan_pruning(
    teacher: ViTConfig,
    importance: UnitImportance,
    budget: float,
    kind: CostKind = "macs",
    num_classes: int = 0,
    depth: int | None = None,
) -> PrunePlan:
    """The most important units of ``teacher`` that fit ``budget`` (MACs or parameters).

    ``num_classes`` is the head the pruned model will carry (0 for a deployed sub-model). When the
    budget cannot hold even one head per kept block, the smallest such model is returned (its
    cost is then above the budget; :func:`plan_cost` tells).
    """
    if not budget > 0:
        raise InvalidInput(f"a pruning budget must be positive, got {budget!r}")
    full = architecture_cost(replace(teacher, num_classes=num_classes), kind)
    ratio = budget / full
    if depth is None:
        depth = default_depth(teacher, ratio)
    if not 1 <= depth <= teacher.depth:
        raise InvalidInput(f"depth must be in 1..{teacher.depth}, got {depth}")
    blocks = tuple(sorted(np.argsort(-importance.blocks, kind="stable")[:depth].tolist()))
    head_cost, neuron_cost = unit_costs(teacher, kind)
    empty = PrunePlan(blocks, tuple(() for _ in blocks), tuple(() for _ in blocks))
    spent = architecture_cost(empty.config(teacher, num_classes), kind)
    heads: list[list[int]] = []
    neurons: list[list[int]] = [[] for _ in blocks]
    candidates: list[tuple[float, int, str, int]] = []
    for slot, b in enumerate(blocks):
        hs = importance.heads[b]
        ns = importance.neurons[b]
        # Every kept block keeps its best head: without attention the CLS token sees no patch.
        best = int(np.argmax(hs))
        heads.append([best])
        spent += head_cost
        # Importance relative to the layer's average unit of the same kind: raw Taylor scores
        # differ in scale between layers and between heads and neurons, relative ones do not.
        h_rel = hs / (hs.mean() + 1e-30)
        n_rel = ns / (ns.mean() + 1e-30)
        candidates += [(float(h_rel[h]), slot, "head", h) for h in range(len(hs)) if h != best]
        candidates += [(float(n_rel[n]), slot, "neuron", n) for n in range(len(ns))]
    candidates.sort(key=lambda c: (-c[0], c[1], c[2], c[3]))
    for _, slot, what, unit in candidates:
        cost = head_cost if what == "head" else neuron_cost
        if spent + cost > budget:
            continue
        spent += cost
        (heads if what == "head" else neurons)[slot].append(unit)
    return PrunePlan(blocks, tuple(tuple(sorted(h)) for h in heads), tuple(tuple(sorted(n)) for n in neurons))


# Building ------------------------------------------------------------------------------------


@torch.no_grad()
def build_pruned_vit(
    teacher: VisionTransformer,
    plan: PrunePlan,
    classes: Sequence[int] | None = None,
    with_head: bool = True,
) -> VisionTransformer:
    """A ViT holding the teacher's kept weights (evaluation mode).

    ``classes`` selects the head rows (a device's group; None keeps every class); ``with_head``
    False gives a model without head (it outputs the CLS feature).
    """
    tcfg = teacher.config
    hd = tcfg.resolved_head_dim
    num_classes = 0 if not with_head else (len(classes) if classes is not None else tcfg.num_classes)
    model = VisionTransformer(plan.config(tcfg, num_classes))
    src = teacher.state_dict()
    dst = model.state_dict()  # shares storage with the model: copying into it fills the model
    shared = [k for k in dst if k.startswith("patch_embed.")]  # the projection and any conv stem, whole
    for name in ("cls_token", "pos_embed", *shared, "norm.weight", "norm.bias"):
        dst[name].copy_(src[name])
    if with_head:
        rows = list(classes) if classes is not None else list(range(tcfg.num_classes))
        dst["head.weight"].copy_(src["head.weight"][rows])
        dst["head.bias"].copy_(src["head.bias"][rows])
    for slot, b in enumerate(plan.blocks):
        s, d = f"blocks.{b}.", f"blocks.{slot}."
        for name in ("norm1.weight", "norm1.bias", "norm2.weight", "norm2.bias", "attn.proj.bias", "mlp.fc2.bias"):
            dst[d + name].copy_(src[s + name])
        channels = torch.tensor([h * hd + j for h in plan.heads[slot] for j in range(hd)], dtype=torch.long)
        qkv_rows = torch.cat([part * tcfg.num_heads * hd + channels for part in range(3)])
        dst[d + "attn.qkv.weight"].copy_(src[s + "attn.qkv.weight"][qkv_rows])
        if tcfg.qkv_bias:
            dst[d + "attn.qkv.bias"].copy_(src[s + "attn.qkv.bias"][qkv_rows])
        dst[d + "attn.proj.weight"].copy_(src[s + "attn.proj.weight"][:, channels])
        kept = torch.tensor(plan.neurons[slot], dtype=torch.long)
        dst[d + "mlp.fc1.weight"].copy_(src[s + "mlp.fc1.weight"][kept])
        dst[d + "mlp.fc1.bias"].copy_(src[s + "mlp.fc1.bias"][kept])
        dst[d + "mlp.fc2.weight"].copy_(src[s + "mlp.fc2.weight"][:, kept])
    return model.eval()

"""Vision Transformer in plain torch, laid out like timm's ``vision_transformer.py``.

Parameter names are timm's (``cls_token``, ``pos_embed``, ``patch_embed.proj``,
``blocks.{i}.norm1/attn.qkv/attn.proj/norm2/mlp.fc1/mlp.fc2``, ``norm``, ``head``), so a timm
ViT state dict with class-token pooling loads 1:1. Optional parts are ``nn.Identity`` so the
forward passes read straight through.

Two additions serve DeViT/DEKD:

* structured pruning: ``block_heads`` and ``block_mlp_hidden`` give every block its own head
  count and MLP width (0 removes the branch; what remains of it is the output bias, exactly as
  in the unpruned network), and the attention inner width ``heads * head_dim`` may differ from
  the embedding width;
* a distillation tap: :meth:`VisionTransformer.forward_with_qkv` also returns Q, K and V of the
  requested blocks, shaped (B, heads, tokens, head_dim).

As a split backbone the ViT's candidate points sit after blocks ceil(i * depth / 4), i = 1..4
(for depth 12: after blocks 3, 6, 9 and 12); the feature there is the token tensor (B, 1+N, C).
Stage 0 also holds the patch embedding, stage 4 the final norm and the head.

``stem_channels`` replaces the patchify convolution with a small convolutional stem
(``patch_embed.stem``, Xiao et al. 2021, "Early convolutions help transformers see better"):
on small images and small data it trains the better ViT for a few percent more MACs.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from coinfer.core.errors import InvalidInput
from coinfer.core.models._config import check_positive_int
from coinfer.core.models.splittable import NUM_STAGES, SplittableModel, StageSpec

_WHAT = "vit"


@dataclass(frozen=True)
class ViTConfig:
    """Architecture of one Vision Transformer (class-token pooling, pre-norm blocks)."""

    image_size: int = 224
    """Height and width of the square input image, in pixels."""
    in_chans: int = 3
    """Channels of the input image."""
    patch_size: int = 16
    """Side of the square patches; must divide image_size."""
    embed_dim: int = 768
    """Token width C."""
    depth: int = 12
    """Number of transformer blocks."""
    num_heads: int = 12
    """Attention heads per block, unless block_heads overrides them."""
    mlp_ratio: float = 4.0
    """MLP hidden width as a multiple of embed_dim, unless block_mlp_hidden overrides it."""
    num_classes: int = 1000
    """Classes of the linear head; 0 makes the head an identity (the model outputs its CLS feature)."""
    qkv_bias: bool = True
    """Whether the qkv projection has a bias."""
    drop_path_rate: float = 0.0
    """Stochastic-depth rate of the last block; earlier blocks get linearly smaller rates."""
    head_dim: int | None = None
    """Width of one attention head; None means embed_dim // num_heads."""
    block_heads: tuple[int, ...] | None = None
    """Heads kept in each block (length depth, entries >= 0) after pruning; None keeps num_heads."""
    block_mlp_hidden: tuple[int, ...] | None = None
    """MLP hidden width of each block (length depth, entries >= 0) after pruning; None uses mlp_ratio."""
    stem_channels: tuple[int, ...] | None = None
    """A convolutional stem (Xiao et al. 2021): 3 x 3 convolutions of stride 2 with these output
    channels, each with batch norm and ReLU, halving the image until it is the patch grid, then a
    1 x 1 projection to the tokens. None: the usual patchify (one patch_size convolution)."""

    def __post_init__(self) -> None:
        # JSON gives lists; a frozen config keeps tuples so it stays hashable.
        for name in ("block_heads", "block_mlp_hidden", "stem_channels"):
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
        for name in ("image_size", "in_chans", "patch_size", "embed_dim", "depth", "num_heads"):
            check_positive_int(_WHAT, name, getattr(self, name))
        check_positive_int(_WHAT, "num_classes", self.num_classes, minimum=0)
        if self.image_size % self.patch_size:
            raise InvalidInput(
                f"{_WHAT}: image_size {self.image_size} is not divisible by patch_size {self.patch_size}"
            )
        if isinstance(self.mlp_ratio, bool) or not isinstance(self.mlp_ratio, (int, float)) or self.mlp_ratio <= 0:
            raise InvalidInput(f"{_WHAT}: mlp_ratio must be a positive number, got {self.mlp_ratio!r}")
        if not isinstance(self.qkv_bias, bool):
            raise InvalidInput(f"{_WHAT}: qkv_bias must be true or false, got {self.qkv_bias!r}")
        if (
            isinstance(self.drop_path_rate, bool)
            or not isinstance(self.drop_path_rate, (int, float))
            or not 0.0 <= self.drop_path_rate < 1.0
        ):
            raise InvalidInput(f"{_WHAT}: drop_path_rate must be in [0, 1), got {self.drop_path_rate!r}")
        if self.head_dim is None:
            if self.embed_dim % self.num_heads:
                raise InvalidInput(
                    f"{_WHAT}: embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}; "
                    "set head_dim explicitly"
                )
        else:
            check_positive_int(_WHAT, "head_dim", self.head_dim)
        for name in ("block_heads", "block_mlp_hidden"):
            value = getattr(self, name)
            if value is None:
                continue
            if not isinstance(value, tuple) or len(value) != self.depth:
                raise InvalidInput(f"{_WHAT}: {name} must list one integer per block ({self.depth}), got {value!r}")
            for i, v in enumerate(value):
                check_positive_int(_WHAT, f"{name}[{i}]", v, minimum=0)
        if self.stem_channels is not None:
            self._check_stem()

    def _check_stem(self) -> None:
        stem = self.stem_channels
        if not isinstance(stem, tuple) or not stem:
            raise InvalidInput(f"{_WHAT}: stem_channels must list one or more channel counts, got {stem!r}")
        for i, v in enumerate(stem):
            check_positive_int(_WHAT, f"stem_channels[{i}]", v)
        grid, reached = self.image_size // self.patch_size, stem_grid(self.image_size, len(stem))
        if reached != grid:
            fitting = stem_depth(self.image_size, self.patch_size)
            raise InvalidInput(
                f"{_WHAT}: a stem of {len(stem)} stride-2 convolutions turns {self.image_size} px into "
                f"{reached} x {reached}, not the {grid} x {grid} patch grid of patch_size {self.patch_size}"
                + (f"; {fitting} convolutions would" if fitting else "")
            )

    @property
    def num_patches(self) -> int:
        """Patches per image, N."""
        return (self.image_size // self.patch_size) ** 2

    @property
    def num_tokens(self) -> int:
        """Tokens per image including the class token, 1 + N."""
        return 1 + self.num_patches

    @property
    def resolved_head_dim(self) -> int:
        """Width of one head."""
        return self.head_dim if self.head_dim is not None else self.embed_dim // self.num_heads

    def heads(self, block: int) -> int:
        """Heads of block ``block``."""
        return self.block_heads[block] if self.block_heads is not None else self.num_heads

    def mlp_hidden(self, block: int) -> int:
        """MLP hidden width of block ``block``."""
        if self.block_mlp_hidden is not None:
            return self.block_mlp_hidden[block]
        return int(self.embed_dim * self.mlp_ratio)

    def split_blocks(self) -> tuple[int, ...]:
        """Blocks run before each candidate point: ceil(i * depth / 4) for i = 1..4."""
        return tuple(-(-i * self.depth // 4) for i in range(1, 5))


@dataclass
class ViTOutput:
    """What the distillation tap returns."""

    logits: torch.Tensor
    """Head output (B, num_classes); the CLS feature itself when num_classes is 0."""
    cls_feature: torch.Tensor
    """Final-normalised CLS token (B, C)."""
    qkv: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    """Block index -> (q, k, v), each (B, heads, tokens, head_dim)."""


def _linear(in_features: int, out_features: int, bias: bool = True) -> nn.Linear:
    """nn.Linear that may be empty (a pruned-away branch) without torch warning about it."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Initializing zero-element tensors")
        return nn.Linear(in_features, out_features, bias=bias)


class DropPath(nn.Module):
    """Stochastic depth: drop a residual branch for whole samples while training."""

    def __init__(self, rate: float) -> None:
        super().__init__()
        self.rate = rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"rate={self.rate}"


def stem_grid(image_size: int, convolutions: int) -> int:
    """Side of the feature map after ``convolutions`` 3 x 3 convolutions of stride 2 and padding 1."""
    for _ in range(convolutions):
        image_size = (image_size + 1) // 2
    return image_size


def stem_depth(image_size: int, patch_size: int) -> int | None:
    """How many stride-2 convolutions make the patch grid of ``patch_size`` (None where none does)."""
    grid, k = image_size // patch_size, 0
    while stem_grid(image_size, k) > grid:
        k += 1
    return k if k and stem_grid(image_size, k) == grid else None


class PatchEmbed(nn.Module):
    """Image to patch tokens, (B, C_in, H, W) -> (B, N, C): one strided convolution, or a
    convolutional stem and a 1 x 1 projection (``stem_channels``)."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int,
                 stem_channels: tuple[int, ...] | None = None) -> None:
        super().__init__()
        if stem_channels:
            layers: list[nn.Module] = []
            for channels in stem_channels:
                layers += [nn.Conv2d(in_chans, channels, 3, stride=2, padding=1, bias=False),
                           nn.BatchNorm2d(channels), nn.ReLU()]
                in_chans = channels
            self.stem = nn.Sequential(*layers)
            self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=1)
        else:
            self.stem = nn.Identity()
            self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(self.stem(x)).flatten(2).transpose(1, 2))


class Attention(nn.Module):
    """Multi-head self-attention whose inner width (heads x head_dim) may differ from C."""

    def __init__(self, dim: int, num_heads: int, head_dim: int, qkv_bias: bool = True) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.scale = head_dim**-0.5
        inner = num_heads * head_dim
        self.qkv = _linear(dim, 3 * inner, bias=qkv_bias)
        self.proj = _linear(inner, dim)

    def _qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        B, N, _ = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return qkv[0], qkv[1], qkv[2]

    def _mix(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        B, _, N, _ = q.shape
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(B, N, self.num_heads * self.head_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._mix(*self._qkv(x))

    def forward_with_qkv(
        self, x: torch.Tensor
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Output and the (q, k, v) it was computed from, each (B, heads, tokens, head_dim)."""
        q, k, v = self._qkv(x)
        return self._mix(q, k, v), (q, k, v)

    def extra_macs(self, inputs: tuple, output: torch.Tensor) -> int:
        """q @ k^T and attn @ v, which have no layer of their own (read by count_macs)."""
        B, N, _ = inputs[0].shape
        return 2 * B * self.num_heads * N * N * self.head_dim


class Mlp(nn.Module):
    """Two linear layers with GELU between; hidden may be 0 (a fully pruned MLP)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = _linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = _linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm1(x)), then x + mlp(norm2(x))."""

    def __init__(
        self, dim: int, num_heads: int, head_dim: int, mlp_hidden: int, qkv_bias: bool, drop_path: float
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, head_dim, qkv_bias)
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, mlp_hidden)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path1(self.attn(self.norm1(x)))
        return x + self.drop_path2(self.mlp(self.norm2(x)))

    def forward_with_qkv(
        self, x: torch.Tensor
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Block output and the attention's (q, k, v)."""
        a, qkv = self.attn.forward_with_qkv(self.norm1(x))
        x = x + self.drop_path1(a)
        return x + self.drop_path2(self.mlp(self.norm2(x))), qkv


# Stage functions: they take any holder of the timm-named parts (the model or a segment).


def _embed(holder: nn.Module, x: torch.Tensor) -> torch.Tensor:
    x = holder.patch_embed(x)
    cls = holder.cls_token.expand(x.shape[0], -1, -1)
    return torch.cat((cls, x), dim=1) + holder.pos_embed


def _blocks(holder: nn.Module, x: torch.Tensor, indices: tuple[int, ...], embed: bool) -> torch.Tensor:
    if embed:
        x = _embed(holder, x)
    for i in indices:
        x = holder.get_submodule(f"blocks.{i}")(x)
    return x


def _pool_head(holder: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return holder.head(holder.norm(x)[:, 0])


class VisionTransformer(SplittableModel):
    """ViT with class-token pooling; see the module docstring for names, pruning and split points."""

    arch = "vit"
    config_class = ViTConfig

    def __init__(self, config: ViTConfig | None = None) -> None:
        super().__init__()
        cfg = config if config is not None else ViTConfig()
        if not isinstance(cfg, ViTConfig):
            raise InvalidInput(f"VisionTransformer needs a ViTConfig, got {type(cfg).__name__}")
        self.config = cfg
        C, hd = cfg.embed_dim, cfg.resolved_head_dim
        self.patch_embed = PatchEmbed(cfg.patch_size, cfg.in_chans, C, cfg.stem_channels)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, C))
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.num_tokens, C))
        rates = [cfg.drop_path_rate * i / max(cfg.depth - 1, 1) for i in range(cfg.depth)]
        self.blocks = nn.ModuleList(
            Block(C, cfg.heads(i), hd, cfg.mlp_hidden(i), cfg.qkv_bias, rates[i]) for i in range(cfg.depth)
        )
        self.norm = nn.LayerNorm(C, eps=1e-6)
        self.head = nn.Linear(C, cfg.num_classes) if cfg.num_classes > 0 else nn.Identity()
        self._init_weights()

        ends = cfg.split_blocks()
        starts = (0,) + ends[:-1]
        specs = []
        for s, (lo, hi) in enumerate(zip(starts, ends)):
            embed = s == 0
            parts = (("cls_token", "pos_embed", "patch_embed") if embed else ()) + tuple(
                f"blocks.{i}" for i in range(lo, hi)
            )
            specs.append(StageSpec(parts, partial(_blocks, indices=tuple(range(lo, hi)), embed=embed)))
        specs.append(StageSpec(("norm", "head"), _pool_head))
        names = ("input", *(f"blocks.{b - 1}" for b in ends), "local")
        self._init_split(names, tuple(specs))

    def _init_weights(self) -> None:
        # timm's defaults: truncated normal for weights and position embedding, tiny CLS token.
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        w = self.patch_embed.proj.weight
        nn.init.trunc_normal_(w, std=math.sqrt(1.0 / max(w[0].numel(), 1)))
        nn.init.zeros_(self.patch_embed.proj.bias)

    @property
    def embed_dim(self) -> int:
        """Token width C (also the width of the CLS feature)."""
        return self.config.embed_dim

    # timm-style forward -------------------------------------------------------------------

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Tokens after the final norm, (B, 1 + N, C)."""
        x = _embed(self, x)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)

    def forward_head(  # type: ignore[override]
        self, x: torch.Tensor, point: int | str | None = None, *, pre_logits: bool = False
    ) -> torch.Tensor:
        """Two uses, told apart by ``point``.

        * ``forward_head(tokens, pre_logits=False)`` (timm): head on normalised tokens from
          :meth:`forward_features`; ``pre_logits=True`` returns the CLS feature (B, C).
        * ``forward_head(x, point)`` (split interface): the feature at split ``point``.
        """
        if point is not None:
            if pre_logits:
                raise InvalidInput("pre_logits applies to forward_head(tokens), not to a split point")
            return super().forward_head(x, point)
        cls = x[:, 0]
        return cls if pre_logits else self.head(cls)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, num_classes), or the CLS feature (B, C) when num_classes is 0."""
        return self.forward_head(self.forward_features(x))

    def forward_cls(self, x: torch.Tensor) -> torch.Tensor:
        """Final-normalised CLS feature (B, C): what a DeViT device sends to the fusion head."""
        return self.forward_head(self.forward_features(x), pre_logits=True)

    def forward_with_qkv(self, x: torch.Tensor, layers: Iterable[int]) -> ViTOutput:
        """Logits, CLS feature and the (q, k, v) of each block in ``layers`` (the DEKD tap)."""
        wanted = set()
        for layer in layers:
            if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < self.config.depth:
                raise InvalidInput(f"layer must be a block index in 0..{self.config.depth - 1}, got {layer!r}")
            wanted.add(layer)
        qkv: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        x = _embed(self, x)
        for i, blk in enumerate(self.blocks):
            if i in wanted:
                x, qkv[i] = blk.forward_with_qkv(x)
            else:
                x = blk(x)
        cls = self.norm(x)[:, 0]
        return ViTOutput(logits=self.head(cls), cls_feature=cls, qkv=qkv)

    # Costs ---------------------------------------------------------------------------------

    def block_macs(self, block: int, batch: int = 1) -> int:
        """MACs of one block: qkv, q @ k^T, attn @ v, proj, fc1, fc2."""
        cfg = self.config
        T, C, hd = cfg.num_tokens, cfg.embed_dim, cfg.resolved_head_dim
        inner = cfg.heads(block) * hd
        attention = T * C * 3 * inner + 2 * cfg.heads(block) * T * T * hd + T * inner * C
        return batch * (attention + 2 * T * C * cfg.mlp_hidden(block))

    def macs(self, batch: int = 1) -> int:
        """Analytic MACs of one forward pass: patch embedding (with its stem), blocks and head (norms not counted)."""
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise InvalidInput(f"batch must be a positive integer, got {batch!r}")
        cfg = self.config
        if cfg.stem_channels:
            embed, side, channels = 0, cfg.image_size, cfg.in_chans
            for out in cfg.stem_channels:
                side = stem_grid(side, 1)
                embed += side * side * out * channels * 9
                channels = out
            embed += cfg.num_patches * cfg.embed_dim * channels
        else:
            embed = cfg.num_patches * cfg.embed_dim * cfg.in_chans * cfg.patch_size**2
        head = cfg.embed_dim * cfg.num_classes
        return batch * (embed + head) + sum(self.block_macs(i, batch) for i in range(cfg.depth))

    def feature_shape(self, point: int | str, batch: int = 1) -> tuple[int, ...]:
        """Image at point 0, tokens (B, 1 + N, C) at points 1..4, logits (or CLS feature) at 5."""
        p = self.point_index(point)
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise InvalidInput(f"batch must be a positive integer, got {batch!r}")
        cfg = self.config
        if p == 0:
            return (batch, *self.input_shape)
        if p == NUM_STAGES:
            return (batch, cfg.num_classes or cfg.embed_dim)
        return (batch, cfg.num_tokens, cfg.embed_dim)

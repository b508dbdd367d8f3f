"""MAC counting: the hook counter and the ViT's analytic count against hand counts."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from coinfer.core.errors import InvalidInput
from coinfer.core.models import ViTConfig, VisionTransformer, build_model, count_macs


pytestmark = pytest.mark.usefixtures("few_threads")  # tiny models (tests/conftest.py)


def _conv_out(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


def test_conv_net_matches_a_hand_count() -> None:
    B, H = 2, 9
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(4, 6, 3, stride=2, groups=2),
        nn.BatchNorm2d(6),
        nn.Flatten(),
        nn.Linear(6 * _conv_out(H, 3, 2, 0) ** 2, 5),
    )
    h1 = _conv_out(H, 3, 1, 1)
    h2 = _conv_out(h1, 3, 2, 0)
    conv1 = B * 4 * h1 * h1 * (3 * 3 * 3)
    conv2 = B * 6 * h2 * h2 * ((4 // 2) * 3 * 3)  # grouped: each output sees in/groups channels
    linear = B * 5 * (6 * h2 * h2)
    expected = conv1 + conv2 + linear
    assert count_macs(net, torch.randn(B, 3, H, H)) == expected
    # Only shapes matter, so the meta device gives the same count for free.
    assert count_macs(copy.deepcopy(net).to("meta"), torch.empty(B, 3, H, H, device="meta")) == expected


def _hand_vit_macs(cfg: ViTConfig, batch: int, blocks: int) -> int:
    """Patch embedding plus the first ``blocks`` blocks, from the textbook formulas."""
    N, T, C, hd = cfg.num_patches, cfg.num_tokens, cfg.embed_dim, cfg.resolved_head_dim
    if cfg.stem_channels:  # 3 x 3 stride-2 convolutions, then a 1 x 1 projection
        total, side, chans = 0, cfg.image_size, cfg.in_chans
        for out in cfg.stem_channels:
            side = _conv_out(side, 3, 2, 1)
            total += side * side * out * chans * 9
            chans = out
        total += N * C * chans
    else:
        total = N * C * cfg.in_chans * cfg.patch_size**2
    for i in range(blocks):
        heads = cfg.block_heads[i] if cfg.block_heads else cfg.num_heads
        hidden = cfg.block_mlp_hidden[i] if cfg.block_mlp_hidden else int(C * cfg.mlp_ratio)
        inner = heads * hd
        total += T * C * 3 * inner  # qkv
        total += heads * T * T * hd  # q @ k^T
        total += heads * T * T * hd  # attn @ v
        total += T * inner * C  # proj
        total += T * C * hidden + T * hidden * C  # fc1, fc2
    return batch * total


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"head_dim": 4, "block_heads": (3, 0, 1), "block_mlp_hidden": (8, 0, 20)},
        {"num_classes": 0},
        {"stem_channels": (4, 6)},
    ],
)
def test_vit_macs_match_a_hand_count(overrides: dict) -> None:
    base = dict(image_size=8, in_chans=3, patch_size=4, embed_dim=12, depth=3, num_heads=2, num_classes=7)
    cfg = ViTConfig(**{**base, **overrides})
    model = VisionTransformer(cfg)
    head = cfg.embed_dim * cfg.num_classes
    for batch in (1, 3):
        expected = _hand_vit_macs(cfg, batch, cfg.depth) + batch * head
        assert model.macs(batch) == expected
        assert count_macs(model, torch.randn(batch, 3, 8, 8)) == expected
    assert model.head_macs(5) == model.macs()
    for p, blocks in enumerate(cfg.split_blocks(), start=1):
        assert model.head_macs(p) == _hand_vit_macs(cfg, 1, blocks)
    assert model.head_macs(0) == 0


@pytest.mark.parametrize("arch", ["vgg11", "resnet18", "mobilenetv2"])
def test_cnn_head_macs_add_up(arch: str) -> None:
    torch.manual_seed(0)
    model = build_model({"arch": arch, "in_chans": 1, "image_size": 28, "width_mult": 0.25}).eval()
    x = torch.randn(1, 1, 28, 28)
    total = count_macs(model, x)
    heads = [model.head_macs(p) for p in range(6)]
    assert heads[0] == 0 and heads[-1] == total == model.macs()
    assert all(a < b for a, b in zip(heads, heads[1:])), heads
    for p in range(6):
        # Head and tail together cost exactly the whole network.
        feature = model.forward_head(x, p)
        assert count_macs(model.segment(p, 5), feature) == total - heads[p]
    assert model.macs(batch=4) == 4 * total


def test_count_macs_rejects_a_non_module() -> None:
    with pytest.raises(InvalidInput):
        count_macs(lambda x: x, torch.zeros(1))  # type: ignore[arg-type]

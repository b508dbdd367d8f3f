"""Vision Transformer specifics: timm names, heads and taps, pruning, config checks."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from coinfer.core.errors import InvalidInput
from coinfer.core.models import SplittableModel, ViTConfig, VisionTransformer
from coinfer.core.models.vit import DropPath

TINY = dict(image_size=8, in_chans=3, patch_size=2, embed_dim=16, depth=4, num_heads=2, num_classes=5)
PRUNED = dict(TINY, head_dim=4, block_heads=(3, 0, 1, 2), block_mlp_hidden=(8, 0, 24, 4))


pytestmark = pytest.mark.usefixtures("few_threads")  # tiny models (tests/conftest.py)


def _vit(seed: int = 0, **overrides) -> VisionTransformer:
    torch.manual_seed(seed)
    return VisionTransformer(ViTConfig(**{**TINY, **overrides})).eval()


def _x(batch: int = 2, chans: int = 3, size: int = 8) -> torch.Tensor:
    return torch.randn(batch, chans, size, size, generator=torch.Generator().manual_seed(7))


def test_state_dict_uses_timm_names_and_shapes() -> None:
    cfg = ViTConfig(**{**TINY, "depth": 2})
    model = VisionTransformer(cfg)
    C, T, p = cfg.embed_dim, cfg.num_tokens, cfg.patch_size
    hidden = int(C * cfg.mlp_ratio)
    expected = {
        "cls_token": (1, 1, C),
        "pos_embed": (1, T, C),
        "patch_embed.proj.weight": (C, cfg.in_chans, p, p),
        "patch_embed.proj.bias": (C,),
        "norm.weight": (C,),
        "norm.bias": (C,),
        "head.weight": (cfg.num_classes, C),
        "head.bias": (cfg.num_classes,),
    }
    for i in range(cfg.depth):
        b = f"blocks.{i}."
        expected |= {
            b + "norm1.weight": (C,), b + "norm1.bias": (C,),
            b + "attn.qkv.weight": (3 * C, C), b + "attn.qkv.bias": (3 * C,),
            b + "attn.proj.weight": (C, C), b + "attn.proj.bias": (C,),
            b + "norm2.weight": (C,), b + "norm2.bias": (C,),
            b + "mlp.fc1.weight": (hidden, C), b + "mlp.fc1.bias": (hidden,),
            b + "mlp.fc2.weight": (C, hidden), b + "mlp.fc2.bias": (C,),
        }
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == expected


def test_qkv_without_bias_and_feature_model_drop_their_keys() -> None:
    keys = set(VisionTransformer(ViTConfig(**{**TINY, "qkv_bias": False, "num_classes": 0})).state_dict())
    assert not any(k.endswith("attn.qkv.bias") for k in keys)
    assert not any(k.startswith("head.") for k in keys)


def test_forward_paths_agree() -> None:
    model = _vit()
    x = _x()
    with torch.no_grad():
        tokens = model.forward_features(x)
        assert tokens.shape == (2, model.config.num_tokens, 16)
        logits = model(x)
        torch.testing.assert_close(model.forward_head(tokens), logits)
        cls = model.forward_cls(x)
        torch.testing.assert_close(model.forward_head(tokens, pre_logits=True), cls)
        torch.testing.assert_close(model.head(cls), logits)
    # Freshly initialised final norm: the CLS feature is standardised per image.
    torch.testing.assert_close(cls.mean(-1), torch.zeros(2), atol=1e-5, rtol=0)
    # (eps=1e-6 is not negligible next to the small variance of a fresh residual stream)
    torch.testing.assert_close(cls.var(-1, unbiased=False), torch.ones(2), atol=2e-2, rtol=0)


def test_headless_model_outputs_its_cls_feature() -> None:
    model = _vit(num_classes=0)
    x = _x()
    with torch.no_grad():
        torch.testing.assert_close(model(x), model.forward_cls(x))
    assert model(x).shape == (2, 16)


def test_split_and_timm_forward_head_are_told_apart() -> None:
    model = _vit()
    x = _x()
    with torch.no_grad():
        tokens = model.forward_head(x, 2)
        assert tokens.shape == (2, model.config.num_tokens, 16)
        torch.testing.assert_close(model.forward_tail(tokens, 2), model(x))
    with pytest.raises(InvalidInput, match="pre_logits"):
        model.forward_head(x, 2, pre_logits=True)


def test_attention_matches_the_textbook_formula_with_a_narrow_inner_width() -> None:
    model = _vit(head_dim=4, num_heads=3)  # inner width 12, embedding width 16
    attn = model.blocks[0].attn
    x = torch.randn(2, model.config.num_tokens, 16)
    B, T, _ = x.shape
    q, k, v = attn.qkv(x).reshape(B, T, 3, 3, 4).permute(2, 0, 3, 1, 4)
    weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(4), dim=-1)
    expected = attn.proj((weights @ v).transpose(1, 2).reshape(B, T, 12))
    with torch.no_grad():
        torch.testing.assert_close(attn(x), expected.detach())


def test_forward_with_qkv_exposes_the_requested_layers() -> None:
    model = _vit(**{k: v for k, v in PRUNED.items() if k not in TINY or k == "head_dim"})
    cfg = model.config
    x = _x()
    seen: dict[str, torch.Tensor] = {}
    model.blocks[1].register_forward_hook(lambda m, i, o: seen.__setitem__("into_block2", o))
    out = model.forward_with_qkv(x, [0, 2])
    assert sorted(out.qkv) == [0, 2]
    for layer, (q, k, v) in out.qkv.items():
        for t in (q, k, v):
            assert t.shape == (2, cfg.heads(layer), cfg.num_tokens, cfg.resolved_head_dim)
    with torch.no_grad():
        torch.testing.assert_close(out.logits, model(x))
        torch.testing.assert_close(out.cls_feature, model.forward_cls(x))
        blk = model.blocks[2]
        q_manual = blk.attn.qkv(blk.norm1(seen["into_block2"])).reshape(2, cfg.num_tokens, 3, 1, 4)[:, :, 0]
        torch.testing.assert_close(out.qkv[2][0], q_manual.transpose(1, 2))
    # The tap is differentiable: a loss on block 2's keys trains the blocks before it.
    out.qkv[2][1].square().sum().backward()
    assert model.blocks[0].mlp.fc1.weight.grad.abs().sum() > 0
    # DEKD's token relation R = softmax(X X^T / sqrt(d)) has tokens x tokens whatever the width.
    q = out.qkv[0][0]
    X = q.transpose(1, 2).reshape(2, cfg.num_tokens, -1)
    R = torch.softmax(X @ X.transpose(1, 2) / math.sqrt(cfg.resolved_head_dim), dim=-1)
    assert R.shape == (2, cfg.num_tokens, cfg.num_tokens)


@pytest.mark.parametrize("layers", [[4], [-1], [True], ["0"]])
def test_forward_with_qkv_rejects_bad_layers(layers: list) -> None:
    with pytest.raises(InvalidInput, match="block index"):
        _vit().forward_with_qkv(_x(), layers)


def test_fully_pruned_branches_leave_only_their_output_bias() -> None:
    model = VisionTransformer(ViTConfig(**PRUNED))
    blk = model.blocks[1]  # 0 heads and 0 MLP neurons
    torch.nn.init.normal_(blk.attn.proj.bias)
    torch.nn.init.normal_(blk.mlp.fc2.bias)
    x = torch.randn(2, model.config.num_tokens, 16)
    with torch.no_grad():
        torch.testing.assert_close(blk.attn(blk.norm1(x)), blk.attn.proj.bias.expand_as(x))
        torch.testing.assert_close(blk(x), x + blk.attn.proj.bias + blk.mlp.fc2.bias)
    assert model.blocks[0].attn.qkv.weight.shape == (3 * 3 * 4, 16)
    assert model.blocks[2].mlp.fc1.weight.shape == (24, 16)
    assert model(_x()).shape == (2, 5)


def test_pruning_shrinks_parameters_and_macs() -> None:
    full, pruned = _vit(), VisionTransformer(ViTConfig(**{**TINY, "block_heads": (1, 0, 1, 2), "block_mlp_hidden": (8, 0, 8, 8)}))
    assert pruned.num_params() < full.num_params()
    assert pruned.macs() < full.macs()


def test_split_points_sit_after_quarters_of_the_depth() -> None:
    with torch.device("meta"):
        base = VisionTransformer(ViTConfig())
    assert base.point_names == ("input", "blocks.2", "blocks.5", "blocks.8", "blocks.11", "local")
    shallow = _vit(depth=2)
    assert shallow.config.split_blocks() == (1, 1, 2, 2)
    model = _vit()
    for p in range(6):
        # The analytic shape must agree with what the stages really produce.
        assert model.feature_shape(p, batch=3) == SplittableModel.feature_shape(model, p, batch=3)


def test_drop_path_drops_whole_samples_only_in_training() -> None:
    torch.manual_seed(0)
    drop = DropPath(0.5).train()
    y = drop(torch.ones(2000, 3))
    kept = y[:, 0] != 0
    assert torch.equal(y[kept], torch.full_like(y[kept], 2.0))  # survivors rescaled by 1 / keep
    assert torch.equal(y[~kept], torch.zeros_like(y[~kept]))
    assert 0.45 < kept.float().mean().item() < 0.55
    x = torch.randn(4, 3)
    assert torch.equal(drop.eval()(x), x)


def test_stochastic_depth_changes_training_output_but_not_eval() -> None:
    model = _vit(drop_path_rate=0.5)
    x = _x(batch=8)
    with torch.no_grad():
        assert torch.equal(model(x), model(x))
        model.train()
        torch.manual_seed(1)
        a = model(x)
        torch.manual_seed(2)
        assert not torch.allclose(a, model(x))


@pytest.mark.parametrize(
    "overrides, words",
    [
        ({"image_size": 30, "patch_size": 4}, ["30", "4"]),
        ({"embed_dim": 10, "num_heads": 3}, ["head_dim"]),
        ({"block_heads": (2, 2)}, ["block_heads", "4"]),
        ({"block_mlp_hidden": (8, -1, 8, 8)}, ["block_mlp_hidden[1]"]),
        ({"drop_path_rate": 1.0}, ["drop_path_rate"]),
        ({"num_classes": -1}, ["num_classes"]),
        ({"mlp_ratio": 0}, ["mlp_ratio"]),
        ({"depth": 0}, ["depth"]),
        ({"stem_channels": (4, 4)}, ["stem", "2 stride-2", "2 x 2", "4 x 4", "1 convolutions would"]),
        ({"stem_channels": (4, 0)}, ["stem_channels[1]"]),
        ({"stem_channels": ()}, ["stem_channels"]),
        ({"patch_size": 1, "stem_channels": (4,)}, ["stem", "8 x 8"]),
    ],
)
def test_bad_vit_configs_name_the_problem(overrides: dict, words: list[str]) -> None:
    with pytest.raises(InvalidInput) as err:
        ViTConfig(**{**TINY, **overrides})
    for word in words:
        assert word in str(err.value)


def test_explicit_head_dim_allows_any_embedding_width() -> None:
    model = _vit(embed_dim=10, num_heads=3, head_dim=4)
    assert model.blocks[0].attn.qkv.weight.shape == (36, 10)
    assert model(_x()).shape == (2, 5)


def test_grayscale_digits_input() -> None:
    model = _vit(in_chans=1)
    assert model(_x(chans=1)).shape == (2, 5)
    with pytest.raises(RuntimeError):
        model(_x(chans=3))  # wrong channel count fails loudly inside the patch embedding
    assert F.softmax(model(_x(chans=1)), -1).sum(-1).allclose(torch.ones(2))


def test_a_conv_stem_replaces_the_patchify_convolution() -> None:
    plain, stemmed = _vit(), _vit(stem_channels=[6])  # JSON gives a list: kept as a tuple
    assert stemmed.config.stem_channels == (6,)
    keys = [k for k in stemmed.state_dict() if k.startswith("patch_embed.")]
    assert keys[:2] == ["patch_embed.stem.0.weight", "patch_embed.stem.1.weight"]  # conv (no bias), batch norm
    assert stemmed.patch_embed.proj.weight.shape == (16, 6, 1, 1)
    assert [k for k in plain.state_dict() if k.startswith("patch_embed.")] == ["patch_embed.proj.weight", "patch_embed.proj.bias"]
    assert stemmed(_x()).shape == (2, 5) and stemmed.forward_features(_x()).shape == plain.forward_features(_x()).shape
    # The stem halves 8 px to the 4 x 4 grid of 2-px patches; the tokens then see 3 x 3 neighbourhoods.
    x = _x(batch=1)
    moved = x.clone()
    moved[..., 7, 7] += 1.0  # one corner pixel: only the tokens whose stem window covers it change
    delta = (stemmed.patch_embed(moved) - stemmed.patch_embed(x)).abs().sum(-1)[0]
    assert delta[-1] > 1e-3 and torch.all(delta[:-1] < 1e-5)  # a kernel may round unchanged outputs anew

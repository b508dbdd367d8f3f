"""Real-shape teachers in timm's format: the seeded writers, and the checks that refuse a checkpoint
that does not fit (listed keys) or a teacher that does not fit the data (size, channels, patch).

The 224-px runs themselves are the `dekd_shape` benchmark's; here a 32-px, 2-block ViT in timm's
format stands in for them."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from coinfer.cli import main
from coinfer.core.data import DatasetSplits, ImageDataset
from coinfer.core.errors import InvalidInput
from coinfer.core.models.vit import ViTConfig
from coinfer.server.dekd.teacher import check_compatible, import_timm_vit
from coinfer.server.dekd.timm_vit import (
    TIMM_VITS,
    seeded_timm_vit_state,
    timm_vit_config,
    write_timm_vit,
)

SMALL_RGB = ViTConfig(image_size=32, in_chans=3, patch_size=8, embed_dim=64, depth=2, num_heads=1, num_classes=4)
"""A 32-px RGB ViT in timm's layout (width 64: timm's one head per 64 channels)."""

TIMM_PARAMS = {"vit_small_patch16_224": 22_050_664, "vit_base_patch16_224": 86_567_656}
"""Parameter counts timm publishes for these models with their 1,000-class ImageNet head."""


@pytest.mark.parametrize("name", sorted(TIMM_VITS))
def test_real_shape_writers_give_timms_shapes_and_parameter_count(name):
    # Key names follow timm's scheme at any size (tests/core/test_models_vit.py lists them); here the
    # real sizes: timm's published parameter count pins width, depth, MLP, patch and tokens together.
    C = TIMM_VITS[name].embed_dim
    state = seeded_timm_vit_state(timm_vit_config(name, num_classes=1000), seed=0)
    assert sum(v.numel() for v in state.values()) == TIMM_PARAMS[name]
    assert len(state) == 8 + 12 * 12 and "blocks.11.norm1.weight" in state and "blocks.12.norm1.weight" not in state
    assert tuple(state["pos_embed"].shape) == (1, 197, C) and tuple(state["patch_embed.proj.weight"].shape) == (C, 3, 16, 16)
    assert tuple(state["blocks.11.attn.qkv.weight"].shape) == (3 * C, C) and tuple(state["blocks.0.mlp.fc1.weight"].shape) == (4 * C, C)
    assert tuple(state["head.weight"].shape) == (1000, C)
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in state.values())


def test_the_writer_is_seeded_and_leaves_the_global_generator_alone(tmp_path):
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    first = load_file(str(write_timm_vit(tmp_path / "a.safetensors", SMALL_RGB, seed=5)))
    assert torch.equal(torch.rand(3), before)
    again = load_file(str(write_timm_vit(tmp_path / "b.safetensors", SMALL_RGB, seed=5)))
    other = load_file(str(write_timm_vit(tmp_path / "c.safetensors", SMALL_RGB, seed=6)))
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not torch.equal(first["blocks.0.attn.qkv.weight"], other["blocks.0.attn.qkv.weight"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.safetensors", "b.safetensors", "c.safetensors"]


def test_a_written_checkpoint_imports_as_the_same_network(tmp_path):
    from coinfer.core.models.vit import VisionTransformer

    path = write_timm_vit(tmp_path / "vit.safetensors", SMALL_RGB, seed=1)
    model = import_timm_vit(path)
    assert replace(model.config, head_dim=None) == SMALL_RGB  # the importer spells out the head width
    reference = VisionTransformer(SMALL_RGB)
    reference.load_state_dict(load_file(str(path)))
    x = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(model(x), reference.eval()(x))


def test_unknown_names_and_headless_configs_are_refused(tmp_path):
    with pytest.raises(Exception, match="unknown timm ViT 'vit_huge"):
        write_timm_vit(tmp_path / "x.safetensors", timm_vit_config("vit_huge_patch14_224", 10))
    with pytest.raises(InvalidInput, match="at least 2 classes"):
        timm_vit_config("vit_small_patch16_224", 1)
    assert list(tmp_path.iterdir()) == []


# Checkpoints that do not fit our ViT: every key listed --------------------------------------


def _checkpoint(tmp_path, edit) -> str:
    state = seeded_timm_vit_state(SMALL_RGB, seed=0)
    edit(state)
    path = tmp_path / "edited.safetensors"
    save_file(state, str(path))
    return str(path)


def _import_error(path) -> str:
    with pytest.raises(InvalidInput) as info:
        import_timm_vit(path)
    return str(info.value)


def test_a_block_missing_its_attention_is_listed_not_cut_short(tmp_path):
    # Before: the depth stopped at the first block without a qkv weight, so the later blocks' keys
    # all read as "unexpected" and the missing tensor was never named.
    message = _import_error(_checkpoint(tmp_path, lambda s: s.pop("blocks.0.attn.qkv.weight")))
    assert "missing keys (1): blocks.0.attn.qkv.weight" in message
    assert "unexpected" not in message


def test_a_block_missing_its_mlp_is_listed_not_read_as_pruned(tmp_path):
    message = _import_error(_checkpoint(tmp_path, lambda s: s.pop("blocks.1.mlp.fc1.weight")))
    assert "missing keys (1): blocks.1.mlp.fc1.weight" in message and "pruned" not in message


def test_keys_of_other_timm_variants_are_listed_as_unexpected(tmp_path):
    def edit(state):
        state["fc_norm.weight"] = torch.ones(64)  # global-average-pool ViTs
        state["blocks.1.ls1.gamma"] = torch.ones(64)  # layer scale
        state["head_dist.weight"] = torch.zeros(4, 64)  # DeiT's distillation head
        del state["head.bias"]

    message = _import_error(_checkpoint(tmp_path, edit))
    assert "missing keys (1): head.bias" in message
    assert "unexpected keys (3): blocks.1.ls1.gamma, fc_norm.weight, head_dist.weight" in message


def test_a_key_naming_an_absurd_block_is_refused(tmp_path):
    message = _import_error(_checkpoint(tmp_path, lambda s: s.update({"blocks.99999.norm1.weight": torch.ones(64)})))
    assert "block 99999" in message


# Teachers that do not fit the data: size, channels, patch -----------------------------------


def _splits(shape, num_classes=4) -> DatasetSplits:
    rng = np.random.default_rng(0)
    n = 8 * num_classes
    data = ImageDataset(rng.integers(0, 256, (n, *shape), dtype=np.uint8), np.arange(n) % num_classes)
    return DatasetSplits("made", data, data, data, num_classes, tuple(str(c) for c in range(num_classes)))


@pytest.mark.parametrize(
    "shape,needles",
    [
        ((3, 48, 48), ["32 x 32 images vs the dataset's 48 x 48", "4 x 4 patches of 8 px"]),
        ((1, 32, 32), ["3 input channel(s) vs the dataset's 1"]),
        ((3, 36, 36), ["32 x 32 images vs the dataset's 36 x 36", "8-px patches do not tile the dataset's 36 x 36 images"]),
    ],
)
def test_a_teacher_that_does_not_fit_the_images_names_the_mismatch(shape, needles):
    with pytest.raises(InvalidInput) as info:
        check_compatible(SMALL_RGB, _splits(shape))
    for needle in needles:
        assert needle in str(info.value)
    check_compatible(SMALL_RGB, _splits((3, 32, 32)))


def _imagefolder(root, shape, num_classes=4, per_class=5):
    from PIL import Image

    rng = np.random.default_rng(0)
    channels, height, width = shape
    for c in range(num_classes):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (height, width, channels), dtype=np.uint8)
            Image.fromarray(pixels[..., 0] if channels == 1 else pixels).save(root / f"class{c}" / f"{i}.png")
    return root


@pytest.mark.parametrize(
    "shape,needle",
    [
        ((3, 40, 40), "32 x 32 images vs the dataset's 40 x 40"),
        ((1, 32, 32), "3 input channel(s) vs the dataset's 1"),
        ((3, 36, 36), "8-px patches do not tile"),
    ],
)
def test_import_and_decompose_refuse_a_mismatched_teacher_before_writing(tmp_path, capsys, shape, needle):
    checkpoint = write_timm_vit(tmp_path / "vit.safetensors", SMALL_RGB, seed=0)
    data = _imagefolder(tmp_path / "images", shape)
    out = tmp_path / "teacher"
    assert main(["teacher", "import", "--from", str(checkpoint), "--out", str(out),
                 "--dataset", "imagefolder", "--data-dir", str(data)]) == 2
    assert needle in capsys.readouterr().err and not out.exists()
    # Imported without the dataset check, the same teacher is refused by decompose, again before writing.
    assert main(["teacher", "import", "--from", str(checkpoint), "--out", str(out)]) == 0
    bundle = tmp_path / "bundle"
    assert main(["decompose", "--teacher", str(out), "--dataset", "imagefolder", "--data-dir", str(data),
                 "--devices", "4", "--quick", "--out", str(bundle), "--threads", "1"]) == 2
    assert needle in capsys.readouterr().err and not bundle.exists()


# The importance pass at 224 px ------------------------------------------------------------------


def test_the_importance_batch_shrinks_at_real_shape_and_not_below():
    from coinfer.server.dekd.prune import importance_batch_size

    assert importance_batch_size(timm_vit_config("vit_base_patch16_224", 4)) <= 16
    assert importance_batch_size(timm_vit_config("vit_small_patch16_224", 4)) <= 32
    assert importance_batch_size(SMALL_RGB) == 128 and importance_batch_size(SMALL_RGB, limit=32) == 32


def test_importance_in_micro_batches_gives_the_whole_batches_scores(monkeypatch):
    from coinfer.core.models.vit import VisionTransformer
    from coinfer.server.dekd import prune

    torch.manual_seed(0)
    model = VisionTransformer(SMALL_RGB).eval()
    x, y = torch.rand(24, 3, 32, 32), torch.arange(24) % 4
    whole = prune.unit_importance(model, x, y, batch_size=16)
    monkeypatch.setattr(prune, "IMPORTANCE_ACTIVATION_BYTES", 1)  # one image per forward pass
    micro = prune.unit_importance(model, x, y, batch_size=16)
    np.testing.assert_allclose(micro.heads, whole.heads, rtol=1e-4)
    for a, b in zip(micro.neurons, whole.neurons):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-3 * float(b.max()))
    np.testing.assert_allclose(micro.blocks, whole.blocks, rtol=1e-4, atol=1e-6)
    # batches of one image score differently: the micro-batches really add up to the batch
    single = prune.unit_importance(model, x, y, batch_size=1)
    assert not np.allclose(single.neurons[0], whole.neurons[0], rtol=0.05)

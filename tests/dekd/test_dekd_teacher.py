import pickle

import pytest
import torch
from safetensors.torch import save_file

from coinfer.core.errors import IntegrityError, InvalidInput
from coinfer.core.models.vit import VisionTransformer
from coinfer.server.dekd.teacher import (
    check_compatible,
    conv_stem_channels,
    default_patch_size,
    import_timm_vit,
    load_teacher,
    patch_choice,
    save_teacher,
    stem_choice,
    teacher_config,
)

from dekd_configs import tiny_vit_config


@pytest.fixture
def vit():
    torch.manual_seed(0)
    return VisionTransformer(tiny_vit_config(embed_dim=64, num_heads=2)).eval()


def test_safetensors_import_reproduces_the_model(tmp_path, vit):
    path = tmp_path / "vit.safetensors"
    save_file({k: v.contiguous() for k, v in vit.state_dict().items()}, str(path))
    model = import_timm_vit(path, num_heads=2)
    x = torch.rand(3, 1, 8, 8)
    torch.testing.assert_close(model(x), vit(x))
    assert model.config.num_heads == 2 and model.config.patch_size == 4 and model.config.image_size == 8


def test_torch_checkpoint_with_wrapper_and_ddp_prefix(tmp_path, vit):
    path = tmp_path / "vit.pt"
    torch.save({"model": {f"module.{k}": v for k, v in vit.state_dict().items()}, "epoch": 3}, path)
    model = import_timm_vit(path, num_heads=2)
    torch.testing.assert_close(model(torch.ones(1, 1, 8, 8)), vit(torch.ones(1, 1, 8, 8)))


def test_missing_and_unexpected_keys_are_listed(tmp_path, vit):
    state = dict(vit.state_dict())
    del state["blocks.1.mlp.fc2.bias"]
    state["fc_norm.weight"] = torch.ones(64)
    state["blocks.0.ls1.gamma"] = torch.ones(64)
    path = tmp_path / "odd.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    with pytest.raises(InvalidInput) as info:
        import_timm_vit(path, num_heads=2)
    message = str(info.value)
    assert "missing keys (1): blocks.1.mlp.fc2.bias" in message
    assert "unexpected keys (2): blocks.0.ls1.gamma, fc_norm.weight" in message


def test_corrupt_and_pickled_files_are_refused(tmp_path, vit):
    truncated = tmp_path / "cut.safetensors"
    save_file({k: v.contiguous() for k, v in vit.state_dict().items()}, str(truncated))
    truncated.write_bytes(truncated.read_bytes()[:100])
    with pytest.raises(IntegrityError, match="safetensors"):
        import_timm_vit(truncated)

    class Evil:
        def __reduce__(self):
            return (print, ("executed",))

    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"cls_token": Evil()}, protocol=2))
    with pytest.raises(IntegrityError, match="weights_only"):
        import_timm_vit(evil)
    with pytest.raises(InvalidInput, match="class token"):
        p = tmp_path / "cnn.safetensors"
        save_file({"conv.weight": torch.zeros(2, 2)}, str(p))
        import_timm_vit(p)


def test_teacher_folder_round_trip_and_tamper_detection(tmp_path, vit):
    save_teacher(vit, tmp_path / "t", {"dataset": "digits"})
    model, meta = load_teacher(tmp_path / "t")
    assert meta["dataset"] == "digits"
    torch.testing.assert_close(model(torch.ones(1, 1, 8, 8)), vit(torch.ones(1, 1, 8, 8)))
    part = tmp_path / "t" / "teacher.safetensors"
    data = bytearray(part.read_bytes())
    data[-3] ^= 0x01
    part.write_bytes(bytes(data))
    with pytest.raises(IntegrityError):
        load_teacher(tmp_path / "t")


def test_compatibility_names_every_mismatch(digits):
    cfg = tiny_vit_config(num_classes=7, in_chans=3, image_size=12, patch_size=4)
    with pytest.raises(InvalidInput) as info:
        check_compatible(cfg, digits)
    text = str(info.value)
    assert "7 classes" in text and "3 input channel" in text and "12 x 12" in text
    check_compatible(tiny_vit_config(), digits)


def test_presets_pick_a_patch_size_for_the_image():
    assert default_patch_size(28) == 7 and default_patch_size(224) == 16 and default_patch_size(16) == 4
    # Below 4 px a patch carries too little: a 2 x 2 grid, or the whole image when even that is smaller.
    assert default_patch_size(8) == 4 and default_patch_size(12) == 6 and default_patch_size(3) == 3
    assert default_patch_size(30) == 15 and default_patch_size(1) == 1
    assert patch_choice(224, None).startswith("16 px (14 x 14 patches)") and patch_choice(28, 14) == "14 px, given"
    cfg = teacher_config("vit-tiny", (1, 28, 28), 10)
    assert (cfg.embed_dim, cfg.depth, cfg.num_tokens) == (192, 6, 17)
    with pytest.raises(Exception, match="unknown teacher arch"):
        teacher_config("vit-huge", (1, 28, 28), 10)


def test_a_conv_stem_halves_the_image_down_to_the_patch_grid():
    # 8-px digits on 4-px patches: 8 -> 4 -> 2; Fashion-MNIST on 7-px: 28 -> 14 -> 7 -> 4; ViT-S/16: 224 -> 14.
    assert conv_stem_channels(8, 4, 192) == (24, 48)
    assert conv_stem_channels(28, 7, 192) == (24, 48, 96)
    assert conv_stem_channels(224, 16, 64) == (24, 48, 64, 64)  # capped at the token width
    cfg = teacher_config("vit-tiny", (1, 28, 28), 10, stem="conv")
    assert cfg.stem_channels == (24, 48, 96) and cfg.num_tokens == 17
    assert stem_choice(cfg).startswith("conv: 3 x 3 stride-2 convolutions of 24, 48, 96 channels")
    assert teacher_config("vit-tiny", (1, 28, 28), 10).stem_channels is None
    assert stem_choice(teacher_config("vit-tiny", (1, 28, 28), 10)) == "patch: one 7 x 7 convolution"
    with pytest.raises(InvalidInput, match="12-px images into the 4 x 4 grid of 3-px patches"):
        teacher_config("vit-tiny", (1, 12, 12), 10, patch_size=3, stem="conv")  # 12 -> 6 -> 3: never 4
    with pytest.raises(InvalidInput, match="unknown stem 'resnet'"):
        teacher_config("vit-tiny", (1, 28, 28), 10, stem="resnet")


def test_same_seed_trains_the_same_teacher_whatever_ran_before(digits):
    from coinfer.core.training import TrainConfig
    from coinfer.server.dekd.teacher import train_teacher

    train = TrainConfig(epochs=1, batch_size=256, seed=3, progress=False)
    first, _ = train_teacher(digits, tiny_vit_config(), train)
    torch.rand(1000)  # the global generator moves on, as other work in the same process would move it
    second, _ = train_teacher(digits, tiny_vit_config(), train)
    other, _ = train_teacher(digits, tiny_vit_config(), TrainConfig(epochs=1, batch_size=256, seed=4, progress=False))
    for name, value in first.state_dict().items():
        torch.testing.assert_close(second.state_dict()[name], value, msg=name)
    assert any(not torch.equal(other.state_dict()[n], v) for n, v in first.state_dict().items())

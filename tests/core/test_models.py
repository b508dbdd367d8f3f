"""Contract and split tests over every backbone of the model zoo, at small sizes."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from coinfer.core.errors import InvalidInput, NotFound
from coinfer.core.models import ARCHS, NUM_POINTS, SplittableModel, build_model
from coinfer.core.profile import load_profile

CNN_ARCHS = ("vgg11", "resnet18", "mobilenetv2")
# (in_chans, image_size): digits, Fashion-MNIST, CIFAR-like.
INPUTS = ((1, 8), (1, 28), (3, 32))

TINY_VIT = {
    "arch": "vit", "image_size": 8, "in_chans": 1, "patch_size": 2, "embed_dim": 16,
    "depth": 4, "num_heads": 2, "num_classes": 5,
}
PRUNED_VIT = {**TINY_VIT, "head_dim": 4, "block_heads": [2, 0, 1, 3], "block_mlp_hidden": [8, 0, 16, 4]}

CASES = {
    **{
        f"{arch}-{c}x{s}": {"arch": arch, "in_chans": c, "image_size": s, "width_mult": 0.25, "num_classes": 7}
        for arch in CNN_ARCHS
        for c, s in INPUTS
    },
    "vit-tiny": TINY_VIT,
    "vit-pruned": PRUNED_VIT,
    "vit-features": {**TINY_VIT, "num_classes": 0},
}


def _model(name: str, seed: int = 0) -> SplittableModel:
    torch.manual_seed(seed)
    return build_model(CASES[name])


def _images(model: SplittableModel, batch: int = 3, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn((batch, *model.input_shape), generator=g)


def _out_width(config: dict) -> int:
    return config["num_classes"] or config["embed_dim"]


def _dead_by_pruning(config: dict) -> set[str]:
    """Norms in front of a fully pruned branch: nothing reads their output, so no gradient."""
    dead = set()
    for key, norm in (("block_heads", "norm1"), ("block_mlp_hidden", "norm2")):
        for i, width in enumerate(config.get(key) or []):
            if width == 0:
                dead |= {f"blocks.{i}.{norm}.weight", f"blocks.{i}.{norm}.bias"}
    return dead


pytestmark = pytest.mark.usefixtures("few_threads")  # tiny models (tests/conftest.py)


@pytest.mark.parametrize("name", sorted(CASES))
def test_forward_shape_finite_and_every_parameter_learns(name: str) -> None:
    model = _model(name).train()
    x = _images(model)
    out = model(x)
    assert out.shape == (3, _out_width(CASES[name]))
    assert torch.isfinite(out).all()
    out.square().mean().backward()
    dead = _dead_by_pruning(CASES[name])
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{pname} got no gradient"
        assert torch.isfinite(p.grad).all(), pname
        if p.numel() and pname not in dead:  # empty = a pruned layer; everything else must learn
            assert p.grad.abs().sum() > 0, f"{pname} got an all-zero gradient"


@pytest.mark.parametrize("name", sorted(CASES))
def test_split_anywhere_gives_the_whole_network(name: str) -> None:
    model = _model(name).eval()
    x = _images(model)
    with torch.no_grad():
        full = model(x)
        for p in range(NUM_POINTS):
            feature = model.forward_head(x, p)
            assert tuple(feature.shape) == model.feature_shape(p, batch=3), p
            torch.testing.assert_close(model.forward_tail(feature, p), full, msg=f"point {p}")
            head, tail = model.segment(0, p), model.segment(p, NUM_POINTS - 1)
            torch.testing.assert_close(tail(head(x)), full, msg=f"segments at point {p}")
            by_name = model.forward_head(x, model.point_names[p])
            torch.testing.assert_close(by_name, feature)
    assert torch.equal(model.forward_head(x, 0), x)


@pytest.mark.parametrize("name", ["vgg11-1x28", "resnet18-3x32", "mobilenetv2-1x8", "vit-pruned"])
def test_stages_own_every_tensor_exactly_once(name: str) -> None:
    model = _model(name)
    stages = model.stages
    assert len(stages) == NUM_POINTS - 1
    keys = [k for stage in stages for k in stage.state_dict()]
    assert len(keys) == len(set(keys)), "a tensor belongs to two stages"
    assert set(keys) == set(model.state_dict())
    # Stage views share the model's tensors instead of copying them.
    for stage in stages:
        for k, v in stage.state_dict().items():
            assert v.data_ptr() == model.state_dict()[k].data_ptr() or v.numel() == 0


@pytest.mark.parametrize("name", ["vgg11-3x32", "resnet18-1x28", "mobilenetv2-3x32", "vit-tiny"])
def test_segment_ships_alone_into_a_fresh_model(name: str) -> None:
    trained = _model(name, seed=0).eval()
    x = _images(trained)
    for p in (1, 3):
        head_bytes = save_safetensors(trained.segment(0, p).state_dict())
        tail_bytes = save_safetensors(trained.segment(p, NUM_POINTS - 1).state_dict())
        # A different seed proves the weights came from the files, not from initialisation.
        torch.manual_seed(123)
        fresh = build_model(json.loads(json.dumps(trained.config_dict()))).eval()
        head, tail = fresh.segment(0, p), fresh.segment(p, NUM_POINTS - 1)
        with torch.no_grad():
            assert not torch.allclose(head(x), trained.forward_head(x, p))
        head.load_state_dict(load_safetensors(head_bytes), strict=True)
        tail.load_state_dict(load_safetensors(tail_bytes), strict=True)
        with torch.no_grad():
            torch.testing.assert_close(head(x), trained.forward_head(x, p))
            torch.testing.assert_close(tail(head(x)), trained(x))


def test_a_head_segment_refuses_a_tail_state_dict() -> None:
    model = _model("resnet18-1x8")
    with pytest.raises(RuntimeError):
        model.segment(0, 2).load_state_dict(model.segment(2, 5).state_dict(), strict=True)


@pytest.mark.parametrize("arch", CNN_ARCHS)
def test_paper_split_points_match_the_builtin_profiles(arch: str) -> None:
    # Full-size networks built on the meta device: shapes only, no memory, no arithmetic.
    with torch.device("meta"):
        model = build_model({"arch": arch, "image_size": 224, "num_classes": 101})
    profile = load_profile(f"jetson-nano-{arch}")
    assert model.point_names == tuple(p.name for p in profile.points)
    for p in range(1, NUM_POINTS - 1):
        assert 32 * math.prod(model.feature_shape(p)) == profile.points[p].feature_bits, p
    assert model.feature_shape(NUM_POINTS - 1) == (1, 101)


@pytest.mark.parametrize("arch", ["resnet18", "mobilenetv2"])
def test_small_inputs_skip_the_imagenet_stem(arch: str) -> None:
    with torch.device("meta"):
        small = build_model({"arch": arch, "image_size": 32, "width_mult": 0.25})
        large = build_model({"arch": arch, "image_size": 224, "width_mult": 0.25})
    # Without the ImageNet stem's downsampling every candidate feature keeps more resolution.
    for p in range(1, NUM_POINTS - 1):
        assert small.feature_shape(p)[-1] / 32 > large.feature_shape(p)[-1] / 224, p


@pytest.mark.parametrize("image_size, pools", [(8, 3), (28, 4), (32, 5)])
def test_vgg_pools_only_while_the_map_is_two_pixels_wide(image_size: int, pools: int) -> None:
    model = build_model({"arch": "vgg11", "image_size": image_size, "width_mult": 0.25})
    assert sum(isinstance(m, torch.nn.MaxPool2d) for m in model.features) == pools
    assert model.feature_shape(4)[-1] >= 1
    # Indices stay torchvision's whatever the size, so weights move between sizes.
    with torch.device("meta"):
        imagenet = build_model({"arch": "vgg11", "image_size": 224})
    assert len(model.features) == len(imagenet.features)


@pytest.mark.parametrize("arch", CNN_ARCHS)
def test_width_mult_thins_the_network(arch: str) -> None:
    with torch.device("meta"):
        thin = build_model({"arch": arch, "width_mult": 0.25})
        wide = build_model({"arch": arch, "width_mult": 0.5})
    assert thin.num_params() < wide.num_params()
    assert thin.feature_shape(2)[1] < wide.feature_shape(2)[1]


@pytest.mark.parametrize("name", ["vgg11-1x8", "mobilenetv2-3x32", "vit-pruned"])
def test_config_dict_round_trips_through_json(name: str) -> None:
    model = _model(name)
    config = model.config_dict()
    again = build_model(json.loads(json.dumps(config)))
    assert type(again) is type(model)
    assert again.config_dict() == config
    assert {k: v.shape for k, v in again.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}


def test_registry_lists_every_arch() -> None:
    assert set(ARCHS) == {"vit", "vgg11", "resnet18", "mobilenetv2"}
    for arch, cls in ARCHS.items():
        assert cls.arch == arch


def test_unknown_arch_names_the_valid_ones() -> None:
    with pytest.raises(NotFound) as err:
        build_model({"arch": "alexnet"})
    for arch in ARCHS:
        assert arch in str(err.value)


@pytest.mark.parametrize(
    "config, words",
    [
        ({"arch": "resnet18", "widht_mult": 0.5}, ["widht_mult", "width_mult"]),
        ({"arch": "vit", "depht": 3}, ["depht"]),
        ({"num_classes": 3}, ["arch"]),
        ({"arch": "vgg11", "width_mult": 0}, ["width_mult"]),
        ({"arch": "mobilenetv2", "image_size": -8}, ["image_size"]),
        ({"arch": "resnet18", "dropout": 1.5}, ["dropout"]),
    ],
)
def test_bad_configs_name_the_problem(config: dict, words: list[str]) -> None:
    with pytest.raises(InvalidInput) as err:
        build_model(config)
    for word in words:
        assert word in str(err.value)


def test_bad_points_raise_clear_errors() -> None:
    model = _model("resnet18-1x8")
    x = _images(model)
    with pytest.raises(InvalidInput, match="0..5"):
        model.forward_head(x, 6)
    with pytest.raises(InvalidInput):
        model.forward_tail(x, True)
    with pytest.raises(NotFound, match="stem"):
        model.segment("conv9", 5)
    with pytest.raises(InvalidInput, match="after"):
        model.segment(3, 1)
    with pytest.raises(InvalidInput):
        model.feature_shape(1, batch=0)

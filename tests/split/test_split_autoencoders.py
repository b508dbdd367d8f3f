"""The bottleneck modules: shapes, rebuild from config, the codec-faithful fake quantiser."""

from __future__ import annotations

import json

import pytest
import torch

from coinfer.core.errors import InvalidInput, NotFound
from coinfer.core.models import build_model
from coinfer.core.models.autoencoders import Bottleneck, BottleneckConfig, fake_quantise
from quantised import assert_quantised_like_codec

CASES = [
    BottleneckConfig("paper", "map", channels=16, latent_channels=2, feature_size=7),
    BottleneckConfig("ours", "map", channels=16, latent_channels=3, feature_size=7, stride=2),
    BottleneckConfig("ours", "map", channels=8, latent_channels=4, feature_size=28, stride=2),
    BottleneckConfig("ours", "map", channels=32, latent_channels=2, feature_size=1),
    BottleneckConfig("paper", "tokens", channels=64, latent_channels=4, feature_size=17),
    BottleneckConfig("ours", "tokens", channels=64, latent_channels=4, feature_size=17),
]


@pytest.mark.parametrize("config", CASES, ids=lambda c: f"{c.design}-{c.layout}-{c.feature_size}-s{c.stride}")
def test_round_trip_shapes_and_every_parameter_learns(config: BottleneckConfig) -> None:
    torch.manual_seed(0)
    ae = Bottleneck(config)
    x = torch.randn(config.feature_shape(3))
    latent = ae.encoder(x)
    assert tuple(latent.shape) == config.latent_shape(3)
    out = ae(x, bits=4)
    assert out.shape == x.shape and torch.isfinite(out).all()
    out.square().mean().backward()
    for name, p in ae.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("config", CASES[:2] + CASES[4:5], ids=["paper-map", "ours-map", "paper-tokens"])
def test_build_model_rebuilds_encoder_and_decoder_from_json(config: BottleneckConfig) -> None:
    ae = Bottleneck(config)
    for part in (ae.encoder, ae.decoder):
        again = build_model(json.loads(json.dumps(part.config_dict())))
        assert type(again) is type(part)
        again.load_state_dict(part.state_dict(), strict=True)
        x = torch.randn(config.feature_shape(2) if part is ae.encoder else config.latent_shape(2))
        part.eval(), again.eval()
        assert torch.equal(part(x), again(x))


@pytest.mark.parametrize("bits", [8, 4, 2])
def test_fake_quantise_matches_the_codec_per_sample(bits: int) -> None:
    torch.manual_seed(bits)
    # Samples with different ranges: one all-positive, one all-negative, one mixed, one constant.
    latent = torch.stack([torch.rand(3, 5, 5) * 4, -torch.rand(3, 5, 5), torch.randn(3, 5, 5) * 7,
                          torch.full((3, 5, 5), 0.25)])
    faked = fake_quantise(latent, bits)
    for i in range(len(latent)):
        assert_quantised_like_codec(faked[i : i + 1].numpy(), latent[i : i + 1].numpy(), bits, f"sample {i}")


def test_fake_quantise_passes_gradients_straight_through() -> None:
    x = torch.randn(2, 4, requires_grad=True)
    fake_quantise(x, 2).sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))


@pytest.mark.parametrize(
    "values, word",
    [
        ({"design": "jpeg"}, "design"),
        ({"layout": "cube"}, "layout"),
        ({"design": "paper", "stride": 2}, "stride"),
        ({"latent_channels": 0}, "latent_channels"),
        ({"stride": 3}, "stride"),
        ({"chanels": 4}, "chanels"),
    ],
)
def test_bad_configs_name_the_field(values: dict, word: str) -> None:
    with pytest.raises(InvalidInput, match=word):
        build_model({"arch": "ae-encoder", **values})


def test_unknown_arch_lists_bottlenecks_and_backbones() -> None:
    with pytest.raises(NotFound) as err:
        build_model({"arch": "ae-nope"})
    for name in ("ae-encoder", "ae-decoder", "resnet18", "vit"):
        assert name in str(err.value)


def test_bottleneck_training_is_deterministic_for_a_seed() -> None:
    from coinfer.core.data import load_dataset
    from coinfer.server.split import sizing
    from coinfer.server.split.backbones import backbone_config
    from coinfer.core.training import with_loop
    from coinfer.server.split.train import BottleneckTrainConfig, compute_point_features, train_bottleneck

    splits = load_dataset("digits")
    torch.manual_seed(0)
    model = build_model(backbone_config("vgg11", splits, 0.25)).eval()
    feats = compute_point_features(model, 1, splits, max_train_images=256)
    tail = model.segment(1, 5)
    train = with_loop(BottleneckTrainConfig(recon_steps=6, distill_steps=4, qat_bits=(4, 2)), batch_size=32, progress=False)
    for design in ("paper", "ours"):
        config = sizing.for_reduction(feats.feature_shape, design, 4)
        (a, log_a), (b, log_b) = (train_bottleneck(config, feats, tail, train) for _ in range(2))
        assert log_a.recon_loss == log_b.recon_loss and log_a.distill_loss == log_b.distill_loss
        for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
            assert torch.equal(pa, pb), name
        assert len(log_a.recon_loss) == 6 and len(log_a.distill_loss) == 4

"""Small bundles of both kinds the runtime serves, built in seconds: for its tests and benchmark.

* `build_split_bundle`: a thin CNN with a bottleneck at every candidate point, written by
  `coinfer split`'s own `write_split_bundle` (``coinfer.split/1``, as `coinfer.core.split_point`
  reads it);
* `build_devit_bundle`: N tiny head-less ViTs and a DeViT fusion head, written with
  `coinfer decompose`'s own `write_devit_bundle` (kind ``"devit"``).

With ``epochs=0`` nothing is trained (tests only compare the runtime with the same modules run
in-process); the benchmark trains briefly so that accuracies mean something. The real bundles
come from `coinfer decompose` and the split-point pipeline; these only share their layout.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from coinfer.core.bundle import Bundle
from coinfer.core.errors import InvalidInput

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class SplitBundleConfig:
    """A small multi-point split bundle."""

    arch: str = "resnet18"
    """Backbone ("resnet18", "vgg11" or "mobilenetv2")."""
    width_mult: float = 0.25
    """Channel width multiplier."""
    epochs: int = 0
    """Backbone training epochs on the dataset (0 = untrained)."""
    ae_steps: int = 0
    """Reconstruction steps of each point's bottleneck (0 = untrained)."""
    latent_divisor: int = 4
    """Latent channels = feature channels / this (at least 1)."""
    bits: int = 8
    """Codec bits of every point's latent."""
    dataset: str = "digits"
    seed: int = 0
    model_name: str = ""
    """Served model name; "" = "<dataset>-<arch>-split"."""
    samples: int = 8
    """Test images stored in the bundle for `coinfer profile`."""


@dataclass(frozen=True)
class DeViTBundleConfig:
    """A small DeViT bundle: N sub-models and a fusion head."""

    num_devices: int = 4
    embed_dim: int = 32
    """Width of every sub-model (and of each CLS feature)."""
    depth: int = 2
    num_heads: int = 2
    patch_size: int = 2
    fused_dim: int = 64
    """Width of the fused token."""
    epochs: int = 0
    """Joint training epochs of sub-models and fusion (0 = untrained)."""
    dataset: str = "digits"
    seed: int = 0
    stem_channels: tuple[int, ...] | None = None
    """A convolutional stem in every sub-model (ViTConfig.stem_channels); None: patchify."""


def _train(model, splits, epochs: int, seed: int, desc: str) -> float:
    from coinfer.core.training import TrainConfig, evaluate, train_classifier

    if epochs:
        train_classifier(model, splits, TrainConfig(epochs=epochs, batch_size=64, lr=3e-3, warmup_epochs=0.2, seed=seed, progress=False, desc=desc))
    model.eval()
    return evaluate(model, splits.test)


def build_split_bundle(out_dir: str | Path, config: SplitBundleConfig | None = None, *, overwrite: bool = False) -> Bundle:
    """Write a coinfer.split/1 bundle with `coinfer split`'s writer: whole model, and
    head/encoder/decoder/tail at points 1..4."""
    import torch

    from coinfer.core.data import load_dataset, to_float
    from coinfer.core.models import build_model
    from coinfer.core.models.autoencoders import Bottleneck, BottleneckConfig
    from coinfer.server.split.bundle import PointParts, write_split_bundle

    config = config or SplitBundleConfig()
    if config.bits not in (0, 2, 4, 8):
        raise InvalidInput(f"bits must be 0, 2, 4 or 8, got {config.bits}")
    splits = load_dataset(config.dataset, seed=config.seed)
    channels, height, _ = splits.image_shape
    torch.manual_seed(config.seed)
    model = build_model(
        {"arch": config.arch, "in_chans": channels, "num_classes": splits.num_classes, "image_size": height, "width_mult": config.width_mult}
    )
    test_accuracy = _train(model, splits, config.epochs, config.seed, "split-backbone")
    last = model.num_points - 1
    x_train = to_float(splits.train.x[:512])
    points = []
    for point in range(1, last):
        shape = model.feature_shape(point)  # (1, C, H, W)
        c, size = int(shape[1]), int(shape[2])
        ae_config = BottleneckConfig(design="paper", layout="map", channels=c, latent_channels=max(1, c // config.latent_divisor), feature_size=size)
        torch.manual_seed(config.seed + point)
        ae = Bottleneck(ae_config)
        head, tail = model.segment(0, point), model.segment(point, last)
        if config.ae_steps:
            _fit_bottleneck(ae, head, x_train, config.ae_steps, config.seed + point)
        ae.eval()
        points.append(PointParts(point, model.point_names[point], head, ae.encoder, ae.decoder, tail, config.bits, False,
                                 tuple(shape), ae_config.latent_shape(1)))
    name = config.model_name or f"{config.dataset}-{config.arch}-split"
    fixture = json.loads(json.dumps(config.__dict__))
    log.info("split bundle %s: backbone test accuracy %.4f", name, test_accuracy)
    return write_split_bundle(
        out_dir, backbone=model, dataset=config.dataset, points=points,
        samples=(splits.test.x[: config.samples], splits.test.y[: config.samples]),
        report_json=json.dumps({"test_accuracy": test_accuracy, "runtime_fixture": fixture}, indent=2),
        name=name, metadata={"model_name": name, "test_accuracy": test_accuracy, "runtime_fixture": fixture}, overwrite=overwrite,
    )


def _fit_bottleneck(ae, head, x, steps: int, seed: int) -> None:
    """A few reconstruction steps with the backbone frozen (the split-point helper trains properly)."""
    import torch
    import torch.nn.functional as F

    with torch.inference_mode():
        features = head(x)
    features = features.clone()
    scale = float(features.std()) or 1.0
    generator = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.AdamW(ae.parameters(), lr=3e-3)
    ae.train()
    for _ in range(steps):
        idx = torch.randint(0, len(features), (128,), generator=generator)
        f = features[idx]
        loss = F.smooth_l1_loss(ae(f) / scale, f / scale)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
    ae.eval()


def build_devit_bundle(out_dir: str | Path, config: DeViTBundleConfig | None = None, *, overwrite: bool = False) -> Bundle:
    """Write a DeViT bundle of ``num_devices`` tiny ViTs (each sees all classes) and a fusion head."""
    import numpy as np
    import torch

    from coinfer.core.bundle import load_bundle
    from coinfer.core.data import load_dataset
    from coinfer.core.models.vit import ViTConfig, VisionTransformer
    from coinfer.core.devit_bundle import write_devit_bundle
    from coinfer.server.dekd.ensemble import DeViTEnsemble
    from coinfer.core.models.fusion import DeViTFusion, FusionConfig

    config = config or DeViTBundleConfig()
    if config.num_devices < 2:
        raise InvalidInput(f"a DeViT bundle needs at least 2 devices, got {config.num_devices}")
    splits = load_dataset(config.dataset, seed=config.seed)
    channels, height, _ = splits.image_shape
    torch.manual_seed(config.seed)
    submodels = [
        VisionTransformer(
            ViTConfig(
                image_size=height, in_chans=channels, patch_size=config.patch_size, embed_dim=config.embed_dim,
                depth=config.depth, num_heads=config.num_heads, mlp_ratio=2.0, num_classes=0,
                stem_channels=config.stem_channels,
            )
        )
        for _ in range(config.num_devices)
    ]
    fusion = DeViTFusion(FusionConfig(tuple(config.embed_dim for _ in submodels), config.fused_dim, splits.num_classes))
    ensemble = DeViTEnsemble(submodels, fusion)
    test_accuracy = _train(ensemble, splits, config.epochs, config.seed, "devit")
    classes = np.arange(splits.num_classes)
    partition = [c.tolist() for c in np.array_split(classes, config.num_devices)]
    report = json.dumps({"test_accuracy": test_accuracy, "runtime_fixture": config.__dict__}, indent=2)
    write_devit_bundle(
        out_dir,
        [m.eval() for m in submodels],
        fusion.eval(),
        partition,
        {
            "model_name": Path(out_dir).name,
            "test_accuracy": test_accuracy,
            "dataset": config.dataset,
            "devit": {"class_names": list(splits.class_names)},
            "runtime_fixture": json.loads(json.dumps(config.__dict__)),
        },
        report,
        overwrite=overwrite,
    )
    log.info("DeViT bundle %s: %d devices, test accuracy %.4f", Path(out_dir).name, config.num_devices, test_accuracy)
    return load_bundle(out_dir)

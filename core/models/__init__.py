"""The model zoo of the shared core: a ViT for DeViT and three CNN backbones for MAHPPO.

Every backbone is a :class:`SplittableModel` (five stages, six split points) and is described by
a JSON-ready dict: ``build_model(model.config_dict())`` rebuilds the same architecture. The
registry also rebuilds the parts bundles carry that are not backbones: the two halves of a
split-point bottleneck and the DeViT fusion head.

    >>> model = build_model({"arch": "resnet18", "num_classes": 10, "image_size": 32, "width_mult": 0.25})
    >>> feature = model.forward_head(images, 2); logits = model.forward_tail(feature, 2)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from coinfer.core.errors import InvalidInput, NotFound
from coinfer.core.models.autoencoders import BOTTLENECK_ARCHS
from coinfer.core.models.cnn import CNNConfig
from coinfer.core.models.fusion import DeViTFusion
from coinfer.core.models.macs import count_macs
from coinfer.core.models.mobilenetv2 import MobileNetV2
from coinfer.core.models.resnet import ResNet18
from coinfer.core.models.splittable import NUM_POINTS, Segment, SplittableModel, StageSpec
from coinfer.core.models.vgg import VGG11
from coinfer.core.models.vit import ViTConfig, ViTOutput, VisionTransformer

ARCHS: dict[str, type[SplittableModel]] = {
    "vit": VisionTransformer,
    "vgg11": VGG11,
    "resnet18": ResNet18,
    "mobilenetv2": MobileNetV2,
}
"""Registry: architecture name -> model class."""

PART_ARCHS: dict[str, Any] = {**BOTTLENECK_ARCHS, DeViTFusion.arch: DeViTFusion}
"""Registry entries for parts that are not backbones: the bottleneck halves and the DeViT fusion head."""


def build_model(config: Mapping[str, Any]) -> SplittableModel:
    """A freshly initialised model from ``{"arch": name, **config fields}``.

    Unknown ``arch`` raises NotFound listing the valid ones; unknown, missing or bad fields raise
    InvalidInput naming them.
    """
    if not isinstance(config, Mapping):
        raise InvalidInput(f"a model config must be a mapping, got {type(config).__name__}")
    if "arch" not in config:
        raise InvalidInput(f"a model config needs an 'arch' key (one of {', '.join(ARCHS)})")
    arch = config["arch"]
    if not isinstance(arch, str):  # a list or dict here would fail the registry look-up as TypeError
        raise InvalidInput(f"a model config's 'arch' must be a string, got {type(arch).__name__}")
    if arch in PART_ARCHS:  # rebuilt from bundles: bottleneck halves, the fusion head
        return PART_ARCHS[arch].from_config_dict(config)
    if arch not in ARCHS:
        raise NotFound(f"unknown model arch {arch!r}; valid: {', '.join([*ARCHS, *PART_ARCHS])}")
    return ARCHS[arch].from_config_dict(config)


__all__ = [
    "ARCHS",
    "CNNConfig",
    "MobileNetV2",
    "NUM_POINTS",
    "PART_ARCHS",
    "ResNet18",
    "Segment",
    "SplittableModel",
    "StageSpec",
    "VGG11",
    "ViTConfig",
    "ViTOutput",
    "VisionTransformer",
    "build_model",
    "count_macs",
]

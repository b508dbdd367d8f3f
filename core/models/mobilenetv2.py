"""MobileNetV2 as the MAHPPO backbone, adapted to small images.

Layout follows torchvision's ``mobilenet_v2``: ``features.0`` is the stem conv, ``features.1``
to ``features.17`` are the inverted-residual blocks of the paper's settings table, ``features.18``
is the 1x1 conv to the last width, then pooling and ``classifier`` (dropout, linear). Images
under 64 px get a stride-1 stem and a stride-1 first 24-channel stage (the CIFAR adaptation),
so an 8x8 input reaches the last block at 1x1.

Split points follow the authors' code, which cuts in front of ``features[2]``, ``[3]``, ``[5]``
and ``[8]``:

====  ================  ==================
point label (cut after) feature at 224 px
====  ================  ==================
1     features.1        16 x 112 x 112
2     features.2        24 x 56 x 56
3     features.4        32 x 28 x 28
4     features.7        64 x 14 x 14
====  ================  ==================

The built-in Jetson Nano profiles use the same labels; the cuts are the paper's, so the
profiles' ``feature_bits`` equal this model's feature sizes at 224 px (32-bit floats).
"""

from __future__ import annotations

import torch
from torch import nn

from coinfer.core.models.cnn import CNNConfig, check_cnn_config, init_cnn_weights, scale_channels
from coinfer.core.models.splittable import SplittableModel, StageSpec

POINT_LABELS = ("features.1", "features.2", "features.4", "features.7")
INVERTED_RESIDUAL_SETTINGS: tuple[tuple[int, int, int, int], ...] = (
    # expansion t, output channels c, repeats n, first stride s
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
CUT_AFTER = (1, 2, 4, 7)
"""Index in ``features`` of the last block before each candidate point."""


def conv_bn_act(in_channels: int, out_channels: int, kernel: int, stride: int, groups: int = 1) -> nn.Sequential:
    """Convolution, BatchNorm, ReLU6."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU6(inplace=True),
    )


class InvertedResidual(nn.Module):
    """Expand (1x1), depthwise 3x3, project (1x1, linear); residual when the shape is kept."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = in_channels * expansion
        self.use_residual = stride == 1 and in_channels == out_channels
        layers: list[nn.Module] = []
        if expansion != 1:
            layers.append(conv_bn_act(in_channels, hidden, 1, 1))
        layers += [
            conv_bn_act(hidden, hidden, 3, stride, groups=hidden),
            nn.Conv2d(hidden, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return x + out if self.use_residual else out


class MobileNetV2(SplittableModel):
    """MobileNetV2 backbone with five stages (see the module docstring for the cuts)."""

    arch = "mobilenetv2"
    config_class = CNNConfig

    def __init__(self, config: CNNConfig | None = None) -> None:
        super().__init__()
        cfg = check_cnn_config(self, config if config is not None else CNNConfig())
        self.config = cfg
        stem_width = scale_channels(32, cfg.width_mult)
        # torchvision keeps the last width at 1280 for thin networks and widens it for thick ones.
        last_width = scale_channels(1280, max(1.0, cfg.width_mult))
        layers: list[nn.Module] = [conv_bn_act(cfg.in_chans, stem_width, 3, 1 if cfg.small_input else 2)]
        channels = stem_width
        for t, c, n, s in INVERTED_RESIDUAL_SETTINGS:
            width = scale_channels(c, cfg.width_mult)
            if cfg.small_input and c == 24:
                s = 1  # small images keep their resolution one stage longer
            for i in range(n):
                layers.append(InvertedResidual(channels, width, s if i == 0 else 1, t))
                channels = width
        layers.append(conv_bn_act(channels, last_width, 1, 1))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.classifier = nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(last_width, cfg.num_classes))
        init_cnn_weights(self)

        bounds = [0] + [i + 1 for i in CUT_AFTER] + [len(layers)]
        specs = [
            StageSpec(tuple(f"features.{i}" for i in range(lo, hi))) for lo, hi in zip(bounds[:-1], bounds[1:])
        ]
        specs[-1] = StageSpec(specs[-1].parts + ("avgpool", "flatten", "classifier"))
        self._init_split(("input", *POINT_LABELS, "local"), tuple(specs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, num_classes)."""
        return self.classifier(self.flatten(self.avgpool(self.features(x))))

"""VGG11 with batch norm, as the MAHPPO backbone, adapted to small images.

Layer layout follows torchvision's ``vgg11_bn`` (``features`` = conv, bn, relu per layer and a
max-pool after conv 1, 2, 4, 6 and 8; ``classifier`` = three linear layers), so ``features.{i}``
indices match it. Small-input changes: a pool that would shrink a map below 1 px is an
``nn.Identity`` (indices stay put), and images under 64 px pool to 1x1 before a classifier of
width 512 instead of 7x7 before width 4096.

Split points follow the authors' code, which cuts in front of torchvision's ``features[3]``,
``[6]``, ``[11]`` and ``[16]``, i.e. after the first four max-pools:

====  ======  ===============================  ====================
point label   cut after                        feature at 224 px
====  ======  ===============================  ====================
1     pool1   conv 1 + pool 1                  64 x 112 x 112
2     pool2   conv 2 + pool 2                  128 x 56 x 56
3     pool3   conv 4 + pool 3                  256 x 28 x 28
4     pool4   conv 6 + pool 4                  512 x 14 x 14
====  ======  ===============================  ====================

The built-in Jetson Nano profiles use the same labels; the cuts are the paper's, so the
profiles' ``feature_bits`` equal this model's feature sizes at 224 px (32-bit floats).
"""

from __future__ import annotations

import torch
from torch import nn

from coinfer.core.models.cnn import CNNConfig, check_cnn_config, init_cnn_weights, scale_channels
from coinfer.core.models.splittable import SplittableModel, StageSpec

VGG11_LAYERS: tuple[int | str, ...] = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")
"""Conv widths in order, "M" for a 2x2 max-pool."""
POINT_LABELS = ("pool1", "pool2", "pool3", "pool4")


class VGG11(SplittableModel):
    """VGG11-BN backbone with five stages split after each of the first four pools."""

    arch = "vgg11"
    config_class = CNNConfig

    def __init__(self, config: CNNConfig | None = None) -> None:
        super().__init__()
        cfg = check_cnn_config(self, config if config is not None else CNNConfig())
        self.config = cfg
        layers: list[nn.Module] = []
        pool_ends: list[int] = []  # index of the last module of each pool stage
        channels, size = cfg.in_chans, cfg.image_size
        for item in VGG11_LAYERS:
            if item == "M":
                if size >= 2:
                    layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
                    size //= 2
                else:  # already 1x1: keep the slot so indices match every image size
                    layers.append(nn.Identity())
                pool_ends.append(len(layers) - 1)
                continue
            width = scale_channels(int(item), cfg.width_mult)
            layers += [
                nn.Conv2d(channels, width, kernel_size=3, padding=1),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
            ]
            channels = width
        self.features = nn.Sequential(*layers)
        pooled = 1 if cfg.small_input else 7
        hidden = scale_channels(512 if cfg.small_input else 4096, cfg.width_mult)
        self.avgpool = nn.AdaptiveAvgPool2d(pooled)
        self.flatten = nn.Flatten(1)
        self.classifier = nn.Sequential(
            nn.Linear(channels * pooled * pooled, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(cfg.dropout),
            nn.Linear(hidden, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(cfg.dropout),
            nn.Linear(hidden, cfg.num_classes),
        )
        init_cnn_weights(self)

        bounds = [0] + [end + 1 for end in pool_ends[:4]] + [len(layers)]
        specs = [
            StageSpec(tuple(f"features.{i}" for i in range(lo, hi))) for lo, hi in zip(bounds[:-1], bounds[1:])
        ]
        last = specs[-1]
        specs[-1] = StageSpec(last.parts + ("avgpool", "flatten", "classifier"))
        self._init_split(("input", *POINT_LABELS, "local"), tuple(specs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, num_classes)."""
        return self.classifier(self.flatten(self.avgpool(self.features(x))))

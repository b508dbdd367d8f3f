"""ResNet18 as the MAHPPO backbone, adapted to small images.

Layout and names follow torchvision's ``resnet18`` (``conv1``, ``bn1``, ``relu``, ``maxpool``,
``layer1..layer4`` of two BasicBlocks each, ``avgpool``, ``fc``). Images under 64 px get the
CIFAR stem: a 3x3 stride-1 ``conv1`` and no max-pool (``maxpool`` is an ``nn.Identity``), so an
8x8 input still reaches ``layer4`` at 1x1.

Split points follow the authors' code, which cuts in front of ``layer1``, ``layer2[1]``,
``layer3[1]`` and ``layer4[1]``:

====  ================  =========================  ==================
point label             cut after                  feature at 224 px
====  ================  =========================  ==================
1     stem              the stem                   64 x 56 x 56
2     layer2.0          layer1 and layer2.0        128 x 28 x 28
3     layer3.0          layer2.1 and layer3.0      256 x 14 x 14
4     layer4.0          layer3.1 and layer4.0      512 x 7 x 7
====  ================  =========================  ==================
"""

from __future__ import annotations

import torch
from torch import nn

from coinfer.core.models.cnn import CNNConfig, check_cnn_config, init_cnn_weights, scale_channels
from coinfer.core.models.splittable import SplittableModel, StageSpec

POINT_LABELS = ("stem", "layer2.0", "layer3.0", "layer4.0")


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a shortcut (a 1x1 projection when the shape changes)."""

    def __init__(self, in_channels: int, channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        if stride != 1 or in_channels != channels:
            self.downsample: nn.Module = nn.Sequential(
                nn.Conv2d(in_channels, channels, 1, stride=stride, bias=False), nn.BatchNorm2d(channels)
            )
        else:
            self.downsample = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.downsample(x))


def _layer(in_channels: int, channels: int, stride: int) -> nn.Sequential:
    """One ResNet18 stage: two BasicBlocks, the first one changing width and stride."""
    return nn.Sequential(BasicBlock(in_channels, channels, stride), BasicBlock(channels, channels, 1))


class ResNet18(SplittableModel):
    """ResNet18 backbone with five stages (see the module docstring for the cuts)."""

    arch = "resnet18"
    config_class = CNNConfig

    def __init__(self, config: CNNConfig | None = None) -> None:
        super().__init__()
        cfg = check_cnn_config(self, config if config is not None else CNNConfig())
        self.config = cfg
        widths = [scale_channels(c, cfg.width_mult) for c in (64, 128, 256, 512)]
        if cfg.small_input:
            self.conv1 = nn.Conv2d(cfg.in_chans, widths[0], 3, stride=1, padding=1, bias=False)
            self.maxpool: nn.Module = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(cfg.in_chans, widths[0], 7, stride=2, padding=3, bias=False)
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = _layer(widths[0], widths[0], stride=1)
        self.layer2 = _layer(widths[0], widths[1], stride=2)
        self.layer3 = _layer(widths[1], widths[2], stride=2)
        self.layer4 = _layer(widths[2], widths[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.dropout = nn.Dropout(cfg.dropout) if cfg.dropout > 0 else nn.Identity()
        self.fc = nn.Linear(widths[3], cfg.num_classes)
        init_cnn_weights(self)

        specs = (
            StageSpec(("conv1", "bn1", "relu", "maxpool")),
            StageSpec(("layer1", "layer2.0")),
            StageSpec(("layer2.1", "layer3.0")),
            StageSpec(("layer3.1", "layer4.0")),
            StageSpec(("layer4.1", "avgpool", "flatten", "dropout", "fc")),
        )
        self._init_split(("input", *POINT_LABELS, "local"), specs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, num_classes)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.dropout(self.flatten(self.avgpool(x))))

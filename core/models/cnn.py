"""What the three CNN backbones share: their config, channel scaling and small-input rule.

The MAHPPO backbones (VGG11, ResNet18, MobileNetV2) were defined for 224x224 ImageNet-style
images. Here they also take 8x8 digits, 28x28 Fashion-MNIST and 32x32 colour images: below
:data:`SMALL_INPUT_PX` the early downsampling of each network is dropped (the usual CIFAR
adaptation) and a max-pool is only kept while the feature map is at least 2 px wide, so no
input is reduced below 1x1. ``width_mult`` thins every layer for quick runs.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from coinfer.core.errors import InvalidInput
from coinfer.core.models._config import check_positive_int
from coinfer.core.models.splittable import SplittableModel

SMALL_INPUT_PX = 64
"""Images narrower than this skip the networks' ImageNet stems (stride-2 stem conv, early pools)."""


@dataclass(frozen=True)
class CNNConfig:
    """Settings shared by every CNN backbone in the zoo."""

    num_classes: int = 10
    """Classes of the final linear layer."""
    in_chans: int = 3
    """Channels of the input image (1 for digits and Fashion-MNIST)."""
    image_size: int = 32
    """Height and width of the square input image, in pixels; decides the small-input stem."""
    width_mult: float = 1.0
    """Multiplier on every layer's channel count (e.g. 0.25 for quick runs)."""
    dropout: float = 0.0
    """Dropout probability in front of the final classifier layer(s)."""

    def __post_init__(self) -> None:
        check_positive_int("cnn", "num_classes", self.num_classes)
        check_positive_int("cnn", "in_chans", self.in_chans)
        check_positive_int("cnn", "image_size", self.image_size)
        if isinstance(self.width_mult, bool) or not isinstance(self.width_mult, (int, float)) or self.width_mult <= 0:
            raise InvalidInput(f"cnn: width_mult must be a positive number, got {self.width_mult!r}")
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)) or not 0 <= self.dropout < 1:
            raise InvalidInput(f"cnn: dropout must be in [0, 1), got {self.dropout!r}")

    @property
    def small_input(self) -> bool:
        """Whether the ImageNet stem downsampling is dropped (image_size < SMALL_INPUT_PX)."""
        return self.image_size < SMALL_INPUT_PX


def scale_channels(channels: int, width_mult: float, divisor: int = 8) -> int:
    """``channels * width_mult`` rounded to a multiple of ``divisor`` (at least ``divisor``).

    Rounding never goes more than 10% below the exact value (MobileNet's rule), so thin networks
    keep hardware-friendly widths.
    """
    exact = channels * width_mult
    rounded = max(divisor, int(exact + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * exact:
        rounded += divisor
    return rounded


def check_cnn_config(model: SplittableModel, config: object) -> CNNConfig:
    """The config a CNN constructor was given, or a clear error."""
    if not isinstance(config, CNNConfig):
        raise InvalidInput(f"{type(model).__name__} needs a CNNConfig, got {type(config).__name__}")
    return config


def init_cnn_weights(model: nn.Module) -> None:
    """He-normal convolutions (fan-out), unit BatchNorm, small-normal linear layers (torchvision's choice)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            nn.init.zeros_(m.bias)

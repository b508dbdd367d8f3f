"""Autoencoder bottlenecks that shrink the feature a device uploads at a split point.

Two designs, each an encoder (runs on the device after the head) and a decoder (runs on the
server before the tail), built separately so a bundle can ship each to its own side:

* ``"paper"``: MAHPPO's bottleneck (Hao et al., TMC 2023): one 1x1 convolution from C to
  ``latent_channels`` and one 1x1 convolution back; quantisation is applied afterwards.
* ``"ours"``: a small convolutional encoder/decoder with BatchNorm and GELU. It may halve the
  latent's spatial size (``stride=2``) so narrow early layers can still trade channels for
  resolution; a sigmoid bounds the latent to (0, 1), so the codec's per-message min-max range
  is stable and starts at zero and every code level is used even at 2 bits (without it, 2-bit
  accuracy at ResNet18's first point on Fashion-MNIST fell from 86% to 38%); and it is trained
  with the codec's quantiser in the loop (see :func:`fake_quantise`), so its decoder has seen
  the rounding it will get on the wire.

Both take CNN feature maps (``layout="map"``, B x C x H x W) or ViT tokens (``layout="tokens"``,
B x T x C, compressed token by token between blocks).

The latent crosses the network as ``coinfer.core.codec.to_bytes(encode(latent, bits))``: the
modules here never quantise at inference; the codec does, so payloads are counted exactly.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from coinfer.core.errors import InvalidInput
from coinfer.core.models._config import check_positive_int, config_for_arch

Design = Literal["paper", "ours"]
Layout = Literal["map", "tokens"]
DESIGNS: tuple[str, ...] = ("paper", "ours")
LAYOUTS: tuple[str, ...] = ("map", "tokens")
_WHAT = "bottleneck"


@dataclass(frozen=True)
class BottleneckConfig:
    """Shape and design of one split-point bottleneck (shared by its encoder and decoder)."""

    design: str = "ours"
    """"paper" (1x1 conv down and up) or "ours" (conv encoder/decoder with normalisation)."""
    layout: str = "map"
    """"map" for CNN features B x C x H x W, "tokens" for ViT tokens B x T x C."""
    channels: int = 64
    """Channels C of the feature (token width for "tokens")."""
    latent_channels: int = 2
    """Channels (token width) of the latent that crosses the network."""
    feature_size: int = 1
    """Height (= width) of the feature map; tokens per image for "tokens"."""
    stride: int = 1
    """Spatial reduction of the latent: 1, or 2 ("ours" on maps only)."""
    hidden_channels: int = 0
    """Width of the hidden layers of "ours"; 0 means max(channels, 16). Unused by "paper"."""

    def __post_init__(self) -> None:
        if self.design not in DESIGNS:
            raise InvalidInput(f"{_WHAT}: design must be one of {', '.join(DESIGNS)}, got {self.design!r}")
        if self.layout not in LAYOUTS:
            raise InvalidInput(f"{_WHAT}: layout must be one of {', '.join(LAYOUTS)}, got {self.layout!r}")
        for name in ("channels", "latent_channels", "feature_size", "stride"):
            check_positive_int(_WHAT, name, getattr(self, name))
        check_positive_int(_WHAT, "hidden_channels", self.hidden_channels, minimum=0)
        if self.stride not in (1, 2):
            raise InvalidInput(f"{_WHAT}: stride must be 1 or 2, got {self.stride}")
        if self.stride == 2 and (self.design != "ours" or self.layout != "map"):
            raise InvalidInput(f"{_WHAT}: stride 2 exists only for design 'ours' on feature maps")

    @property
    def hidden(self) -> int:
        """Hidden width of "ours"."""
        return self.hidden_channels or max(self.channels, 16)

    @property
    def latent_size(self) -> int:
        """Height (= width) of the latent map; tokens for "tokens"."""
        return -(-self.feature_size // self.stride)

    def feature_shape(self, batch: int = 1) -> tuple[int, ...]:
        """Shape of the feature the encoder takes."""
        if self.layout == "tokens":
            return (batch, self.feature_size, self.channels)
        return (batch, self.channels, self.feature_size, self.feature_size)

    def latent_shape(self, batch: int = 1) -> tuple[int, ...]:
        """Shape of the latent the encoder produces (what is quantised and sent)."""
        if self.layout == "tokens":
            return (batch, self.latent_size, self.latent_channels)
        return (batch, self.latent_channels, self.latent_size, self.latent_size)


class _BottleneckPart(nn.Module):
    """Shared plumbing: config round trip through ``build_model``."""

    arch: ClassVar[str]

    def __init__(self, config: BottleneckConfig) -> None:
        super().__init__()
        if not isinstance(config, BottleneckConfig):
            raise InvalidInput(f"{type(self).__name__} needs a BottleneckConfig, got {type(config).__name__}")
        self.config = config

    @classmethod
    def from_config_dict(cls, values: Mapping[str, Any]) -> _BottleneckPart:
        """Build from ``{"arch": ..., **BottleneckConfig fields}`` (the registry's entry point)."""
        return cls(config_for_arch(BottleneckConfig, values, cls.arch))

    def config_dict(self) -> dict[str, Any]:
        """JSON-ready config; ``build_model(part.config_dict())`` rebuilds the same module."""
        return {"arch": self.arch, **dataclasses.asdict(self.config)}

    def num_params(self) -> int:
        """Number of parameters."""
        return sum(p.numel() for p in self.parameters())


class _Tokens(nn.Module):
    """Apply a per-channel module to B x T x C tokens by viewing them as a B x C x T x 1 map."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x.transpose(1, 2).unsqueeze(-1)).squeeze(-1).transpose(1, 2)


def _conv_bn_gelu(c_in: int, c_out: int, kernel: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(c_out), nn.GELU()]


class BottleneckEncoder(_BottleneckPart):
    """Device side: feature -> latent."""

    arch = "ae-encoder"

    def __init__(self, config: BottleneckConfig | None = None) -> None:
        super().__init__(config if config is not None else BottleneckConfig())
        cfg = self.config
        if cfg.design == "paper":
            body: nn.Module = nn.Conv2d(cfg.channels, cfg.latent_channels, 1)
        elif cfg.layout == "map":
            # A 3x3 layer sees neighbours (and may stride), a 1x1 layer picks the latent channels.
            body = nn.Sequential(
                *_conv_bn_gelu(cfg.channels, cfg.hidden, 3, cfg.stride),
                nn.Conv2d(cfg.hidden, cfg.latent_channels, 1),
                nn.Sigmoid(),
            )
        else:
            # Tokens have no neighbourhood here: a per-token two-layer network (1x1 convs).
            body = nn.Sequential(*_conv_bn_gelu(cfg.channels, cfg.hidden, 1), nn.Conv2d(cfg.hidden, cfg.latent_channels, 1),
                                 nn.Sigmoid())
        self.body = _Tokens(body) if cfg.layout == "tokens" else body

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        return self.body(feature)


class _Crop(nn.Module):
    """Cut an upsampled map back to the feature's size (odd sizes round up when strided)."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[..., : self.size, : self.size]


class BottleneckDecoder(_BottleneckPart):
    """Server side: latent (after the codec round trip) -> feature for the tail."""

    arch = "ae-decoder"

    def __init__(self, config: BottleneckConfig | None = None) -> None:
        super().__init__(config if config is not None else BottleneckConfig())
        cfg = self.config
        if cfg.design == "paper":
            body: nn.Module = nn.Conv2d(cfg.latent_channels, cfg.channels, 1)
        else:
            layers = _conv_bn_gelu(cfg.latent_channels, cfg.hidden, 1)
            if cfg.stride == 2:
                layers += [nn.ConvTranspose2d(cfg.hidden, cfg.hidden, 2, stride=2), _Crop(cfg.feature_size)]
            kernel = 3 if cfg.layout == "map" else 1
            layers += _conv_bn_gelu(cfg.hidden, cfg.hidden, kernel)
            layers.append(nn.Conv2d(cfg.hidden, cfg.channels, 1))
            body = nn.Sequential(*layers)
        self.body = _Tokens(body) if cfg.layout == "tokens" else body

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        return self.body(latent)


class Bottleneck(nn.Module):
    """Encoder and decoder together, for training; ``bits`` > 0 puts the codec's rounding between them."""

    def __init__(self, config: BottleneckConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = BottleneckEncoder(config)
        self.decoder = BottleneckDecoder(config)

    def forward(self, feature: torch.Tensor, bits: int = 0) -> torch.Tensor:
        latent = self.encoder(feature)
        if bits:
            latent = fake_quantise(latent, bits)
        return self.decoder(latent)


BOTTLENECK_ARCHS: dict[str, type[_BottleneckPart]] = {
    BottleneckEncoder.arch: BottleneckEncoder,
    BottleneckDecoder.arch: BottleneckDecoder,
}
"""Registry entries ``build_model`` also accepts: the two halves of a bottleneck."""


def fake_quantise(latent: torch.Tensor, bits: int) -> torch.Tensor:
    """The codec's per-message min-max quantisation, per sample, with a straight-through gradient.

    Mirrors ``coinfer.core.codec.encode``: the range always contains zero, scale = range /
    (2^bits - 1), integer zero point; every sample of the batch is its own message (batch-1
    payloads), so each gets its own scale.
    """
    if bits not in (8, 4, 2):
        raise InvalidInput(f"quantisation bits must be 8, 4 or 2, got {bits}")
    levels = float((1 << bits) - 1)
    flat = latent.detach().flatten(1)
    lo = flat.amin(dim=1).clamp(max=0.0)
    hi = flat.amax(dim=1).clamp(min=0.0)
    span = hi - lo
    scale = torch.where(span > 0, span / levels, torch.ones_like(span))
    zero_point = torch.round(-lo / scale)
    shape = (-1,) + (1,) * (latent.dim() - 1)
    scale, zero_point = scale.view(shape), zero_point.view(shape)
    codes = torch.clamp(torch.round(latent.detach() / scale) + zero_point, 0.0, levels)
    restored = scale * (codes - zero_point)
    return latent + (restored - latent).detach()

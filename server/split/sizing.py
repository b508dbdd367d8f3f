"""How big a bottleneck's latent is: by element reduction, or by a compression target in bytes.

Payload sizes come from the codec itself (an encoded zero latent of the right shape, no zlib),
so a compression target is met on the wire, header included, not in a formula. zlib, when the
bundle allows it, can only make real payloads smaller.
"""

from __future__ import annotations

import math

import numpy as np

from coinfer.core.codec import encode, to_bytes
from coinfer.core.errors import InvalidInput
from coinfer.core.models.autoencoders import DESIGNS, BottleneckConfig

MIN_STRIDE_SIZE = 8
"""Design "ours" halves the latent's resolution on maps at least this wide."""


def feature_layout(feature_shape: tuple[int, ...]) -> str:
    """"map" for (B, C, H, W) features, "tokens" for (B, T, C)."""
    if len(feature_shape) == 4:
        if feature_shape[2] != feature_shape[3]:
            raise InvalidInput(f"bottlenecks take square feature maps, got {list(feature_shape)}")
        return "map"
    if len(feature_shape) == 3:
        return "tokens"
    raise InvalidInput(f"no bottleneck for a feature of shape {list(feature_shape)}")


def fp32_bytes(feature_shape: tuple[int, ...]) -> int:
    """Bytes of one image's feature as float32 (the uncompressed reference)."""
    return 4 * math.prod(feature_shape[1:])


def _config(feature_shape: tuple[int, ...], design: str, latent_channels: int) -> BottleneckConfig:
    if design not in DESIGNS:
        raise InvalidInput(f"unknown bottleneck design {design!r}; valid: {', '.join(DESIGNS)}")
    layout = feature_layout(feature_shape)
    if layout == "map":
        channels, size = feature_shape[1], feature_shape[2]
    else:
        size, channels = feature_shape[1], feature_shape[2]
    stride = 2 if design == "ours" and layout == "map" and size >= MIN_STRIDE_SIZE else 1
    return BottleneckConfig(design=design, layout=layout, channels=channels, latent_channels=latent_channels,
                            feature_size=size, stride=stride)


def _max_latent_channels(feature_shape: tuple[int, ...], design: str) -> int:
    """Latent channels that keep as many elements as the feature itself."""
    probe = _config(feature_shape, design, 1)
    return max(1, math.prod(feature_shape[1:]) // math.prod(probe.latent_shape()[1:]))


def for_reduction(feature_shape: tuple[int, ...], design: str, reduction: float) -> BottleneckConfig:
    """The bottleneck whose latent holds about 1/``reduction`` of the feature's elements (at least 1 channel)."""
    if not reduction >= 1:
        raise InvalidInput(f"element reduction must be >= 1, got {reduction!r}")
    full = _max_latent_channels(feature_shape, design)
    return _config(feature_shape, design, max(1, round(full / reduction)))


def payload_bytes(config: BottleneckConfig, bits: int) -> int:
    """Exact wire bytes of one latent of ``config`` at ``bits`` without zlib."""
    return len(to_bytes(encode(np.zeros(config.latent_shape(1), dtype=np.float32), bits=bits)))


def header_bytes(config: BottleneckConfig, bits: int) -> int:
    """Bytes of a message that carry no data: header, shape, scale and zero point."""
    return payload_bytes(config, bits) - math.ceil(math.prod(config.latent_shape(1)) * bits / 8)


def for_compression(feature_shape: tuple[int, ...], design: str, compression: float, bits: int) -> BottleneckConfig:
    """The widest latent whose payload at ``bits`` is at most fp32 bytes / ``compression``.

    The data part is never squeezed below the message's own header: once the header dominates,
    halving the data no longer halves the payload, it only costs accuracy. So small features
    (late points on tiny images) get up to twice the header size and reach a lower compression
    than asked, which the report shows.
    """
    if not compression > 0:
        raise InvalidInput(f"compression target must be positive, got {compression!r}")
    smallest = _config(feature_shape, design, 1)
    budget = max(fp32_bytes(feature_shape) / compression, 2 * header_bytes(smallest, bits))
    for channels in range(_max_latent_channels(feature_shape, design), 0, -1):
        config = _config(feature_shape, design, channels)
        if payload_bytes(config, bits) <= budget:
            return config
    return _config(feature_shape, design, 1)

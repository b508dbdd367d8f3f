"""Latent sizing: compression targets are met in real codec bytes, reductions in elements."""

from __future__ import annotations

import math

import pytest

from coinfer.core.errors import InvalidInput
from coinfer.server.split import sizing

SHAPES = [(1, 16, 28, 28), (1, 32, 14, 14), (1, 64, 7, 7), (1, 50, 64)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("design", ["paper", "ours"])
@pytest.mark.parametrize("bits", [8, 4, 2])
def test_compression_target_is_met_by_the_widest_latent(shape, design, bits) -> None:
    target = 64.0
    config = sizing.for_compression(shape, design, target, bits)
    fp32 = sizing.fp32_bytes(shape)
    floor = 2 * sizing.header_bytes(config, bits)
    budget = max(fp32 / target, floor)
    if sizing.payload_bytes(config, bits) > budget:
        # Unreachable even with one channel (e.g. the paper's design at 8 bits): it falls back to one.
        assert config.latent_channels == 1
        return
    # One more latent channel would break the budget: the latent is as wide as allowed.
    wider = sizing._config(shape, design, config.latent_channels + 1)
    assert sizing.payload_bytes(wider, bits) > budget


def test_tiny_features_keep_at_least_a_header_worth_of_data() -> None:
    shape = (1, 128, 1, 1)  # 512 fp32 bytes: 64x would leave 8 bytes, less than the header
    config = sizing.for_compression(shape, "paper", 64.0, 4)
    header = sizing.header_bytes(config, 4)
    data = sizing.payload_bytes(config, 4) - header
    assert header <= data <= header + 1
    assert config.latent_channels > 1


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("design", ["paper", "ours"])
def test_reduction_sizes_the_latent_in_elements(shape, design) -> None:
    elements = math.prod(shape[1:])
    for reduction in (4, 16):
        config = sizing.for_reduction(shape, design, reduction)
        latent = math.prod(config.latent_shape(1)[1:])
        assert latent == pytest.approx(elements / reduction, rel=0.35) or config.latent_channels == 1


def test_ours_trades_resolution_for_channels_on_wide_maps() -> None:
    ours = sizing.for_reduction((1, 16, 28, 28), "ours", 16)
    paper = sizing.for_reduction((1, 16, 28, 28), "paper", 16)
    assert ours.stride == 2 and ours.latent_shape(1) == (1, 4, 14, 14)
    assert paper.stride == 1 and paper.latent_shape(1) == (1, 1, 28, 28)
    assert sizing.payload_bytes(ours, 8) == sizing.payload_bytes(paper, 8)


def test_bad_targets_are_refused() -> None:
    with pytest.raises(InvalidInput):
        sizing.for_compression(SHAPES[0], "ours", 0, 8)
    with pytest.raises(InvalidInput):
        sizing.for_reduction(SHAPES[0], "ours", 0.5)
    with pytest.raises(InvalidInput, match="design"):
        sizing.for_reduction(SHAPES[0], "zip", 4)
    with pytest.raises(InvalidInput):
        sizing.feature_layout((1, 3))

"""Channel models and the uplink rate with interference (Shannon's formula).

A channel model turns distances into per-sub-channel gains; the paper's is pure path loss
(d^-alpha, the same on every sub-channel, fixed for the episode). ``rayleigh`` multiplies it by
Exp(1) block fading drawn per device, per sub-channel and per slot.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from coinfer.core.errors import InvalidInput
from coinfer.rl.scenario import NetworkConfig


class ChannelModel(Protocol):
    """Gains of every device on every sub-channel."""

    redraw_each_slot: bool
    """Whether gains change at every slot (fading) or only at reset."""

    def gains(self, distance_m: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Gains (E, N, K) for distances (E, N)."""
        ...


class PathLossChannel:
    """Gain d^-alpha on every sub-channel (the paper)."""

    redraw_each_slot = False

    def __init__(self, num_subchannels: int, path_loss_exponent: float) -> None:
        self.num_subchannels = num_subchannels
        self.path_loss_exponent = path_loss_exponent

    def gains(self, distance_m: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        g = distance_m ** (-self.path_loss_exponent)
        return np.repeat(g[..., None], self.num_subchannels, axis=-1)


class RayleighChannel(PathLossChannel):
    """Path loss times Exp(1) power fading, independent per device, sub-channel and slot."""

    redraw_each_slot = True

    def gains(self, distance_m: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        fading = rng.exponential(1.0, size=distance_m.shape + (self.num_subchannels,))
        return super().gains(distance_m, rng) * fading


def make_channel(config: NetworkConfig) -> ChannelModel:
    if config.channel_model == "path-loss":
        return PathLossChannel(config.num_subchannels, config.path_loss_exponent)
    if config.channel_model == "rayleigh":
        return RayleighChannel(config.num_subchannels, config.path_loss_exponent)
    raise InvalidInput(f"unknown channel model {config.channel_model!r}")


def uplink_rates_bps(
    received_w: np.ndarray,
    uploading: np.ndarray,
    channel_slot: np.ndarray,
    num_channel_slots: int,
    bandwidth_hz: float,
    noise_w: float,
) -> np.ndarray:
    """Rate (E, N) of every uploading device; 0 for the others.

    ``received_w`` (E, N) is each device's received power (transmit power x gain on its current
    sub-channel). ``channel_slot`` (E, N) numbers each (environment, sub-channel) pair
    (e * K + k) so that one bincount sums the power on every sub-channel of every environment. The
    interference on a device is the received power of every other device uploading on the same
    sub-channel at this moment.
    """
    signal_w = np.where(uploading, received_w, 0.0)
    per_channel_w = np.bincount(channel_slot.ravel(), weights=signal_w.ravel(), minlength=num_channel_slots)
    interference_w = per_channel_w[channel_slot] - signal_w
    return bandwidth_hz * np.log2(1.0 + signal_w / (interference_w + noise_w))

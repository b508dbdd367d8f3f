"""Channel models and the uplink rate with interference (Shannon's formula).

A channel model turns distances into per-sub-channel gains; the paper's is pure path loss
(d^-alpha, the same on every sub-channel, fixed for the episode). ``rayleigh`` multiplies it by
Exp(1) block fading drawn per device, per sub-channel and per slot.
"""

from __future__ import annotations

import math
from typing import Protocol

import numpy as np
from numba import njit

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


@njit(cache=True, nogil=True, error_model="numpy")
def cell_uplink_rates_bps(received_w, uploading, channel, num_subchannels, bandwidth_hz, noise_w, out):
    """Rate of each of one environment's devices into ``out`` (N,); 0 for those not uploading.

    ``received_w`` (N,) is each device's received power (transmit power x gain on its current
    sub-channel), ``channel`` (N,) that sub-channel. The interference on a device is the received
    power of every other device uploading on the same sub-channel at this moment. Compiled: the
    simulator's event loop (`coinfer.rl.sim.events`) calls it after every event.
    """
    per_channel_w = np.zeros(num_subchannels)
    for n in range(received_w.shape[0]):
        out[n] = received_w[n] if uploading[n] else 0.0
        per_channel_w[channel[n]] += out[n]
    for n in range(received_w.shape[0]):
        signal_w = out[n]
        out[n] = bandwidth_hz * math.log2(1.0 + signal_w / (per_channel_w[channel[n]] - signal_w + noise_w))


def uplink_rates_bps(
    received_w: np.ndarray,
    uploading: np.ndarray,
    channel: np.ndarray,
    num_subchannels: int,
    bandwidth_hz: float,
    noise_w: float,
) -> np.ndarray:
    """Rates (E, N) of every uploading device of E environments (`cell_uplink_rates_bps` per row); 0 for the others."""
    received_w, uploading = np.asarray(received_w, dtype=float), np.asarray(uploading, dtype=bool)
    channel = np.asarray(channel, dtype=np.int64)
    out = np.zeros(received_w.shape)
    for e in range(received_w.shape[0]):
        cell_uplink_rates_bps(received_w[e], uploading[e], channel[e], num_subchannels, bandwidth_hz, noise_w, out[e])
    return out

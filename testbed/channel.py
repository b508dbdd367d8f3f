"""Transmit power -> link rate, mirroring the offloading simulator's channel model.

rate = W log2(1 + p d^-alpha / (interference + noise)): Shannon's formula with pure path-loss
gain, as `coinfer.rl.sim.channel` computes it, so a power the scheduler picks has on the testbed
the effect it has in the simulator. The simulator's function is vectorised over environments
and sub-channels with an internal signature; this is the one-device case written out, and a test
checks that the two agree. The simulator's optional Rayleigh fading draws are not replayed here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from coinfer.core.errors import InvalidInput


@dataclass(frozen=True)
class RadioConfig:
    """The cell's radio: the simulator's `NetworkConfig` fields the rate depends on."""

    bandwidth_hz: float = 1e6
    """W: bandwidth of the device's sub-channel (the paper: 1 MHz)."""
    path_loss_exponent: float = 3.0
    """alpha in the gain d^-alpha (the paper: 3)."""
    noise_w: float = 1e-9
    """Receiver noise power (the paper: 1e-9 W)."""

    def validate(self) -> None:
        for name in ("bandwidth_hz", "path_loss_exponent", "noise_w"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise InvalidInput(f"radio {name} must be a finite number > 0, got {value!r}")


def radio_from_scenario(name_or_path: str) -> RadioConfig:
    """The radio of a simulator scenario (built-in name or TOML path)."""
    from coinfer.rl.scenario import load_scenario

    network = load_scenario(name_or_path).network
    return RadioConfig(network.subchannel_bandwidth_hz, network.path_loss_exponent, network.noise_w)


def uplink_rate_bps(power_w: float, distance_m: float, radio: RadioConfig = RadioConfig(),
                    interference_w: float = 0.0) -> float:
    """Rate of one device uploading at ``power_w`` from ``distance_m`` (others add ``interference_w``)."""
    for name, value in (("power_w", power_w), ("distance_m", distance_m)):
        if not (math.isfinite(value) and value > 0):
            raise InvalidInput(f"{name} must be a finite number > 0, got {value!r}")
    if not (math.isfinite(interference_w) and interference_w >= 0):
        raise InvalidInput(f"interference_w must be >= 0, got {interference_w!r}")
    gain = distance_m ** (-radio.path_loss_exponent)
    return radio.bandwidth_hz * math.log2(1.0 + power_w * gain / (interference_w + radio.noise_w))

"""Edge-server cost models: what happens to an offloaded task after its upload.

``none`` (the paper): the task is done when its upload ends. ``shared``: the tail runs on the
server, whose speed is shared equally among the tails running at once (processor sharing), then
the result comes back on the device's own downlink (Shannon rate, no interference). The device
waits for its result before it starts its next task.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from coinfer.rl.scenario import DeviceSpec, ServerConfig


@dataclass(frozen=True)
class ServerModel:
    """Per-device, per-point server work and the downlink."""

    tail_s: np.ndarray
    """(N, P) server time of each point's tail when it runs alone; 0 where nothing is offloaded."""
    result_bits: np.ndarray
    """(N, P) bits of the result sent back; 0 where nothing is offloaded."""
    config: ServerConfig
    """The scenario's server section."""

    @property
    def enabled(self) -> bool:
        return self.config.model == "shared"

    def download_rate_bps(self, gain: np.ndarray, noise_w: float) -> np.ndarray:
        """Downlink rate (E, N) from path-loss gains (E, N)."""
        if not self.enabled:
            return np.zeros_like(gain)
        c = self.config
        return c.downlink_bandwidth_hz * np.log2(1.0 + c.downlink_power_w * gain / noise_w)


def make_server(config: ServerConfig, devices: tuple[DeviceSpec, ...]) -> ServerModel:
    n, p = len(devices), devices[0].profile.num_points
    tail_s = np.zeros((n, p))
    result_bits = np.zeros((n, p))
    if config.model == "shared":
        for i, d in enumerate(devices):
            local_s = d.profile.local_latency_s
            for point in d.profile.points:
                if point.uplink_bits > 0:
                    tail_s[i, point.index] = max(local_s - point.head_latency_s, 0.0) / config.speedup
                    result_bits[i, point.index] = config.result_bits
    return ServerModel(tail_s=tail_s, result_bits=result_bits, config=config)

"""Baseline policies: ``local``, ``offload``, ``random``, ``greedy`` (and ``search``, in search.py).

``local`` runs everything on the device; ``offload`` uploads the raw input at full power;
``random`` draws every component uniformly; ``greedy`` lets each device pick the split point and
power that minimise its own time + beta x energy per task on its own sub-channel (device n uses
sub-channel n mod K), as if it were alone in the cell.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from coinfer.core.errors import InvalidInput
from coinfer.rl.actions import JointAction, power_grids_w
from coinfer.rl.policy import FixedPolicy, Policy
from coinfer.rl.scenario import Scenario
from coinfer.rl.sim.core import feature_names
from coinfer.rl.sim.server import make_server


def default_channels(scenario: Scenario) -> np.ndarray:
    return np.arange(scenario.num_devices) % scenario.num_subchannels


def power_bounds_w(scenario: Scenario) -> tuple[np.ndarray, np.ndarray]:
    return (np.array([d.power_range_w[0] for d in scenario.devices]), np.array([d.power_range_w[1] for d in scenario.devices]))


def local_policy(scenario: Scenario) -> FixedPolicy:
    low, _ = power_bounds_w(scenario)
    points = np.full(scenario.num_devices, scenario.num_points - 1)
    return FixedPolicy("local", JointAction(points, default_channels(scenario), low))


def offload_policy(scenario: Scenario) -> FixedPolicy:
    _, high = power_bounds_w(scenario)
    points = np.zeros(scenario.num_devices, dtype=np.int64)
    return FixedPolicy("offload", JointAction(points, default_channels(scenario), high))


class RandomPolicy:
    """Uniform split point, sub-channel and power for every device, every slot (seeded)."""

    name = "random"

    def __init__(self, scenario: Scenario, seed: int = 0) -> None:
        self.scenario, self.seed = scenario, seed
        self.low_w, self.high_w = power_bounds_w(scenario)
        self.rng = np.random.default_rng(seed)

    def reset(self) -> None:
        pass

    def act(self, observation: np.ndarray, deterministic: bool = True, rngs: Sequence[np.random.Generator] | None = None) -> JointAction:
        obs = np.asarray(observation)
        rows = obs.reshape(-1, obs.shape[-1]).shape[0]
        if rngs is not None and len(rngs) != rows:
            raise InvalidInput(f"random: {len(rngs)} generators for {rows} states")
        actions = [self._draw(self.rng if rngs is None else rngs[e]) for e in range(rows)]
        stacked = JointAction(*(np.stack([getattr(a, k) for a in actions]) for k in ("points", "channels", "powers_w")))
        return stacked.env(0) if obs.ndim == 1 else stacked

    def _draw(self, rng: np.random.Generator) -> JointAction:
        N = self.scenario.num_devices
        return JointAction(
            rng.integers(0, self.scenario.num_points, size=N),
            rng.integers(0, self.scenario.num_subchannels, size=N),
            rng.uniform(self.low_w, self.high_w, size=N),
        )


def per_task_costs(scenario: Scenario, distance_m: np.ndarray, powers_w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Time (s) and energy (J) of one task of device n alone in the cell, (N, P, L).

    ``distance_m`` is (N,), ``powers_w`` (N, L) candidate transmit powers.
    """
    net = scenario.network
    server = make_server(scenario.server, scenario.devices)
    head_s = np.array([[p.head_latency_s for p in d.profile.points] for d in scenario.devices])
    head_j = np.array([[p.head_energy_j for p in d.profile.points] for d in scenario.devices])
    bits = np.array([[p.uplink_bits for p in d.profile.points] for d in scenario.devices], dtype=float)
    gain = distance_m ** (-net.path_loss_exponent)
    rate = net.subchannel_bandwidth_hz * np.log2(1.0 + powers_w * gain[:, None] / net.noise_w)  # (N, L)
    upload_s = bits[:, :, None] / rate[:, None, :]
    down_bps = np.maximum(server.download_rate_bps(gain, net.noise_w), 1e-30)
    down_s = server.result_bits / down_bps[:, None] if server.enabled else np.zeros_like(head_s)
    time_s = head_s[:, :, None] + upload_s + (server.tail_s + down_s)[:, :, None]
    energy_j = head_j[:, :, None] + powers_w[:, None, :] * upload_s + (scenario.server.receive_power_w * down_s)[:, :, None]
    return time_s, energy_j


class GreedyPolicy:
    """Each device's best (point, power) on its own sub-channel, ignoring the other devices."""

    name = "greedy"

    def __init__(self, scenario: Scenario, power_levels: int = 8) -> None:
        self.scenario = scenario
        low, high = power_bounds_w(scenario)
        self.powers_w = power_grids_w(low, high, power_levels)
        self.distance_high_m = np.array([d.distance_range_m[1] for d in scenario.devices])
        self.distance_column = feature_names(scenario).index("distance_frac")
        self.num_features = len(feature_names(scenario))

    def reset(self) -> None:
        pass

    def action_for_distances(self, distance_m: np.ndarray) -> JointAction:
        time_s, energy_j = per_task_costs(self.scenario, distance_m, self.powers_w)
        cost = time_s + self.scenario.reward.beta * energy_j  # (N, P, L)
        N, P, L = cost.shape
        best = cost.reshape(N, P * L).argmin(axis=1)
        points, levels = best // L, best % L
        return JointAction(points, default_channels(self.scenario), self.powers_w[np.arange(N), levels])

    def act(self, observation: np.ndarray, deterministic: bool = True, rngs: Sequence[np.random.Generator] | None = None) -> JointAction:
        obs = np.asarray(observation)
        N = self.scenario.num_devices
        if obs.shape[-1] != N * self.num_features:
            raise InvalidInput(f"greedy expects states of {N * self.num_features} values, got {obs.shape[-1]}")
        distance = obs.reshape(obs.shape[:-1] + (N, self.num_features))[..., self.distance_column] * self.distance_high_m
        if obs.ndim == 1:
            return self.action_for_distances(distance)
        actions = [self.action_for_distances(d) for d in distance]
        return JointAction(*(np.stack([getattr(a, k) for a in actions]) for k in ("points", "channels", "powers_w")))


def make_baseline(name: str, scenario: Scenario, seed: int = 0, **options) -> Policy:
    """A baseline by name; ``search`` runs its coordinate search now (seconds to minutes)."""
    if name == "local":
        return local_policy(scenario)
    if name == "offload":
        return offload_policy(scenario)
    if name == "random":
        return RandomPolicy(scenario, seed=seed)
    if name == "greedy":
        return GreedyPolicy(scenario, **options)
    if name == "search":
        from coinfer.rl.search import search_policy

        return search_policy(scenario, seed=seed, **options)
    raise InvalidInput(f"unknown baseline {name!r}")

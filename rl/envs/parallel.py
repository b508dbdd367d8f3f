"""The PettingZoo view: one agent per device, local observations, the global state for a critic.

Agents are ``device_0 .. device_{N-1}``. Each observes its own features and the mean features
of the others (`local_from_global`); ``state()`` is the global state. Every agent gets the shared
reward, and all agents stay until the episode ends (a device with an empty queue still shares
the reward of the others).
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv

from coinfer.core.errors import InvalidInput
from coinfer.rl.scenario import Mode, Scenario, load_scenario
from coinfer.rl.sim.core import Simulator


class OffloadingParallelEnv(ParallelEnv):
    """Multi-agent view of one environment of the simulation core."""

    metadata = {"name": "coinfer_offloading_v0", "render_modes": []}

    def __init__(self, scenario: Scenario | str, mode: Mode = "train", seed: int = 0) -> None:
        self.scenario = load_scenario(scenario)
        self.mode = mode
        self.sim = Simulator(self.scenario, num_envs=1, mode=mode, seed=seed)
        N = self.sim.num_devices
        self.possible_agents = [f"device_{n}" for n in range(N)]
        self.agents: list[str] = []
        high = self.sim.feature_high()
        others = high.max(axis=0)
        self._observation_spaces = {
            a: spaces.Box(low=0.0, high=np.concatenate([high[n], others]).astype(np.float32), dtype=np.float32)
            for n, a in enumerate(self.possible_agents)
        }
        self._action_spaces = {
            a: spaces.Dict(
                {
                    "point": spaces.Discrete(self.sim.num_points),
                    "channel": spaces.Discrete(self.sim.num_subchannels),
                    "power_w": spaces.Box(
                        low=np.float32(self.sim.power_low_w[n]), high=np.float32(self.sim.power_high_w[n]), shape=(1,), dtype=np.float32
                    ),
                }
            )
            for n, a in enumerate(self.possible_agents)
        }
        state_high = high.reshape(-1).astype(np.float32)
        self.state_space = spaces.Box(low=np.zeros_like(state_high), high=state_high, dtype=np.float32)

    @functools.lru_cache(maxsize=None)
    def observation_space(self, agent: str) -> spaces.Space:
        return self._observation_spaces[agent]

    @functools.lru_cache(maxsize=None)
    def action_space(self, agent: str) -> spaces.Space:
        return self._action_spaces[agent]

    def state(self) -> np.ndarray:
        """The global state (N * F,) for a centralised critic."""
        return self.sim.global_state()[0].astype(np.float32)

    def _observations(self) -> dict[str, np.ndarray]:
        local = self.sim.local_observations()[0].astype(np.float32)
        return {a: local[n] for n, a in enumerate(self.possible_agents)}

    def reset(self, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        if seed is not None:
            self.sim = Simulator(self.scenario, num_envs=1, mode=self.mode, seed=seed)
        else:
            self.sim.reset()
        self.agents = list(self.possible_agents)
        return self._observations(), {a: {} for a in self.agents}

    def step(self, actions: dict[str, Any]) -> tuple[dict, dict, dict, dict, dict]:
        if not self.agents:
            raise InvalidInput("the episode has ended; call reset()")
        N = self.sim.num_devices
        points, channels, powers = np.zeros(N, dtype=np.int64), np.zeros(N, dtype=np.int64), np.zeros(N)
        for n, agent in enumerate(self.possible_agents):
            if agent not in actions:
                raise InvalidInput(f"device {n}: no action for agent {agent!r}")
            a = actions[agent]
            try:
                points[n], channels[n] = int(a["point"]), int(a["channel"])
                powers[n] = float(np.asarray(a["power_w"]).reshape(-1)[0])
            except (KeyError, TypeError, IndexError, ValueError) as exc:
                raise InvalidInput(f"device {n}: an action is a dict with point, channel and power_w ({exc})") from None
        outcome = self.sim.step(points[None], channels[None], powers[None])
        reward = float(outcome.reward[0])
        terminated, truncated = bool(outcome.terminated[0]), bool(outcome.truncated[0])
        observations = self._observations()
        infos: dict[str, dict] = {a: {} for a in self.agents}
        if terminated or truncated:
            metrics = self.sim.episode_metrics(0)
            infos = {a: {"episode_metrics": metrics} for a in self.agents}
        agents = list(self.agents)
        if terminated or truncated:
            self.agents = []
        return (
            observations,
            {a: reward for a in agents},
            {a: terminated for a in agents},
            {a: truncated for a in agents},
            infos,
        )

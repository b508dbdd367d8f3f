"""The gymnasium view: one environment, the joint action of every device, the global state.

``action_format="hybrid"`` is the natural Dict action (points, channels, powers_w);
``action_format="discrete"`` is a flat MultiDiscrete [point, channel, power level] per device
with powers from `power_grid_w`, which single-agent libraries (stable-baselines3) accept.
"""

from __future__ import annotations

from typing import Any, Literal

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from coinfer.core.errors import InvalidInput
from coinfer.rl.actions import JointAction, decode_discrete, power_grids_w
from coinfer.rl.scenario import Mode, Scenario, load_scenario
from coinfer.rl.sim.core import Simulator

ActionFormat = Literal["hybrid", "discrete"]


class OffloadingEnv(gym.Env):
    """A single-agent environment over the simulation core (one environment)."""

    metadata = {"render_modes": []}

    def __init__(
        self,
        scenario: Scenario | str,
        mode: Mode = "train",
        seed: int = 0,
        action_format: ActionFormat = "hybrid",
        power_levels: int = 8,
    ) -> None:
        if action_format not in ("hybrid", "discrete"):
            raise InvalidInput(f"action_format must be 'hybrid' or 'discrete', got {action_format!r}")
        self.scenario = load_scenario(scenario)
        self.mode, self.action_format = mode, action_format
        self.sim = Simulator(self.scenario, num_envs=1, mode=mode, seed=seed)
        N, P, K = self.sim.num_devices, self.sim.num_points, self.sim.num_subchannels
        self.num_devices = N
        high = self.sim.feature_high().reshape(-1).astype(np.float32)
        self.observation_space = spaces.Box(low=np.zeros_like(high), high=high, dtype=np.float32)
        self.power_levels_w = power_grids_w(self.sim.power_low_w, self.sim.power_high_w, power_levels)
        if action_format == "hybrid":
            self.action_space = spaces.Dict(
                {
                    "points": spaces.MultiDiscrete([P] * N),
                    "channels": spaces.MultiDiscrete([K] * N),
                    "powers_w": spaces.Box(
                        low=self.sim.power_low_w.astype(np.float32), high=self.sim.power_high_w.astype(np.float32), dtype=np.float32
                    ),
                }
            )
        else:
            self.action_space = spaces.MultiDiscrete(np.tile([P, K, power_levels], N))
        self._needs_reset = True

    def decode_action(self, action: Any) -> JointAction:
        """The `JointAction` an action of this env's action space stands for."""
        N = self.num_devices
        if self.action_format == "hybrid":
            if not isinstance(action, dict) or set(action) != {"points", "channels", "powers_w"}:
                raise InvalidInput("a hybrid action is a dict with keys points, channels and powers_w")
            return JointAction(*(np.asarray(action[k]).reshape(N) for k in ("points", "channels", "powers_w")))
        return decode_discrete(np.asarray(action).reshape(-1), self.power_levels_w)

    def encode_action(self, action: JointAction) -> Any:
        """This env's action for a `JointAction` (discrete: the nearest power level)."""
        if self.action_format == "hybrid":
            return {
                "points": np.asarray(action.points, dtype=np.int64),
                "channels": np.asarray(action.channels, dtype=np.int64),
                "powers_w": np.asarray(action.powers_w, dtype=np.float32),
            }
        level = np.abs(np.log(self.power_levels_w) - np.log(np.asarray(action.powers_w))[:, None]).argmin(axis=1)
        return np.stack([action.points, action.channels, level], axis=1).reshape(-1).astype(np.int64)

    def _observation(self) -> np.ndarray:
        return self.sim.global_state()[0].astype(np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        if seed is not None:
            self.sim = Simulator(self.scenario, num_envs=1, mode=self.mode, seed=seed)
        else:
            self.sim.reset()
        self._needs_reset = False
        return self._observation(), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        if self._needs_reset:
            raise InvalidInput("call reset() before step() (and after an episode ends)")
        joint = self.decode_action(action).batched()
        outcome = self.sim.step(joint.points, joint.channels, joint.powers_w)
        terminated, truncated = bool(outcome.terminated[0]), bool(outcome.truncated[0])
        info: dict = {"finished_tasks": outcome.finished_tasks[0].copy(), "energy_j": outcome.energy_j[0].copy()}
        if terminated or truncated:
            info["episode_metrics"] = self.sim.episode_metrics(0)
            self._needs_reset = True
        return self._observation(), float(outcome.reward[0]), terminated, truncated, info

"""The gymnasium view: one environment, the joint action of every device, the global state.

Registered as ``coinfer/Offloading-v0`` when ``coinfer.rl`` is imported
(``gymnasium.make("coinfer/Offloading-v0", scenario=...)``). The spaces and the two action
formats (``"hybrid"``, ``"discrete"``) are `coinfer.rl.envs.spaces`'s, shared with the vector view.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from coinfer.core.errors import InvalidInput
from coinfer.rl.actions import JointAction
from coinfer.rl.envs.spaces import ActionFormat, JointActionSpaces
from coinfer.rl.scenario import Mode, Scenario, load_scenario
from coinfer.rl.sim.core import Simulator


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
        self.scenario = load_scenario(scenario)
        self.mode, self.action_format = mode, action_format
        self.sim = Simulator(self.scenario, num_envs=1, mode=mode, seed=seed)
        self.num_devices = self.sim.num_devices
        self.spaces = JointActionSpaces(self.sim, action_format, power_levels)
        self.observation_space = self.spaces.observation_space
        self.action_space = self.spaces.action_space
        self.power_levels_w = self.spaces.power_levels_w
        self._needs_reset = True

    def decode_action(self, action: Any) -> JointAction:
        """The `JointAction` an action of this env's action space stands for."""
        return self.spaces.decode(action)

    def encode_action(self, action: JointAction) -> Any:
        """This env's action for a `JointAction` (discrete: the nearest power level)."""
        return self.spaces.encode(action)

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

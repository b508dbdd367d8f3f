"""The batched view: E environments stepped together, with automatic reset (for training).

Every environment runs the same scenario; each is seeded from one root seed through the core.
Observations are global states (E, N * F); actions are `JointAction`s of (E, N) arrays.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from coinfer.rl.actions import JointAction
from coinfer.rl.scenario import Mode, Scenario, load_scenario
from coinfer.rl.sim.core import Simulator
from coinfer.rl.sim.metrics import EpisodeMetrics


@dataclass(frozen=True)
class BatchStep:
    """What one step of every environment returned."""

    observations: np.ndarray
    """(E, D) global states to act on next (a fresh episode's first state where one ended)."""
    rewards: np.ndarray
    """(E,) shared rewards of the slot."""
    terminated: np.ndarray
    """(E,) the episode ended because every queue was empty."""
    truncated: np.ndarray
    """(E,) the episode was cut at the slot limit."""
    final_observations: np.ndarray
    """(E, D) the last state of each episode that ended (equal to ``observations`` elsewhere)."""
    episodes: list[tuple[int, EpisodeMetrics]] = field(default_factory=list)
    """(environment, metrics) of every episode that ended in this step."""


class BatchedEnv:
    """``num_envs`` environments of one scenario over one `Simulator`."""

    def __init__(
        self,
        scenario: Scenario | str,
        num_envs: int,
        mode: Mode = "train",
        seed: int | Sequence[int] = 0,
        episode_keys: Sequence[int | Sequence[int]] | None = None,
        max_slots: int | None = None,
    ) -> None:
        """See `Simulator` for ``mode``, ``seed``, ``episode_keys`` and ``max_slots``."""
        self.scenario = load_scenario(scenario)
        self.sim = Simulator(self.scenario, num_envs=num_envs, mode=mode, seed=seed, episode_keys=episode_keys, max_slots=max_slots)
        self.num_envs = num_envs
        self.num_devices = self.sim.num_devices
        self.num_points = self.sim.num_points
        self.num_subchannels = self.sim.num_subchannels
        self.num_features = self.sim.num_features
        self.observation_dim = self.num_devices * self.num_features

    def reset(self) -> np.ndarray:
        """Start new episodes everywhere; the (E, D) first states."""
        self.sim.reset()
        return self.sim.global_state()

    def step(self, action: JointAction) -> BatchStep:
        outcome = self.sim.step(action.points, action.channels, action.powers_w)
        ended = outcome.terminated | outcome.truncated
        final = self.sim.global_state()
        episodes: list[tuple[int, EpisodeMetrics]] = []
        observations = final
        if ended.any():
            envs = np.flatnonzero(ended)
            episodes = [(int(e), self.sim.episode_metrics(int(e))) for e in envs]
            self.sim.reset(envs)
            observations = self.sim.global_state()
        return BatchStep(observations, outcome.reward, outcome.terminated, outcome.truncated, final, episodes)

"""The batched simulator as a gymnasium `VectorEnv` and as a stable-baselines3 `VecEnv`.

``gymnasium.make_vec("coinfer/Offloading-v0", num_envs=E, vectorization_mode="vector_entry_point",
scenario=...)`` returns an `OffloadingVectorEnv`: E environments stepped together by one
`BatchedEnv`, with the single view's spaces and action formats (`coinfer.rl.envs.spaces`), at the
batched simulator's speed rather than E Python environments'. `coinfer.rl.envs.sb3_vec_env` puts
SB3's interface on it; the ``sb3-ppo`` baseline trains through that.

Seeding. By default every environment draws from its own random stream: ``reset(seed=s)`` gives
environment i the seed s + i, and environment i then steps exactly as
``gymnasium.make("coinfer/Offloading-v0", ...)`` reset with seed s + i (gymnasium's and SB3's
convention for vectors of single environments). ``shared_stream=True`` keeps the batched
simulator's own seeding, one stream for all environments, which MAHPPO and ``sb3-ppo`` train on:
``reset(seed=s)`` then equals ``BatchedEnv(scenario, E, mode, seed=s).reset()``.

Autoreset happens in the same step (``metadata["autoreset_mode"]`` is ``SAME_STEP``): where an
episode ended, the observation returned is the next episode's first, the last one is in
``infos["final_obs"]`` and the episode's `EpisodeMetrics` in ``infos["final_info"]["episode_metrics"]``
(each with its ``_``-prefixed mask).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from coinfer.core.errors import InvalidInput
from coinfer.rl.envs.batched import BatchedEnv, BatchStep
from coinfer.rl.envs.spaces import ActionFormat, JointActionSpaces
from coinfer.rl.scenario import Mode, Scenario, load_scenario


class OffloadingVectorEnv(VectorEnv):
    """``num_envs`` environments of one scenario on the batched simulator."""

    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP, "render_modes": []}

    def __init__(
        self,
        scenario: Scenario | str,
        num_envs: int = 1,
        mode: Mode = "train",
        seed: int = 0,
        action_format: ActionFormat = "hybrid",
        power_levels: int = 8,
        shared_stream: bool = False,
    ) -> None:
        """``seed`` seeds the environments until a ``reset(seed=...)``: environment i gets seed + i,
        or with ``shared_stream`` all share one stream from ``seed``."""
        if isinstance(num_envs, bool) or not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
            raise InvalidInput(f"num_envs must be a positive integer, got {num_envs!r}")
        self.scenario = load_scenario(scenario)
        self.num_envs, self.mode, self.shared_stream = int(num_envs), mode, shared_stream
        self.batched = self._batched_env(seed)
        self.spaces = JointActionSpaces(self.batched.sim, action_format, power_levels)
        self.single_observation_space = self.spaces.observation_space
        self.single_action_space = self.spaces.action_space
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self._needs_reset = True

    def _batched_env(self, seed: int | Sequence[int]) -> BatchedEnv:
        if self.shared_stream:
            if not isinstance(seed, (int, np.integer)):
                raise InvalidInput(f"a shared stream takes one integer seed, got {seed!r}")
            return BatchedEnv(self.scenario, self.num_envs, mode=self.mode, seed=int(seed))
        if isinstance(seed, (int, np.integer)):
            seed = [int(seed) + i for i in range(self.num_envs)]
        return BatchedEnv(self.scenario, self.num_envs, mode=self.mode, seed=list(seed))  # type: ignore[arg-type]

    def reset(self, *, seed: int | Sequence[int] | None = None, options: dict | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        """New episodes everywhere; with ``seed``, from fresh streams (see the module's note on seeding)."""
        super().reset(seed=seed if isinstance(seed, (int, np.integer)) else None)
        if seed is None:
            observations = self.batched.reset()
        else:
            self.batched = self._batched_env(seed)
            # Building the simulator starts episodes. A single environment reset with a seed plays
            # those; the batched simulator's own reset (the shared stream's rule) starts the next.
            observations = self.batched.reset() if self.shared_stream else self.batched.sim.global_state()
        self._needs_reset = False
        return observations.astype(np.float32), {}

    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        if self._needs_reset:
            raise InvalidInput("call reset() before step()")
        step = self.batched.step(self.spaces.decode(actions, self.num_envs))
        return (
            step.observations.astype(np.float32),
            step.rewards.astype(np.float64),
            step.terminated.copy(),
            step.truncated.copy(),
            self._infos(step),
        )

    def _infos(self, step: BatchStep) -> dict[str, Any]:
        infos: dict[str, Any] = {}
        for e, metrics in step.episodes:
            final = {"final_obs": step.final_observations[e].astype(np.float32), "final_info": {"episode_metrics": metrics}}
            infos = self._add_info(infos, final, e)
        return infos

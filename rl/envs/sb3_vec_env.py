"""stable-baselines3's `VecEnv` interface over the batched simulator's vector view.

``OffloadingSb3VecEnv(OffloadingVectorEnv(scenario, E, action_format="discrete"))`` is what SB3's
algorithms train on (SB3 takes no Dict actions, so the discrete format). SB3's ``seed(s)`` applies
at the next ``reset()`` as the vector view's ``reset(seed=s)``: environment i gets s + i, SB3's
convention for its own vectors, or a shared stream is seeded with s. Episode ends carry
``terminal_observation``, ``TimeLimit.truncated`` and SB3's ``episode`` record in their infos.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from stable_baselines3.common.vec_env import VecEnv

from coinfer.core.errors import InvalidInput
from coinfer.rl.envs.vector import OffloadingVectorEnv


class OffloadingSb3VecEnv(VecEnv):
    """SB3's VecEnv over an `OffloadingVectorEnv` (auto-reset, terminal observations in infos)."""

    render_mode = None

    def __init__(self, vector: OffloadingVectorEnv) -> None:
        if vector.spaces.action_format != "discrete":
            raise InvalidInput("stable-baselines3 takes no Dict actions: build the vector view with action_format='discrete'")
        self.vector = vector
        super().__init__(vector.num_envs, vector.single_observation_space, vector.single_action_space)
        self._actions: np.ndarray | None = None
        self._pending_seed: int | None = None

    def seed(self, seed: int | None = None) -> Sequence[int | None]:
        seeds = super().seed(seed)
        self._pending_seed = seeds[0]
        return seeds

    def reset(self) -> np.ndarray:
        observations, _ = self.vector.reset(seed=self._pending_seed)
        self._pending_seed = None
        self._reset_seeds()
        return observations

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions)

    def step_wait(self):
        observations, rewards, terminated, truncated, infos = self.vector.step(self._actions)
        sb3_infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        for e in np.flatnonzero(infos.get("_final_obs", ())):
            metrics = infos["final_info"]["episode_metrics"][e]
            sb3_infos[e] = {
                "terminal_observation": infos["final_obs"][e],
                "TimeLimit.truncated": bool(truncated[e]),
                "episode": {"r": metrics.reward, "l": metrics.slots},
            }
        return observations, rewards.astype(np.float32), terminated | truncated, sb3_infos

    def close(self) -> None:
        pass

    def get_attr(self, attr_name: str, indices=None) -> list:
        return [getattr(self, attr_name)] * len(self._indices(indices))

    def set_attr(self, attr_name: str, value: Any, indices=None) -> None:
        setattr(self, attr_name, value)

    def env_method(self, method_name: str, *args, indices=None, **kwargs) -> list:
        raise NotImplementedError(f"the batched simulator has no per-environment method {method_name!r}")

    def env_is_wrapped(self, wrapper_class, indices=None) -> list[bool]:
        return [False] * len(self._indices(indices))

    def _indices(self, indices) -> list[int]:
        if indices is None:
            return list(range(self.num_envs))
        return [indices] if isinstance(indices, int) else list(indices)

"""Multi-device offloading simulator, its gymnasium / PettingZoo views, MAHPPO and baselines.

Importing ``coinfer.rl`` registers the gymnasium id ``coinfer/Offloading-v0`` (`ENV_ID`):
``gymnasium.make(ENV_ID, scenario=...)`` is one environment with every device's joint action
(`coinfer.rl.envs.gym_env`), and ``gymnasium.make_vec(ENV_ID, num_envs=N,
vectorization_mode="vector_entry_point", scenario=...)`` is N environments on the batched
simulator (`coinfer.rl.envs.vector`). The scenario defaults to the paper's ResNet18 cell.

The Python API: `make_env`, `make_vec_env`, `make_sb3_vec_env`, `parallel_env` (the views),
`train_mahppo` (with `MahppoConfig`) and `evaluate`. Training imports torch when it is called;
the simulator and its views need numpy and gymnasium only.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gymnasium.envs.registration import register, registry

from coinfer.core.errors import InvalidInput

if TYPE_CHECKING:
    import gymnasium

    from coinfer.rl.envs.parallel import OffloadingParallelEnv
    from coinfer.rl.envs.sb3_vec_env import OffloadingSb3VecEnv
    from coinfer.rl.envs.spaces import ActionFormat
    from coinfer.rl.envs.vector import OffloadingVectorEnv
    from coinfer.rl.episodes import EpisodeSet
    from coinfer.rl.evaluation import EvalResult
    from coinfer.rl.mahppo import MahppoConfig, train_mahppo
    from coinfer.rl.policy import Policy
    from coinfer.rl.scenario import Mode, Scenario

ENV_ID = "coinfer/Offloading-v0"
"""The gymnasium id of the offloading simulator."""
DEFAULT_SCENARIO = "mahppo-paper-resnet18"
"""The scenario of every view and command unless told otherwise: the paper's ResNet18 cell."""

if ENV_ID not in registry:
    register(
        id=ENV_ID,
        entry_point="coinfer.rl.envs.gym_env:OffloadingEnv",
        vector_entry_point="coinfer.rl.envs.vector:OffloadingVectorEnv",
        kwargs={"scenario": DEFAULT_SCENARIO},
    )

_EXPORTS: dict[str, tuple[str, str]] = {
    "train_mahppo": ("coinfer.rl.mahppo", "train_mahppo"),
    "MahppoConfig": ("coinfer.rl.mahppo", "MahppoConfig"),
}
"""Names loaded on first use (they import torch)."""

__all__ = ["ENV_ID", "make_env", "make_vec_env", "make_sb3_vec_env", "parallel_env", "evaluate", *_EXPORTS]


def make_env(
    scenario: Scenario | str = DEFAULT_SCENARIO,
    *,
    mode: Mode = "train",
    seed: int = 0,
    action_format: ActionFormat = "hybrid",
    power_levels: int = 8,
) -> gymnasium.Env:
    """One environment, ``gymnasium.make(ENV_ID, ...)``: every device's joint action, the global state.

    ``mode`` "train" draws distances and task counts per episode, "eval" is the fixed evaluation
    cell; ``action_format`` "hybrid" is a Dict (points, channels, powers_w), "discrete" a
    MultiDiscrete [point, channel, power level] per device over ``power_levels`` powers.
    """
    import gymnasium

    return gymnasium.make(ENV_ID, scenario=scenario, mode=mode, seed=seed, action_format=action_format, power_levels=power_levels)


def make_vec_env(
    scenario: Scenario | str = DEFAULT_SCENARIO,
    num_envs: int = 64,
    *,
    mode: Mode = "train",
    seed: int = 0,
    action_format: ActionFormat = "hybrid",
    power_levels: int = 8,
) -> OffloadingVectorEnv:
    """``num_envs`` environments on the batched simulator, a gymnasium `VectorEnv` (``gymnasium.make_vec``).

    Environment i is seeded with seed + i (or s + i after ``reset(seed=s)``) and steps as
    `make_env` with that seed would; episodes reset in the step they end (same-step autoreset).
    """
    import gymnasium

    return gymnasium.make_vec(
        ENV_ID, num_envs=num_envs, vectorization_mode="vector_entry_point", scenario=scenario, mode=mode, seed=seed,
        action_format=action_format, power_levels=power_levels,
    )


def make_sb3_vec_env(
    scenario: Scenario | str = DEFAULT_SCENARIO,
    num_envs: int = 64,
    *,
    mode: Mode = "train",
    seed: int = 0,
    power_levels: int = 8,
) -> OffloadingSb3VecEnv:
    """`make_vec_env` with the discrete action format behind stable-baselines3's `VecEnv` interface.

    ``stable_baselines3.PPO("MlpPolicy", make_sb3_vec_env(...), seed=s)`` trains on the batched
    simulator; SB3's seed s gives environment i the seed s + i at the next reset.
    """
    from coinfer.rl.envs.sb3_vec_env import OffloadingSb3VecEnv
    from coinfer.rl.envs.vector import OffloadingVectorEnv

    return OffloadingSb3VecEnv(
        OffloadingVectorEnv(scenario, num_envs, mode=mode, seed=seed, action_format="discrete", power_levels=power_levels)
    )


def parallel_env(scenario: Scenario | str = DEFAULT_SCENARIO, *, mode: Mode = "train", seed: int = 0) -> OffloadingParallelEnv:
    """The PettingZoo Parallel view: one agent per device (``device_0`` ..), local observations, ``state()`` global."""
    from coinfer.rl.envs.parallel import OffloadingParallelEnv

    return OffloadingParallelEnv(scenario, mode=mode, seed=seed)


def evaluate(
    policy: Policy | str | Path,
    scenario: Scenario | str = DEFAULT_SCENARIO,
    *,
    episodes: int | EpisodeSet = 64,
    cell: str = "random",
    seed: int = 0,
    deterministic: bool = True,
) -> EvalResult:
    """Run ``policy`` on ``episodes`` of ``scenario``: means with 95% intervals, as ``coinfer rl eval``.

    ``policy`` is a `Policy`, a policy file or folder (MAHPPO, sb3-ppo), or a baseline name
    (local, offload, random, greedy, search). ``episodes`` is an `EpisodeSet`, or a count of the
    scenario's held-out episodes (``cell="random"``, drawn like training episodes with seeds no
    training run uses) or of its evaluation cell (``cell="evaluation"``, the paper's protocol).
    ``seed`` seeds a baseline's own randomness; the episodes do not depend on it.
    """
    from coinfer.rl.episodes import EpisodeSet
    from coinfer.rl.evaluation import evaluate_policy
    from coinfer.rl.policy import make_policy
    from coinfer.rl.scenario import load_scenario

    scenario = load_scenario(scenario)
    if isinstance(policy, (str, Path)):
        policy = make_policy(str(policy), scenario, seed=seed)
    if not isinstance(episodes, EpisodeSet):
        if isinstance(episodes, bool) or not isinstance(episodes, int) or episodes < 1:
            raise InvalidInput(f"episodes must be a positive count or an EpisodeSet, got {episodes!r}")
        episodes = EpisodeSet.of(scenario, episodes, cell=cell)  # type: ignore[arg-type]
    return evaluate_policy(policy, scenario, episodes, deterministic=deterministic)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'coinfer.rl' has no attribute {name!r}")
    module, attribute = _EXPORTS[name]
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

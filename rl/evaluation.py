"""Evaluation mode: run a policy on fixed distances and task counts and report the metrics."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from coinfer.core.errors import InvalidInput
from coinfer.rl.envs.batched import BatchedEnv
from coinfer.rl.policy import Policy
from coinfer.rl.scenario import Scenario, load_scenario
from coinfer.rl.sim.metrics import EpisodeMetrics


@dataclass(frozen=True)
class EvalResult:
    """Mean metrics of a policy over evaluation episodes (see `EpisodeMetrics` for each field)."""

    policy: str
    """Policy name."""
    scenario: str
    """Scenario name."""
    episodes: int
    """Evaluation episodes (seeds seed .. seed + episodes - 1 of the fading and arrival draws)."""
    latency_per_task_s: float
    """The paper's time metric (slots x slot length x devices / finished tasks)."""
    task_latency_mean_s: float
    """Mean arrival-to-result time of a task."""
    task_latency_p95_s: float
    """95th percentile arrival-to-result time."""
    energy_per_task_j: float
    """Device energy per finished task."""
    reward: float
    """Mean episode reward."""
    reward_std: float
    """Standard deviation of the episode reward over episodes."""
    finished_tasks: float
    """Mean finished tasks per episode (over all devices)."""
    per_episode: list[EpisodeMetrics] = field(default_factory=list)
    """Every episode's metrics."""

    def summary(self) -> dict:
        """The JSON entry of ``coinfer rl eval`` (no per-episode detail)."""
        out = asdict(self)
        out.pop("per_episode")
        return out


def evaluate_policy(
    policy: Policy, scenario: Scenario | str, episodes: int = 1, seed: int = 0, deterministic: bool = True
) -> EvalResult:
    """Run ``episodes`` evaluation episodes at once and average their metrics."""
    scenario = load_scenario(scenario)
    if episodes < 1:
        raise InvalidInput(f"episodes must be >= 1, got {episodes}")
    env = BatchedEnv(scenario, num_envs=episodes, mode="eval", seed=seed)
    policy.reset()
    obs = env.reset()
    results: dict[int, EpisodeMetrics] = {}
    while len(results) < episodes:
        step = env.step(policy.act(obs, deterministic=deterministic))
        for e, metrics in step.episodes:
            results.setdefault(e, metrics)
        obs = step.observations
    per = [results[e] for e in range(episodes)]
    rewards = np.array([m.reward for m in per])

    def mean(name: str) -> float:
        values = [getattr(m, name) for m in per]
        return float(np.mean(values)) if all(math.isfinite(v) for v in values) else float("nan")

    return EvalResult(
        policy=policy.name,
        scenario=scenario.name,
        episodes=episodes,
        latency_per_task_s=mean("latency_per_task_s"),
        task_latency_mean_s=mean("task_latency_mean_s"),
        task_latency_p95_s=mean("task_latency_p95_s"),
        energy_per_task_j=mean("energy_per_task_j"),
        reward=float(rewards.mean()),
        reward_std=float(rewards.std()),
        finished_tasks=mean("finished_tasks"),
        per_episode=per,
    )

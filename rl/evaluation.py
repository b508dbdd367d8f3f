"""Evaluating a policy: its metrics on a set of episodes, each repeatable on its own.

An episode's metrics are a function of the policy and the episode, nothing else: each episode
draws from streams of its own (`coinfer.rl.episodes`), the simulator never lets one environment's
arithmetic touch another's, the policies act on every row alike (``Policy.act``), and a sampling
policy draws from the episode's own generator. So the figures do not move with how many episodes
run together (``batch_size``) or with torch's thread count.

    result = evaluate_policy(policy, scenario, EpisodeSet.of(scenario, 64))   # 64 held-out episodes
    result.reward, result.intervals["reward"]                                 # mean and 95 % interval
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from coinfer.core.errors import InvalidInput
from coinfer.rl.actions import JointAction
from coinfer.rl.episodes import EpisodeSet
from coinfer.rl.policy import Policy
from coinfer.rl.scenario import Scenario, load_scenario
from coinfer.rl.sim.metrics import EpisodeMetrics
from coinfer.rl.statistics import Interval, mean_interval

METRICS = ("reward", "latency_per_task_s", "task_latency_mean_s", "task_latency_p95_s", "energy_per_task_j")
"""The per-episode figures a result gives a mean (and, over 2 or more episodes, an interval) of."""
DEFAULT_BATCH = 32
"""Episodes simulated together by default (any batch gives the same figures)."""


@dataclass(frozen=True)
class EvalResult:
    """Metrics of a policy on a set of episodes: means, 95 % intervals and every episode's figures."""

    policy: str
    """Policy name."""
    scenario: str
    """Scenario name."""
    episodes: int
    """Episodes evaluated."""
    episode_set: dict
    """The episodes (`EpisodeSet.to_dict`)."""
    deterministic: bool
    """Modes and means (True) or sampled actions."""
    latency_per_task_s: float
    """The paper's time metric (slots x slot length x devices / finished tasks), mean over episodes."""
    task_latency_mean_s: float
    """Mean arrival-to-result time of a task, mean over episodes."""
    task_latency_p95_s: float
    """95th percentile arrival-to-result time, mean over episodes."""
    energy_per_task_j: float
    """Device energy per finished task, mean over episodes."""
    reward: float
    """Episode reward, mean over episodes."""
    reward_std: float
    """Standard deviation of the episode reward over episodes."""
    finished_tasks: float
    """Finished tasks per episode (over all devices), mean over episodes."""
    intervals: dict[str, Interval] | None = None
    """95 % bootstrap interval of every figure in `METRICS` (None for a single episode)."""
    per_episode: list[EpisodeMetrics] = field(default_factory=list)
    """Every episode's metrics, in the set's order."""

    def values(self, metric: str) -> np.ndarray:
        """One figure of every episode, (episodes,)."""
        return np.array([getattr(m, metric) for m in self.per_episode], dtype=float)

    def summary(self) -> dict:
        """The JSON entry of ``coinfer rl eval``: means, intervals (``ci95``), no per-episode detail."""
        out = asdict(self)
        out.pop("per_episode")
        out.pop("intervals")
        out["ci95"] = {k: [v.low, v.high] for k, v in self.intervals.items()} if self.intervals else None
        return out

    def to_dict(self) -> dict:
        """Everything, per-episode figures included (for caches)."""
        return {**self.summary(), "per_episode": [m.to_dict() for m in self.per_episode]}

    @classmethod
    def from_dict(cls, data: dict) -> "EvalResult":
        per = [EpisodeMetrics(**m) for m in data["per_episode"]]
        return result_from_episodes(data["policy"], data["scenario"], EpisodeSet.from_dict(data["episode_set"]), per, data["deterministic"])


def result_from_episodes(policy: str, scenario: str, episodes: EpisodeSet, per_episode: list[EpisodeMetrics], deterministic: bool = True) -> EvalResult:
    """An `EvalResult` from every episode's metrics."""
    if len(per_episode) != len(episodes):
        raise InvalidInput(f"{len(per_episode)} episode results for {len(episodes)} episodes")

    def mean(name: str) -> float:
        values = [getattr(m, name) for m in per_episode]
        return float(np.mean(values)) if all(math.isfinite(v) for v in values) else float("nan")

    rewards = np.array([m.reward for m in per_episode])
    intervals = None
    if len(per_episode) >= 2 and all(math.isfinite(getattr(m, k)) for m in per_episode for k in METRICS):
        intervals = {k: mean_interval([getattr(m, k) for m in per_episode], k) for k in METRICS}
    return EvalResult(
        policy=policy,
        scenario=scenario,
        episodes=len(per_episode),
        episode_set=episodes.to_dict(),
        deterministic=deterministic,
        latency_per_task_s=mean("latency_per_task_s"),
        task_latency_mean_s=mean("task_latency_mean_s"),
        task_latency_p95_s=mean("task_latency_p95_s"),
        energy_per_task_j=mean("energy_per_task_j"),
        reward=float(rewards.mean()),
        reward_std=float(rewards.std()),
        finished_tasks=mean("finished_tasks"),
        intervals=intervals,
        per_episode=list(per_episode),
    )


def evaluate_policy(
    policy: Policy,
    scenario: Scenario | str,
    episodes: int | EpisodeSet = 1,
    deterministic: bool = True,
    batch_size: int = DEFAULT_BATCH,
) -> EvalResult:
    """Run ``policy`` on every episode of ``episodes`` and collect the metrics.

    ``episodes`` is an `EpisodeSet`, or a count of the scenario's evaluation-cell episodes (the
    paper's protocol; the first held-out seeds). ``batch_size`` episodes are simulated together;
    the figures do not depend on it.
    """
    scenario = load_scenario(scenario)
    if isinstance(episodes, int):
        episodes = EpisodeSet.of(scenario, episodes, cell="evaluation")
    episodes.check(scenario)
    if batch_size < 1:
        raise InvalidInput(f"batch_size must be >= 1, got {batch_size}")
    per: list[EpisodeMetrics] = []
    for start in range(0, len(episodes), batch_size):
        per += _run_batch(policy, scenario, episodes, range(start, min(start + batch_size, len(episodes))), deterministic)
    return result_from_episodes(policy.name, scenario.name, episodes, per, deterministic)


def _run_batch(policy: Policy, scenario: Scenario, episodes: EpisodeSet, indices: range, deterministic: bool) -> list[EpisodeMetrics]:
    """Episodes ``indices`` together until each has ended; an ended one idles on a placeholder action."""
    sim = episodes.simulator(scenario, indices)
    rngs = [episodes.action_rng(i) for i in indices]
    E, N = sim.num_envs, sim.num_devices
    idle = JointAction(np.full((E, N), scenario.num_points - 1), np.arange(N)[None].repeat(E, 0) % sim.num_subchannels, np.tile(sim.power_low_w, (E, 1)))
    results: dict[int, EpisodeMetrics] = {}
    policy.reset()
    while len(results) < E:
        live = np.array([e for e in range(E) if e not in results])
        chosen = policy.act(sim.global_state()[live], deterministic=deterministic, rngs=[rngs[e] for e in live])
        action = JointAction(idle.points.copy(), idle.channels.copy(), idle.powers_w.copy())
        action.points[live], action.channels[live], action.powers_w[live] = chosen.points, chosen.channels, chosen.powers_w
        outcome = sim.step(action.points, action.channels, action.powers_w)
        for e in np.flatnonzero(outcome.terminated | outcome.truncated):
            if int(e) not in results:
                results[int(e)] = sim.episode_metrics(int(e))
    return [results[e] for e in range(E)]

"""Verdicts between schedulers on one episode set: pooled figures with intervals, and who beats whom.

A scheduler's record is one `EvalResult` per training seed (one for a scheduler that is not
trained), all on the same episodes. Its figures are pooled over seeds and episodes, with the
crossed-bootstrap interval of `coinfer.rl.statistics`; the spread of the per-seed means is kept
beside them. "A beats B" compares the paired per-episode rewards (`beats`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from coinfer.core.errors import InvalidInput
from coinfer.rl.evaluation import EvalResult
from coinfer.rl.statistics import Interval, mean_interval, paired_difference


@dataclass(frozen=True)
class PolicyRecord:
    """One scheduler's results on one episode set, one per training seed."""

    name: str
    """Scheduler name (``mahppo``, ``search``, ...)."""
    results: tuple[EvalResult, ...]
    """One result per training seed (one for an untrained scheduler), each on the same episodes."""
    seeds: tuple[int, ...] = ()
    """The training seeds, in the order of ``results`` (empty for an untrained scheduler)."""

    def __post_init__(self) -> None:
        if not self.results:
            raise InvalidInput(f"{self.name}: no results")
        sets = {r.episodes for r in self.results}
        if len(sets) > 1 or len({str(r.episode_set) for r in self.results}) > 1:
            raise InvalidInput(f"{self.name}: the results are on different episode sets")

    def matrix(self, metric: str = "reward") -> np.ndarray:
        """(seeds, episodes) figures."""
        return np.stack([r.values(metric) for r in self.results])

    def interval(self, metric: str = "reward") -> Interval:
        """Mean over seeds and episodes with its 95 % interval."""
        return mean_interval(self.matrix(metric), f"{self.name} {metric}")

    def mean(self, metric: str = "reward") -> float:
        return float(self.matrix(metric).mean())

    def spread(self, metric: str = "reward") -> dict:
        """The per-seed means: their mean, standard deviation, min, max and every value."""
        means = self.matrix(metric).mean(axis=1)
        return {"mean": float(means.mean()), "std": float(means.std()), "min": float(means.min()), "max": float(means.max()),
                "runs": [float(v) for v in means]}


def beats(first: PolicyRecord, second: PolicyRecord, metric: str = "reward") -> Interval:
    """``first``'s figure minus ``second``'s, paired per episode, pooled over both sides' seeds.

    For the reward (higher is better) ``first`` beats ``second`` when the interval is above zero.
    """
    if first.results[0].episode_set != second.results[0].episode_set:
        raise InvalidInput(f"{first.name} and {second.name} were run on different episode sets")
    return paired_difference(first.matrix(metric), second.matrix(metric), f"{first.name} - {second.name} {metric}")

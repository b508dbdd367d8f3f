"""Task arrival models: when each device's tasks enter its queue.

``batch`` (the paper): every task is queued at time 0. ``poisson-stream``: tasks arrive as a
Poisson process, so a device can run dry and wait. Task counts are Poisson(mean), at least 1, in
training and fixed in evaluation; arrays are padded to ``capacity`` tasks with +inf.
"""

from __future__ import annotations

import math
from typing import Protocol

import numpy as np

from coinfer.core.errors import InvalidInput
from coinfer.rl.scenario import TaskConfig


class ArrivalModel(Protocol):
    capacity: int
    """Largest number of tasks one device can get in an episode."""

    def draw(self, rng: np.random.Generator, shape: tuple[int, int], fixed_count: int | None) -> tuple[np.ndarray, np.ndarray]:
        """Task counts (E, N) and arrival times (E, N, capacity) in seconds, +inf past the count."""
        ...


def _capacity(mean: float, fixed_count: int) -> int:
    # Poisson(mean) exceeds mean + 8 sqrt(mean) + 16 with probability below 1e-12.
    return int(max(fixed_count, math.ceil(mean + 8.0 * math.sqrt(mean) + 16)))


class _CountedArrivals:
    def __init__(self, config: TaskConfig, eval_count: int) -> None:
        self.mean = config.mean_tasks_per_device
        self.capacity = _capacity(self.mean, eval_count)

    def _counts(self, rng: np.random.Generator, shape: tuple[int, int], fixed_count: int | None) -> np.ndarray:
        if fixed_count is not None:
            if fixed_count > self.capacity:
                raise InvalidInput(f"fixed task count {fixed_count} exceeds the capacity {self.capacity}")
            return np.full(shape, fixed_count, dtype=np.int64)
        return np.clip(rng.poisson(self.mean, size=shape), 1, self.capacity).astype(np.int64)


class BatchArrivals(_CountedArrivals):
    """Every task is in the queue at time 0."""

    def draw(self, rng, shape, fixed_count):
        counts = self._counts(rng, shape, fixed_count)
        index = np.arange(self.capacity)
        arrival_s = np.where(index < counts[..., None], 0.0, np.inf)
        return counts, arrival_s


class PoissonStreamArrivals(_CountedArrivals):
    """Tasks arrive with exponential gaps of mean 1 / rate; the first at time 0."""

    def __init__(self, config: TaskConfig, eval_count: int) -> None:
        super().__init__(config, eval_count)
        self.rate_per_s = config.arrival_rate_per_s

    def draw(self, rng, shape, fixed_count):
        counts = self._counts(rng, shape, fixed_count)
        gaps = rng.exponential(1.0 / self.rate_per_s, size=shape + (self.capacity,))
        gaps[..., 0] = 0.0
        arrival_s = np.cumsum(gaps, axis=-1)
        index = np.arange(self.capacity)
        return counts, np.where(index < counts[..., None], arrival_s, np.inf)


def make_arrivals(config: TaskConfig, eval_count: int) -> ArrivalModel:
    if config.arrivals == "batch":
        return BatchArrivals(config, eval_count)
    if config.arrivals == "poisson-stream":
        return PoissonStreamArrivals(config, eval_count)
    raise InvalidInput(f"unknown arrival model {config.arrivals!r}")

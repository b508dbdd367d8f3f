"""What one finished episode measured, in the paper's terms and in a user's."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class EpisodeMetrics:
    """Metrics of one episode of one environment."""

    slots: int
    """Decision slots simulated, the last (partial) one included."""
    finished_tasks: int
    """Tasks whose result was ready, over all devices."""
    total_tasks: int
    """Tasks the devices were given."""
    energy_j: float
    """Device energy spent, over all devices."""
    reward: float
    """Sum of the per-slot rewards."""
    latency_per_task_s: float
    """The paper's time metric: slots x slot length x devices / finished tasks."""
    energy_per_task_j: float
    """Device energy per finished task."""
    task_latency_mean_s: float
    """Mean time from a task's arrival to its result."""
    task_latency_p95_s: float
    """95th percentile of the same."""
    truncated: bool
    """Whether the episode hit its slot limit before every queue was empty."""

    def to_dict(self) -> dict:
        return asdict(self)


def episode_metrics(
    *,
    slots: int,
    slot_s: float,
    num_devices: int,
    finished: np.ndarray,
    total_tasks: int,
    energy_j: float,
    reward: float,
    task_latencies_s: np.ndarray,
    truncated: bool,
) -> EpisodeMetrics:
    """Assemble the metrics of one episode (``finished`` is per device, latencies are per finished task)."""
    done = int(finished.sum())
    per = 1.0 / done if done else float("nan")
    return EpisodeMetrics(
        slots=int(slots),
        finished_tasks=done,
        total_tasks=int(total_tasks),
        energy_j=float(energy_j),
        reward=float(reward),
        latency_per_task_s=slots * slot_s * num_devices * per,
        energy_per_task_j=float(energy_j) * per,
        task_latency_mean_s=float(task_latencies_s.mean()) if done else float("nan"),
        task_latency_p95_s=float(np.percentile(task_latencies_s, 95)) if done else float("nan"),
        truncated=bool(truncated),
    )

"""Means with 95 % confidence intervals, and when one policy beats another.

Every figure of a verdict is a mean over episodes (one policy, or one trained policy per training
seed, each run on the same episodes) and its interval is a percentile bootstrap: 10 000
resamples from a fixed generator, so the same figures give the same interval. Where a policy was
trained with several seeds, each resample draws the seeds and the episodes with replacement,
independently (a crossed bootstrap), so the interval covers both what the episodes and what the
training seed contribute; with one seed it is the ordinary bootstrap over episodes.

"A beats B" means the paired per-episode difference (A's figure minus B's on the same episode,
pooled over A's and B's seeds) has a 95 % interval above zero.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from coinfer.core.errors import InvalidInput

CONFIDENCE = 0.95
"""Coverage of every interval."""
BOOTSTRAP_RESAMPLES = 10_000
"""Resamples per interval."""
BOOTSTRAP_SEED = 0
"""Seed of the resampling generator (intervals repeat exactly)."""


@dataclass(frozen=True)
class Interval:
    """A mean and its 95 % bootstrap confidence interval."""

    mean: float
    """Mean over every (seed, episode) figure."""
    low: float
    """Lower end of the 95 % interval."""
    high: float
    """Upper end of the 95 % interval."""
    seeds: int
    """Training seeds pooled (1 for a policy that is not trained)."""
    episodes: int
    """Episodes per seed."""

    def above_zero(self) -> bool:
        """The interval lies entirely above zero (for a difference: the first policy wins)."""
        return self.low > 0

    def to_dict(self) -> dict:
        return asdict(self)

    def text(self, digits: int = 3) -> str:
        return f"{self.mean:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"


def _as_matrix(values, name: str) -> np.ndarray:
    a = np.asarray(values, dtype=float)
    if a.ndim == 1:
        a = a[None]
    if a.ndim != 2:
        raise InvalidInput(f"{name}: expected figures per episode (episodes,) or per seed and episode (seeds, episodes), got shape {a.shape}")
    if a.shape[1] < 2:
        raise InvalidInput(f"{name}: a 95% confidence interval needs at least 2 episodes (field 'episodes'), got {a.shape[1]}")
    if not np.all(np.isfinite(a)):
        raise InvalidInput(f"{name}: a figure is not finite (an episode finished no task?)")
    return a


def _resampled_means(a: np.ndarray, episode_weights: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Means of ``a`` (S, I) under resampled seeds (drawn here) and the given episode weights (R, I)."""
    S = a.shape[0]
    seed_weights = rng.multinomial(S, np.full(S, 1.0 / S), size=episode_weights.shape[0]) if S > 1 else np.ones((episode_weights.shape[0], 1))
    return ((seed_weights @ a) * episode_weights).sum(axis=1) / (S * a.shape[1])


def _interval(mean: float, samples: np.ndarray, seeds: int, episodes: int) -> Interval:
    tail = 100 * (1 - CONFIDENCE) / 2
    low, high = np.percentile(samples, [tail, 100 - tail])
    return Interval(float(mean), float(low), float(high), seeds, episodes)


def mean_interval(values, name: str = "figures") -> Interval:
    """The mean of per-episode figures (episodes,) or (seeds, episodes), with its 95 % interval."""
    a = _as_matrix(values, name)
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    I = a.shape[1]
    episode_weights = rng.multinomial(I, np.full(I, 1.0 / I), size=BOOTSTRAP_RESAMPLES)
    return _interval(a.mean(), _resampled_means(a, episode_weights, rng), a.shape[0], I)


def paired_difference(first, second, name: str = "difference") -> Interval:
    """Mean of ``first - second`` per episode, each (episodes,) or (seeds, episodes) on the same episodes.

    Each resample draws the episodes once for both (the pairing) and each side's seeds on its own.
    """
    a, b = _as_matrix(first, name), _as_matrix(second, name)
    if a.shape[1] != b.shape[1]:
        raise InvalidInput(f"{name}: the two policies were run on different numbers of episodes ({a.shape[1]} and {b.shape[1]})")
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    I = a.shape[1]
    episode_weights = rng.multinomial(I, np.full(I, 1.0 / I), size=BOOTSTRAP_RESAMPLES)
    samples = _resampled_means(a, episode_weights, rng) - _resampled_means(b, episode_weights, rng)
    return _interval(a.mean() - b.mean(), samples, max(a.shape[0], b.shape[0]), I)

"""Intervals and paired differences (the verdict's arithmetic)."""

from __future__ import annotations

import numpy as np
import pytest

from coinfer.core.errors import InvalidInput
from coinfer.rl.statistics import mean_interval, paired_difference


def test_interval_covers_the_mean_repeats_and_shrinks_with_more_episodes():
    rng = np.random.default_rng(0)
    small, large = rng.normal(1.0, 1.0, 16), rng.normal(1.0, 1.0, 400)
    a = mean_interval(small)
    assert a.low < a.mean < a.high and a.mean == pytest.approx(small.mean())
    assert a == mean_interval(small)  # a fixed resampling generator
    b = mean_interval(large)
    assert (b.high - b.low) < (a.high - a.low) and b.low < 1.0 < b.high


def test_fewer_than_two_episodes_have_no_interval():
    with pytest.raises(InvalidInput, match="at least 2 episodes \\(field 'episodes'\\), got 1"):
        mean_interval([0.3])
    with pytest.raises(InvalidInput, match="at least 2 episodes"):
        paired_difference([[0.1], [0.2]], [0.0])


def test_paired_difference_sees_a_small_consistent_gain_that_unpaired_noise_hides():
    rng = np.random.default_rng(1)
    episode_difficulty = rng.normal(0.0, 1.0, 64)
    b = episode_difficulty
    a = episode_difficulty + 0.05 + rng.normal(0.0, 0.01, 64)
    d = paired_difference(a, b)
    assert d.above_zero() and d.mean == pytest.approx(0.05, abs=0.01)
    assert not paired_difference(b, a).above_zero()
    assert mean_interval(a).low < mean_interval(b).high  # the unpaired intervals overlap


def test_seed_spread_widens_the_pooled_interval():
    rng = np.random.default_rng(2)
    episodes = rng.normal(0.0, 0.1, 32)
    steady = np.stack([episodes + 0.1 for _ in range(5)])
    spread = np.stack([episodes + 0.1 + offset for offset in (-0.3, -0.1, 0.0, 0.1, 0.3)])
    a, b = paired_difference(steady, episodes), paired_difference(spread, episodes)
    assert a.mean == pytest.approx(b.mean) and a.seeds == b.seeds == 5
    assert (b.high - b.low) > 3 * (a.high - a.low)
    assert a.above_zero() and not b.above_zero()


def test_different_episode_counts_cannot_be_paired():
    with pytest.raises(InvalidInput, match="different numbers of episodes"):
        paired_difference(np.zeros(4), np.zeros(5))

"""Episode sets: disjoint seed roles, per-episode streams, and the checks on a set."""

from __future__ import annotations

import json

import numpy as np
import pytest

from coinfer.core.errors import InvalidInput
from coinfer.rl.episodes import ROLE_SEEDS, TRAINING_SEEDS, EpisodeSet, check_training_seeds
from coinfer.rl.sim.core import Simulator


def test_roles_own_disjoint_seed_ranges():
    ranges = [TRAINING_SEEDS, *ROLE_SEEDS.values()]
    for i, a in enumerate(ranges):
        for b in ranges[i + 1 :]:
            assert a.stop <= b.start or b.stop <= a.start


def test_sets_take_their_roles_seeds(tiny):
    held_out, tuning = EpisodeSet.of(tiny, 3), EpisodeSet.of(tiny, 3, role="tuning")
    assert held_out.seeds == (1_000_000, 1_000_001, 1_000_002) and tuning.seeds[0] == 2_000_000
    assert EpisodeSet.of(tiny, 2, first=5).seeds == (1_000_005, 1_000_006)
    assert held_out.key() != tuning.key() and held_out.key() == EpisodeSet.of(tiny, 3).key()


def test_overlaps_and_malformed_sets_are_refused_naming_the_field(tiny):
    held_out = EpisodeSet.of(tiny, 4)
    held_out.check_disjoint([0, 1, 2])
    with pytest.raises(InvalidInput, match=r"field 'seeds': training seeds must be in 0\.\.999999.*got 1000001"):
        held_out.check_disjoint([0, 1_000_001])
    with pytest.raises(InvalidInput, match="field 'seed'"):
        check_training_seeds([2_000_000], "seed")
    with pytest.raises(InvalidInput, match="field 'seeds': held-out seeds lie in 1000000"):
        EpisodeSet("tiny", 3, 6, 2, "random", "held-out", (5,))
    with pytest.raises(InvalidInput, match="repeats a seed"):
        EpisodeSet("tiny", 3, 6, 2, "random", "held-out", (1_000_000, 1_000_000))
    with pytest.raises(InvalidInput, match="field 'cell'"):
        EpisodeSet("tiny", 3, 6, 2, "paper", "held-out", (1_000_000,))
    with pytest.raises(InvalidInput, match="field 'episodes' must be >= 1"):
        EpisodeSet.of(tiny, 0)
    data = held_out.to_dict()
    assert EpisodeSet.from_dict(json.loads(json.dumps(data))) == held_out
    with pytest.raises(InvalidInput, match="missing field 'seeds'"):
        EpisodeSet.from_dict({k: v for k, v in data.items() if k != "seeds"})
    with pytest.raises(InvalidInput, match="field 'num_points' must be an integer"):
        EpisodeSet.from_dict({**data, "num_points": "6"})


def test_an_episode_draws_the_same_in_any_environment_and_again_on_reset(tiny):
    episodes = EpisodeSet.of(tiny, 4)
    together = episodes.simulator(tiny, range(4))
    alone = episodes.simulator(tiny, [2])
    assert np.array_equal(together.distance_m[2], alone.distance_m[0]) and np.array_equal(together.num_tasks[2], alone.num_tasks[0])
    assert not np.array_equal(together.distance_m[1], together.distance_m[2])
    first = alone.distance_m.copy()
    alone.reset()
    assert np.array_equal(alone.distance_m, first)
    # repeated copies (search's candidates) see the same episodes
    copies = episodes.simulator(tiny, [0, 1, 2, 3] * 2)
    assert np.array_equal(copies.distance_m[:4], copies.distance_m[4:])


def test_shared_streams_of_training_are_unchanged(tiny):
    # Training keeps the streams shared by the batch, rooted at the run's seed.
    a, b = Simulator(tiny, num_envs=3, seed=7), Simulator(tiny, num_envs=3, seed=7)
    assert np.array_equal(a.distance_m, b.distance_m)
    assert not np.array_equal(a.distance_m, Simulator(tiny, num_envs=3, seed=8).distance_m)


def test_random_cell_episodes_run_to_the_end(tiny):
    # drawn like training episodes, but not cut at the training limit of 8 slots
    sim = EpisodeSet.of(tiny, 2).simulator(tiny, range(2))
    assert sim.mode == "train" and sim.max_slots == tiny.evaluation.max_slots

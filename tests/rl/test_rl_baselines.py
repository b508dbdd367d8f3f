"""Baselines behind the Policy protocol: local, offload, random, greedy, search, sb3-ppo."""

from __future__ import annotations

import numpy as np
import pytest

from coinfer.core.errors import InvalidInput
from coinfer.rl.baselines import GreedyPolicy
from coinfer.rl.episodes import EpisodeSet
from coinfer.rl.evaluation import evaluate_policy
from coinfer.rl.policy import FixedPolicy, Policy, load_policy, make_policy
from coinfer.rl.scenario import load_scenario
from coinfer.rl.search import coordinate_search, evaluate_fixed_actions, search_oracle, tuning_episodes
from coinfer.rl.sim.core import Simulator


def state_of(scenario):
    return Simulator(scenario, num_envs=1, mode="eval").global_state()[0]


def test_fixed_baselines(tiny):
    local = make_policy("local", tiny).act(state_of(tiny))
    assert (local.points == 5).all()
    offload = make_policy("offload", tiny).act(np.tile(state_of(tiny), (4, 1)))
    assert offload.points.shape == (4, 3) and (offload.points == 0).all() and (offload.powers_w == 1.0).all()
    assert isinstance(make_policy("local", tiny), Policy)


def test_random_baseline_is_seeded_and_in_range(tiny):
    a = make_policy("random", tiny, seed=5).act(np.zeros((50, 12)))
    b = make_policy("random", tiny, seed=5).act(np.zeros((50, 12)))
    assert np.array_equal(a.points, b.points) and np.array_equal(a.powers_w, b.powers_w)
    assert set(np.unique(a.points)) == set(range(6)) and set(np.unique(a.channels)) == {0, 1}
    assert ((a.powers_w >= 1e-10) & (a.powers_w <= 1.0)).all()


def test_random_baseline_draws_each_row_from_its_generator(tiny):
    policy = make_policy("random", tiny)
    rngs = lambda: [np.random.default_rng(s) for s in (7, 8, 9)]  # noqa: E731
    three = policy.act(np.zeros((3, 12)), rngs=rngs())
    alone = policy.act(np.zeros(12), rngs=[np.random.default_rng(8)])
    assert np.array_equal(three.points[1], alone.points) and np.array_equal(three.powers_w[1], alone.powers_w)
    assert not np.array_equal(three.powers_w[0], three.powers_w[1])


def _with_noise(tiny_toml, tmp_path, noise_w: str):
    path = tmp_path / f"noise{noise_w}.toml"
    path.write_text(tiny_toml.read_text().replace("noise_w = 1.0e-9", f"noise_w = {noise_w}"))
    return load_scenario(path)


def test_greedy_follows_the_radio(tiny_toml, tmp_path):
    deaf = _with_noise(tiny_toml, tmp_path, "1.0")  # uploads take forever: stay local
    assert (GreedyPolicy(deaf).act(state_of(deaf)).points == 5).all()
    clear = _with_noise(tiny_toml, tmp_path, "1.0e-30")  # uploads are nearly free: offload
    action = GreedyPolicy(clear).act(state_of(clear))
    assert (action.points < 5).all() and list(action.channels) == [0, 1, 0]


def test_greedy_reads_each_environments_distance(tiny):
    sim = Simulator(tiny, num_envs=3, mode="train", seed=0)
    sim.distance_m[:] = np.array([[2.0], [50.0], [100.0]])
    actions = GreedyPolicy(tiny).act(sim.global_state())
    assert actions.points.shape == (3, 3)
    assert not np.array_equal(actions.powers_w[0], actions.powers_w[2])


def test_search_is_at_least_as_good_as_its_starts(tiny):
    cell = EpisodeSet.of(tiny, 1, cell="evaluation")
    result = coordinate_search(tiny, cell, power_levels=4, starts=3, max_rounds=3)
    local = evaluate_policy(make_policy("local", tiny), tiny).reward
    greedy = evaluate_policy(make_policy("greedy", tiny, power_levels=4), tiny).reward
    assert result.reward >= max(local, greedy) - 1e-9
    fixed = make_policy("search", tiny, power_levels=4, starts=3, max_rounds=3, tuning=cell)
    assert evaluate_policy(fixed, tiny).reward == pytest.approx(result.reward)


def test_search_is_tuned_on_tuning_episodes_and_the_oracle_on_each_held_out_one(tiny):
    tuning = tuning_episodes(tiny, 3)
    assert tuning.role == "tuning" and tuning.cell == "random" and len(tuning) == 3
    options = dict(power_levels=3, starts=2, max_rounds=2)
    tuned = coordinate_search(tiny, tuning, **options)
    assert evaluate_policy(make_policy("search", tiny, **options, tuning=tuning), tiny, tuning).reward == pytest.approx(tuned.reward)
    held_out = EpisodeSet.of(tiny, 3)
    oracle = search_oracle(tiny, held_out, **options)
    for i, (action, metrics) in enumerate(oracle):  # the searches run together, each exactly as it would alone
        alone = coordinate_search(tiny, held_out.subset([i]), **options)
        assert np.array_equal(action.points, alone.action.points) and np.array_equal(action.powers_w, alone.action.powers_w)
        assert metrics.reward == pytest.approx(alone.reward)
    assert len({tuple(a.points) + tuple(a.channels) + tuple(a.powers_w) for a, _ in oracle}) > 1  # each episode its own action


def test_the_oracle_is_never_below_the_deployed_search_on_an_episode(tiny):
    """Coordinate search ends in local optima; the oracle also starts from the deployed action, so it bounds it."""
    weak = dict(power_levels=3, starts=1, max_rounds=1)  # one short search from all-local: easily stuck
    deployed = coordinate_search(tiny, tuning_episodes(tiny, 4), power_levels=3, starts=3, max_rounds=3).action
    held_out = EpisodeSet.of(tiny, 6)
    fixed = evaluate_policy(FixedPolicy("search", deployed), tiny, held_out).per_episode
    oracle = search_oracle(tiny, held_out, also_from=deployed, **weak)
    assert all(m.reward >= f.reward - 1e-9 for (_, m), f in zip(oracle, fixed))
    with pytest.raises(InvalidInput, match="also_from must be one joint action"):
        search_oracle(tiny, held_out.subset([0]), also_from=deployed.batched(), **weak)


def test_search_prunes_candidates_that_fall_behind(tiny):
    N = tiny.num_devices
    points = np.array([[5] * N, [0] * N])
    cell = EpisodeSet.of(tiny, 1, cell="evaluation")
    rewards = evaluate_fixed_actions(tiny, points, np.zeros((2, N), dtype=int), np.array([[0.1] * N, [1e-9] * N]), cell, floor=-5.0)
    assert np.isfinite(rewards[0]) and rewards[1] == -np.inf


def test_baseline_options_only_for_baselines(tiny, tmp_path):
    with pytest.raises(InvalidInput, match="only apply to the baselines"):
        make_policy(tmp_path / "policy.json", tiny, power_levels=3)


def test_sb3_ppo_trains_saves_and_loads(tiny_toml, tmp_path):
    from coinfer.rl.sb3_ppo import Sb3PpoConfig, Sb3Policy, train_sb3_ppo

    config = Sb3PpoConfig(scenario=str(tiny_toml), total_steps=512, num_envs=8, n_steps=32, n_epochs=2, eval_every_steps=256,
                          pi_hidden=(32,), vf_hidden=(32,), seed=1)
    result = train_sb3_ppo(config, tmp_path / "sb3")
    assert result.steps == 512 and len(result.curve) == 2 and (tmp_path / "sb3" / "learning_curve.png").exists()
    scenario = load_scenario(tiny_toml)
    loaded = load_policy(tmp_path / "sb3", scenario)
    assert isinstance(loaded, Sb3Policy)
    # the final point of the curve: the held-out mean of the training loop and the evaluation cell's episode
    assert evaluate_policy(loaded, scenario, EpisodeSet.of(scenario, config.eval_episodes)).reward == pytest.approx(result.final_eval_reward)
    assert evaluate_policy(loaded, scenario).reward == pytest.approx(result.curve[-1].cell_reward)
    with pytest.raises(InvalidInput, match="trained for 3 devices"):
        load_policy(tmp_path / "sb3", "mahppo-paper-resnet18")

"""Evaluation repeats exactly: an episode's figures depend on the policy and the episode only."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from coinfer.core.errors import InvalidInput
from coinfer.rl.episodes import EpisodeSet
from coinfer.rl.evaluation import EvalResult, evaluate_policy
from coinfer.rl.mahppo_policy import MahppoPolicy
from coinfer.rl.networks import HybridActor
from coinfer.rl.policy import make_policy
from coinfer.rl.scenario import load_scenario


@pytest.fixture
def fading(tiny_toml, tmp_path):
    """The tiny cell with Rayleigh fading: every slot draws, so the episodes' own streams matter.

    Episodes stop after 12 slots (an untrained policy would take up to 40): cut episodes test the
    same arithmetic in a third of the time.
    """
    path = tmp_path / "fading.toml"
    text = tiny_toml.read_text().replace('noise_w = 1.0e-9', 'noise_w = 1.0e-9\nchannel_model = "rayleigh"').replace('name = "tiny"', 'name = "fading"')
    path.write_text(text.replace("max_slots = 40", "max_slots = 12"))
    return load_scenario(path)


def untrained_mahppo(scenario, seed: int = 0) -> MahppoPolicy:
    # Fresh output layers (gain 0.01) make near-uniform logits: the most fragile argmax there is.
    torch.manual_seed(seed)
    return MahppoPolicy(HybridActor(scenario.num_devices, 4, scenario.num_points, scenario.num_subchannels, (32, 16)), scenario)


def untrained_sb3(scenario):
    from stable_baselines3.common.policies import ActorCriticPolicy
    from torch import nn

    from coinfer.rl.sb3_ppo import Sb3Policy, _spaces

    torch.manual_seed(0)
    observation_space, action_space = _spaces(scenario, 4)
    net = ActorCriticPolicy(observation_space, action_space, lr_schedule=lambda _: 0.0, net_arch=dict(pi=[32], vf=[32]), activation_fn=nn.ReLU)
    return Sb3Policy(net, scenario, 4)


def per_episode(result: EvalResult) -> list[dict]:
    return [m.to_dict() for m in result.per_episode]


@pytest.mark.slow
@pytest.mark.parametrize("policy_name, deterministic", [("mahppo", True), ("mahppo", False), ("sb3-ppo", True), ("sb3-ppo", False), ("random", True)])
def test_figures_do_not_depend_on_the_batch_or_the_thread_count(fading, policy_name, deterministic):
    policy = {"mahppo": untrained_mahppo, "sb3-ppo": untrained_sb3, "random": lambda s: make_policy("random", s)}[policy_name](fading)
    episodes = EpisodeSet.of(fading, 33)
    threads = torch.get_num_threads()
    seen = []
    try:
        for num_threads in (1, 2):
            torch.set_num_threads(num_threads)
            for batch in (1, 7, 32):
                seen.append(per_episode(evaluate_policy(policy, fading, episodes, deterministic=deterministic, batch_size=batch)))
    finally:
        torch.set_num_threads(threads)
    assert all(s == seen[0] for s in seen[1:])
    # and the episodes differ from each other (the set is not one episode 33 times)
    assert len({m["reward"] for m in seen[0]}) > 20


def test_an_episode_is_the_same_alone_as_inside_any_set(fading):
    policy = untrained_mahppo(fading, seed=1)
    episodes = EpisodeSet.of(fading, 9)
    whole = per_episode(evaluate_policy(policy, fading, episodes, deterministic=False, batch_size=4))
    alone = per_episode(evaluate_policy(policy, fading, episodes.subset([6]), deterministic=False))
    assert alone == [whole[6]]


def test_sampled_and_deterministic_figures_differ_and_repeat(fading):
    policy = untrained_mahppo(fading)
    episodes = EpisodeSet.of(fading, 4)
    sampled = per_episode(evaluate_policy(policy, fading, episodes, deterministic=False))
    assert sampled == per_episode(evaluate_policy(policy, fading, episodes, deterministic=False))
    assert sampled != per_episode(evaluate_policy(policy, fading, episodes))


def test_result_has_means_intervals_and_survives_a_round_trip(tiny):
    result = evaluate_policy(make_policy("greedy", tiny), tiny, EpisodeSet.of(tiny, 6))
    rewards = result.values("reward")
    assert result.reward == pytest.approx(rewards.mean()) and result.episodes == 6
    interval = result.intervals["reward"]
    assert interval.low <= result.reward <= interval.high and interval.low > rewards.min() - 1e-12
    summary = result.summary()
    assert summary["ci95"]["energy_per_task_j"] == [result.intervals["energy_per_task_j"].low, result.intervals["energy_per_task_j"].high]
    again = EvalResult.from_dict(result.to_dict())
    assert again.summary() == summary and per_episode(again) == per_episode(result)


def test_one_evaluation_cell_episode_has_no_interval(tiny):
    result = evaluate_policy(make_policy("local", tiny), tiny)
    assert result.episodes == 1 and result.intervals is None and result.summary()["ci95"] is None
    assert result.episode_set["cell"] == "evaluation" and result.finished_tasks == 36


def test_bad_episode_sets_are_refused_naming_the_field(tiny, tiny_toml, tmp_path):
    policy = make_policy("local", tiny)
    five = load_scenario("mahppo-paper-resnet18")
    with pytest.raises(InvalidInput, match="field 'scenario'"):
        evaluate_policy(policy, tiny, EpisodeSet.of(five, 4))
    more = tmp_path / "more.toml"
    more.write_text(tiny_toml.read_text().replace("count = 3", "count = 4"))
    with pytest.raises(InvalidInput, match="field 'num_devices' is 3, scenario 'tiny' has 4"):
        evaluate_policy(make_policy("local", load_scenario(more)), load_scenario(more), EpisodeSet.of(tiny, 4))
    wider = tmp_path / "wider.toml"
    wider.write_text(tiny_toml.read_text().replace("num_subchannels = 2", "num_subchannels = 3"))
    with pytest.raises(InvalidInput, match="field 'num_subchannels' is 2"):
        EpisodeSet.of(tiny, 4).check(load_scenario(wider))
    with pytest.raises(InvalidInput, match="batch_size"):
        evaluate_policy(policy, tiny, EpisodeSet.of(tiny, 4), batch_size=0)

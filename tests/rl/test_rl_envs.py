"""The views: PettingZoo's parallel API, gymnasium's and SB3's env checkers, the batched form."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from pettingzoo.test import parallel_api_test
from stable_baselines3.common.env_checker import check_env as sb3_check_env

from coinfer.core.errors import InvalidInput
from coinfer.rl.actions import JointAction
from coinfer.rl.envs.batched import BatchedEnv
from coinfer.rl.envs.gym_env import OffloadingEnv
from coinfer.rl.envs.parallel import OffloadingParallelEnv


@pytest.mark.parametrize("scenario", ["mahppo-paper-resnet18", "edge-server", "heterogeneous", "dense"])
def test_parallel_env_passes_pettingzoo_api_test(scenario):
    env = OffloadingParallelEnv(scenario, seed=1)
    parallel_api_test(env, num_cycles=70)
    obs, _ = env.reset(seed=3)
    assert env.state().shape == env.state_space.shape
    assert all(env.observation_space(a).contains(o) for a, o in obs.items())


def test_parallel_env_shares_reward_and_names_bad_actions(tiny):
    env = OffloadingParallelEnv(tiny, mode="eval")
    env.reset(seed=0)
    actions = {a: {"point": 3, "channel": n % 2, "power_w": np.array([0.1], dtype=np.float32)} for n, a in enumerate(env.agents)}
    _, rewards, *_ = env.step(actions)
    assert len(set(rewards.values())) == 1
    actions["device_1"] = {"point": 9, "channel": 0, "power_w": np.array([0.1])}
    with pytest.raises(InvalidInput, match=r"device 1.*split point 9"):
        env.step(actions)


@pytest.mark.parametrize("action_format", ["hybrid", "discrete"])
@pytest.mark.parametrize("scenario", ["mahppo-paper-resnet18", "edge-server"])
def test_gym_env_passes_gymnasium_check_env(scenario, action_format):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # advice on unnormalised Box actions, not an error
        gym_check_env(OffloadingEnv(scenario, action_format=action_format), skip_render_check=True)


@pytest.mark.parametrize("scenario", ["mahppo-paper-resnet18", "dense"])
def test_discrete_gym_env_passes_sb3_check_env(scenario):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sb3_check_env(OffloadingEnv(scenario, action_format="discrete"))
    assert not [w for w in caught if "not supported" in str(w.message)]


def test_gym_env_decodes_and_refuses_actions(tiny):
    env = OffloadingEnv(tiny, action_format="discrete", power_levels=4)
    env.reset(seed=0)
    joint = env.decode_action(np.array([3, 0, 3, 5, 1, 0, 0, 0, 2]))
    assert list(joint.points) == [3, 5, 0] and list(joint.channels) == [0, 1, 0]
    assert joint.powers_w[0] == pytest.approx(1.0) and joint.powers_w[1] == pytest.approx(1e-3)
    assert np.array_equal(env.encode_action(joint), [3, 0, 3, 5, 1, 0, 0, 0, 2])
    with pytest.raises(InvalidInput, match=r"device 2: power level 4"):
        env.step(np.array([3, 0, 3, 5, 1, 0, 0, 0, 4]))
    with pytest.raises(InvalidInput, match=r"device 1.*sub-channel 2"):
        env.step(np.array([3, 0, 3, 5, 2, 0, 0, 0, 1]))


def test_gym_env_needs_reset_after_episode_end(tiny):
    env = OffloadingEnv(tiny, mode="train", action_format="discrete")
    env.reset(seed=0)
    done = False
    while not done:
        _, _, terminated, truncated, info = env.step(np.tile([5, 0, 0], 3))
        done = terminated or truncated
    assert "episode_metrics" in info
    with pytest.raises(InvalidInput, match="reset"):
        env.step(np.tile([5, 0, 0], 3))


def test_batched_env_auto_resets_and_reports_final_states(tiny):
    env = BatchedEnv(tiny, num_envs=4, mode="train", seed=0)
    obs = env.reset()
    assert obs.shape == (4, env.observation_dim)
    local = JointAction(np.full((4, 3), 5), np.zeros((4, 3), dtype=int), np.full((4, 3), 0.1))
    seen = 0
    for _ in range(3 * tiny.episode.max_slots):
        step = env.step(local)
        for e, metrics in step.episodes:
            seen += 1
            assert metrics.finished_tasks > 0
            tasks_left = step.final_observations[e].reshape(3, -1)[:, 0]
            fresh = step.observations[e].reshape(3, -1)[:, 0]
            assert (fresh == 1.0).all() and not np.array_equal(tasks_left, fresh)
    assert seen >= 4

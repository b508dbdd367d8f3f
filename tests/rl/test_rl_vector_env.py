"""The gymnasium id, the batched simulator as a gymnasium VectorEnv and as an SB3 VecEnv."""

from __future__ import annotations

import warnings
from pathlib import Path

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from gymnasium.vector import AutoresetMode

import coinfer.rl
from coinfer.core.errors import InvalidInput
from coinfer.rl.envs.batched import BatchedEnv
from coinfer.rl.envs.sb3_vec_env import OffloadingSb3VecEnv
from coinfer.rl.envs.vector import OffloadingVectorEnv
from coinfer.rl.sim.core import Simulator


@pytest.fixture
def stream_toml(tiny_toml: Path, tmp_path: Path) -> Path:
    """The tiny cell with every random draw the core makes: Rayleigh fading each slot, Poisson arrivals."""
    text = tiny_toml.read_text().replace('arrivals = "batch"', 'arrivals = "poisson-stream"\narrival_rate_per_s = 20.0')
    text = text.replace("noise_w = 1.0e-9", 'noise_w = 1.0e-9\nchannel_model = "rayleigh"')
    path = tmp_path / "tiny-stream.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("action_format", ["hybrid", "discrete"])
@pytest.mark.parametrize("scenario", ["mahppo-paper-resnet18", "heterogeneous"])
def test_gymnasium_make_gives_an_env_that_passes_check_env(scenario, action_format):
    env = gymnasium.make(coinfer.rl.ENV_ID, scenario=scenario, action_format=action_format)
    assert env.unwrapped.scenario.name == scenario
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # advice on unnormalised Box actions, not an error
        check_env(env.unwrapped, skip_render_check=True)


def test_the_id_defaults_to_the_paper_cell_and_make_vec_to_the_batched_simulator():
    assert gymnasium.make(coinfer.rl.ENV_ID).unwrapped.scenario.name == "mahppo-paper-resnet18"
    envs = gymnasium.make_vec(coinfer.rl.ENV_ID, num_envs=5, vectorization_mode="vector_entry_point", scenario="dense")
    assert isinstance(envs, OffloadingVectorEnv) and envs.num_envs == 5 and envs.batched.num_envs == 5
    assert envs.metadata["autoreset_mode"] is AutoresetMode.SAME_STEP
    assert envs.observation_space.shape == (5, *envs.single_observation_space.shape)
    obs, _ = envs.reset(seed=0)
    assert obs in envs.observation_space
    assert isinstance(gymnasium.make_vec(coinfer.rl.ENV_ID, num_envs=2), OffloadingVectorEnv)  # its own vectoriser by default


def _single_action(actions, i: int):
    return {k: v[i] for k, v in actions.items()} if isinstance(actions, dict) else actions[i]


@pytest.mark.parametrize("action_format", ["hybrid", "discrete"])
@pytest.mark.parametrize("case", ["tiny", "stream"])
def test_vector_steps_equal_single_environments_with_the_same_seeds(case, action_format, tiny_toml, stream_toml):
    scenario = str(tiny_toml if case == "tiny" else stream_toml)
    E = 4
    envs = coinfer.rl.make_vec_env(scenario, num_envs=E, action_format=action_format)
    singles = [coinfer.rl.make_env(scenario, action_format=action_format) for _ in range(E)]
    obs, _ = envs.reset(seed=7)
    assert np.array_equal(obs, np.stack([s.reset(seed=7 + i)[0] for i, s in enumerate(singles)]))
    envs.action_space.seed(0)
    ended = 0
    for _ in range(60):
        actions = envs.action_space.sample()
        obs, rewards, terminated, truncated, infos = envs.step(actions)
        for i, single in enumerate(singles):
            single_obs, reward, single_terminated, single_truncated, info = single.step(_single_action(actions, i))
            assert (reward, single_terminated, single_truncated) == (rewards[i], terminated[i], truncated[i])
            if single_terminated or single_truncated:
                ended += 1
                assert infos["_final_obs"][i] and np.array_equal(infos["final_obs"][i], single_obs)
                assert repr(infos["final_info"]["episode_metrics"][i]) == repr(info["episode_metrics"])
                single_obs, _ = single.reset()  # the next draws of its own stream, as the vector's autoreset
            assert np.array_equal(obs[i], single_obs)
    assert ended >= E  # autoreset was exercised
    # A reset without a seed continues every stream.
    obs, _ = envs.reset()
    assert np.array_equal(obs, np.stack([s.reset()[0] for s in singles]))


def test_a_shared_stream_is_the_batched_simulators_seeding(tiny):
    envs = OffloadingVectorEnv(tiny, num_envs=3, seed=0, action_format="discrete", shared_stream=True)
    batched = BatchedEnv(tiny, num_envs=3, seed=11)
    obs, _ = envs.reset(seed=11)
    assert np.array_equal(obs, batched.reset().astype(np.float32))
    envs.action_space.seed(1)
    for _ in range(20):
        actions = envs.action_space.sample()
        obs, rewards, terminated, truncated, _ = envs.step(actions)
        step = batched.step(envs.spaces.decode(actions, 3))
        assert np.array_equal(obs, step.observations.astype(np.float32)) and np.array_equal(rewards, step.rewards)
        assert np.array_equal(terminated, step.terminated) and np.array_equal(truncated, step.truncated)


def test_per_environment_seeds_are_one_stream_each(tiny):
    sim = Simulator(tiny, num_envs=3, seed=[5, 6, 5])
    distance = sim.distance_m
    assert np.array_equal(distance[0], distance[2]) and not np.array_equal(distance[0], distance[1])
    assert np.array_equal(distance[1], Simulator(tiny, seed=6).distance_m[0])
    with pytest.raises(InvalidInput, match="2 seeds for 3 environments"):
        Simulator(tiny, num_envs=3, seed=[1, 2])
    with pytest.raises(InvalidInput, match="integer or one integer per environment"):
        Simulator(tiny, num_envs=1, seed="x")


def test_the_vector_env_refuses_bad_calls_with_clear_errors(tiny):
    envs = OffloadingVectorEnv(tiny, num_envs=2, action_format="discrete")
    with pytest.raises(InvalidInput, match="reset"):
        envs.step(np.zeros((2, 9), dtype=np.int64))
    envs.reset(seed=0)
    with pytest.raises(InvalidInput, match=r"shape \(2, 9\)"):
        envs.step(np.zeros((3, 9), dtype=np.int64))
    with pytest.raises(InvalidInput, match="3 seeds for 2 environments"):
        envs.reset(seed=[1, 2, 3])
    with pytest.raises(InvalidInput, match="one integer seed"):
        OffloadingVectorEnv(tiny, num_envs=2, shared_stream=True).reset(seed=[1, 2])
    with pytest.raises(InvalidInput, match="num_envs"):
        OffloadingVectorEnv(tiny, num_envs=0)
    with pytest.raises(InvalidInput, match="action_format='discrete'"):
        OffloadingSb3VecEnv(OffloadingVectorEnv(tiny, num_envs=2))


def test_sb3_seeds_its_vec_env_as_it_seeds_its_own(tiny):
    venv = coinfer.rl.make_sb3_vec_env(tiny, num_envs=3)
    venv.seed(5)
    obs = venv.reset()
    singles = [coinfer.rl.make_env(tiny, action_format="discrete").reset(seed=5 + i)[0] for i in range(3)]
    assert np.array_equal(obs, np.stack(singles))


@pytest.mark.slow
def test_sb3_ppo_trains_on_the_vec_env(tiny_toml, tmp_path):
    from stable_baselines3 import PPO

    from coinfer.core.measure import torch_threads

    few_tasks = tmp_path / "few-tasks.toml"  # short, cheap episodes: a few thousand steps in seconds
    few_tasks.write_text(tiny_toml.read_text().replace("mean_tasks_per_device = 12", "mean_tasks_per_device = 3"))
    venv = coinfer.rl.make_sb3_vec_env(str(few_tasks), num_envs=8)
    with torch_threads(1):
        model = PPO("MlpPolicy", venv, n_steps=32, batch_size=128, n_epochs=2, seed=0, device="cpu")
        model.learn(total_timesteps=2048)
        actions, _ = model.predict(venv.reset(), deterministic=True)
    assert model.num_timesteps == 2048
    episodes = list(model.ep_info_buffer)  # SB3 reads them from the episode records in the infos
    assert len(episodes) >= 8 and all(np.isfinite(e["r"]) and 1 <= e["l"] <= 8 for e in episodes)
    assert actions.shape == (8, 9) and venv.action_space.contains(actions[0])

"""``coinfer.rl``'s Python API: the views it builds, evaluation by name, the trainers it re-exports."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from gymnasium.wrappers import OrderEnforcing

import coinfer.rl
from coinfer.core.errors import InvalidInput
from coinfer.rl.envs.parallel import OffloadingParallelEnv
from coinfer.rl.scenario import load_scenario


def test_importing_coinfer_rl_registers_the_id_without_loading_torch():
    code = (
        "import sys, gymnasium, coinfer.rl; "
        "assert coinfer.rl.ENV_ID in gymnasium.registry; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'stable_baselines3', 'grpc'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_make_env_and_parallel_env_build_the_views(tiny_toml):
    env = coinfer.rl.make_env(str(tiny_toml), mode="eval", action_format="discrete", power_levels=4)
    assert isinstance(env, OrderEnforcing)  # gymnasium.make's wrappers
    assert env.unwrapped.mode == "eval" and env.unwrapped.power_levels_w.shape == (3, 4)
    obs, _ = env.reset(seed=0)
    assert obs in env.observation_space
    agents = coinfer.rl.parallel_env(str(tiny_toml), seed=1)
    assert isinstance(agents, OffloadingParallelEnv) and agents.possible_agents == ["device_0", "device_1", "device_2"]


def test_evaluate_takes_a_baseline_by_name_or_a_policy(tiny):
    from coinfer.rl.evaluation import evaluate_policy
    from coinfer.rl.policy import make_policy

    from coinfer.rl.episodes import EpisodeSet

    by_name = coinfer.rl.evaluate("random", tiny, episodes=3, seed=3)
    held_out = EpisodeSet.of(load_scenario(tiny), 3)
    direct = evaluate_policy(make_policy("random", tiny, seed=3), tiny, held_out)
    assert by_name.summary() == direct.summary() and by_name.episodes == 3
    cell = coinfer.rl.evaluate(make_policy("greedy", tiny), tiny, episodes=2, cell="evaluation")
    assert cell.policy == "greedy" and cell.episodes == 2
    with pytest.raises(InvalidInput, match="episodes"):
        coinfer.rl.evaluate("local", tiny, episodes=0)


def test_the_trainers_are_the_rl_packages_own():
    from coinfer.rl import mahppo

    assert coinfer.rl.train_mahppo is mahppo.train_mahppo and coinfer.rl.MahppoConfig is mahppo.MahppoConfig
    assert set(coinfer.rl.__all__) <= set(dir(coinfer.rl))
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        coinfer.rl.nothing  # noqa: B018


def test_make_vec_env_seeds_environment_i_with_seed_plus_i(tiny):
    envs = coinfer.rl.make_vec_env(tiny, num_envs=3, seed=4)
    obs, _ = envs.reset()  # no seed: the constructor's, continued
    singles = np.stack([coinfer.rl.make_env(tiny, seed=4 + i).reset()[0] for i in range(3)])
    assert np.array_equal(obs, singles)

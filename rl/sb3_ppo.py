"""The ``sb3-ppo`` baseline: stable-baselines3 PPO on the joint action with discretised power.

One agent picks every device's [split point, sub-channel, power level] (a MultiDiscrete action)
from the global state. Training runs on the batched simulator through a small SB3 `VecEnv`
adapter; the trained policy is saved like MAHPPO's (safetensors + JSON, no pickle) and acts
behind the same `Policy` protocol.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from gymnasium import spaces
from torch import nn

from coinfer.core.errors import InvalidInput
from coinfer.rl.actions import JointAction, decode_discrete, power_grids_w, sample_categorical
from coinfer.rl.episodes import EpisodeSet, check_training_seeds
from coinfer.rl.mahppo import EVAL_COLUMNS, CurvePoint, TrainResult, eval_csv_row
from coinfer.rl.networks import Float64Copy
from coinfer.rl.policy_files import PolicySpec, check_compatible, read_policy_spec, read_policy_tensors, save_policy
from coinfer.rl.scenario import Scenario, load_scenario
from coinfer.rl.sim.core import Simulator, feature_names


@dataclass
class Sb3PpoConfig:
    """A stable-baselines3 PPO run on the joint-action view."""

    scenario: str = "mahppo-paper-resnet18"
    """Scenario name or TOML path."""
    total_steps: int = 500_000
    """Environment steps to train for."""
    seed: int = 0
    """Root seed of the simulator and of SB3."""
    num_envs: int = 64
    """Environments stepped together."""
    n_steps: int = 64
    """Steps per environment per rollout (num_envs x n_steps = 4096, as MAHPPO)."""
    batch_size: int = 256
    """Minibatch size."""
    n_epochs: int = 10
    """Passes over each rollout."""
    learning_rate: float = 3e-4
    """Adam learning rate (SB3's default)."""
    gamma: float = 0.95
    """Discount factor (as MAHPPO)."""
    gae_lambda: float = 0.95
    """GAE lambda (as MAHPPO)."""
    clip_range: float = 0.2
    """PPO clip range."""
    ent_coef: float = 0.001
    """Entropy bonus (as MAHPPO)."""
    power_levels: int = 8
    """Discrete transmit power levels per device (`power_grid_w`)."""
    pi_hidden: tuple[int, ...] = (256, 128)
    """Hidden sizes of the policy network (as a MAHPPO actor)."""
    vf_hidden: tuple[int, ...] = (256, 128, 64)
    """Hidden sizes of the value network (as MAHPPO's critic)."""
    torch_threads: int = 1
    """Intra-op threads for torch."""
    eval_every_steps: int = 25_000
    """Evaluate the deterministic policy every this many steps."""
    eval_episodes: int = 16
    """Held-out episodes per evaluation (as `MahppoConfig.eval_episodes`)."""


def _spaces(scenario: Scenario, power_levels: int) -> tuple[spaces.Box, spaces.MultiDiscrete]:
    sim = Simulator(scenario, num_envs=1, mode="eval")
    high = sim.feature_high().reshape(-1).astype(np.float32)
    observation_space = spaces.Box(low=np.zeros_like(high), high=high, dtype=np.float32)
    action_space = spaces.MultiDiscrete(np.tile([scenario.num_points, scenario.num_subchannels, power_levels], scenario.num_devices))
    return observation_space, action_space


def _power_levels(scenario: Scenario, levels: int) -> np.ndarray:
    low = np.array([d.power_range_w[0] for d in scenario.devices])
    high = np.array([d.power_range_w[1] for d in scenario.devices])
    return power_grids_w(low, high, levels)


class Sb3Policy:
    """A trained SB3 actor-critic policy behind the `Policy` protocol.

    Acts as `MahppoPolicy` does: one state at a time, the actor in float64, its logits rounded
    to float32, ties to the lower index, sampled actions from the row's generator.
    """

    def __init__(self, sb3_policy, scenario: Scenario, power_levels: int, name: str = "sb3-ppo", config: Sb3PpoConfig | None = None) -> None:
        self.policy, self.scenario, self.name, self.config = sb3_policy, scenario, name, config
        self.power_levels = power_levels
        self.levels_w = _power_levels(scenario, power_levels)
        self.state_dim = scenario.num_devices * len(feature_names(scenario))
        self._rng = np.random.default_rng()
        self._actor64 = Float64Copy(sb3_policy.mlp_extractor.policy_net, sb3_policy.action_net)

    def reset(self) -> None:
        pass

    def act(self, observation: np.ndarray, deterministic: bool = True, rngs: Sequence[np.random.Generator] | None = None) -> JointAction:
        obs = np.asarray(observation, dtype=np.float32)
        if obs.shape[-1] != self.state_dim:
            raise InvalidInput(f"policy {self.name!r} expects global states of {self.state_dim} values, got {obs.shape[-1]}")
        rows = obs.reshape(-1, self.state_dim)
        if rngs is not None and len(rngs) != rows.shape[0]:
            raise InvalidInput(f"policy {self.name!r}: {len(rngs)} generators for {rows.shape[0]} states")
        trunk, head = self._actor64.get()
        sizes = [int(n) for n in self.policy.action_space.nvec]
        actions = np.zeros((rows.shape[0], len(sizes)), np.int64)
        with torch.no_grad():
            for e, row in enumerate(rows):
                logits = head(trunk(torch.as_tensor(row, dtype=torch.float64)[None]))[0].float().numpy()
                parts = np.split(logits, np.cumsum(sizes)[:-1])
                rng = self._rng if rngs is None else rngs[e]
                actions[e] = [part.argmax() if deterministic else sample_categorical(part, rng) for part in parts]
        action = decode_discrete(actions, self.levels_w)
        return action.env(0) if obs.ndim == 1 else action

    def spec(self) -> PolicySpec:
        s = self.scenario
        pi, vf = (self.config.pi_hidden, self.config.vf_hidden) if self.config else ((), ())
        return PolicySpec(
            algo="sb3-ppo",
            scenario=s.name,
            num_devices=s.num_devices,
            num_points=s.num_points,
            num_subchannels=s.num_subchannels,
            feature_names=feature_names(s),
            power_low_w=tuple(d.power_range_w[0] for d in s.devices),
            power_high_w=tuple(d.power_range_w[1] for d in s.devices),
            actor_hidden=tuple(pi),
            critic_hidden=tuple(vf),
            power_levels=self.power_levels,
            extra={"train_config": {**asdict(self.config), "pi_hidden": list(pi), "vf_hidden": list(vf)}} if self.config else {},
        )

    def save(self, path: str | Path) -> Path:
        return save_policy(path, self.spec(), dict(self.policy.state_dict()))

    @classmethod
    def load(cls, path: str | Path, scenario: Scenario | None = None) -> "Sb3Policy":
        from stable_baselines3.common.policies import ActorCriticPolicy

        spec, json_path = read_policy_spec(path)
        if spec.algo != "sb3-ppo":
            raise InvalidInput(f"{json_path}: not an sb3-ppo policy (algo {spec.algo!r})")
        if scenario is None:
            scenario = load_scenario(spec.scenario)
        check_compatible(spec, scenario, str(json_path))
        observation_space, action_space = _spaces(scenario, spec.power_levels)
        policy = ActorCriticPolicy(
            observation_space,
            action_space,
            lr_schedule=lambda _: 0.0,
            net_arch=dict(pi=list(spec.actor_hidden), vf=list(spec.critic_hidden)),
            activation_fn=nn.ReLU,
        )
        try:
            policy.load_state_dict(read_policy_tensors(json_path))
        except RuntimeError as exc:
            raise InvalidInput(f"{json_path}: the weights do not fit the described network ({str(exc).splitlines()[0]})") from exc
        policy.set_training_mode(False)
        return cls(policy, scenario, spec.power_levels)


def train_sb3_ppo(config: Sb3PpoConfig, out_dir: str | Path | None = None, progress: bool = False) -> TrainResult:
    """Train SB3 PPO on the batched simulator; same outputs as `train_mahppo`."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback

    from coinfer.rl.envs.sb3_vec_env import OffloadingSb3VecEnv
    from coinfer.rl.envs.vector import OffloadingVectorEnv
    from coinfer.rl.evaluation import evaluate_policy
    from coinfer.rl.plots import plot_learning_curve

    scenario = load_scenario(config.scenario)
    check_training_seeds([config.seed], "seed")
    if config.eval_episodes < 2:
        raise InvalidInput(f"eval_episodes must be >= 2 (a mean with an interval), got {config.eval_episodes}")
    held_out = EpisodeSet.of(scenario, config.eval_episodes)
    torch.set_num_threads(config.torch_threads)
    # One random stream for all environments: the batched simulator's seeding, as MAHPPO trains.
    vector = OffloadingVectorEnv(
        scenario, config.num_envs, mode="train", seed=config.seed, action_format="discrete", power_levels=config.power_levels, shared_stream=True
    )
    env = OffloadingSb3VecEnv(vector)
    model = PPO(
        "MlpPolicy",
        env,
        learning_rate=config.learning_rate,
        n_steps=config.n_steps,
        batch_size=config.batch_size,
        n_epochs=config.n_epochs,
        gamma=config.gamma,
        gae_lambda=config.gae_lambda,
        clip_range=config.clip_range,
        ent_coef=config.ent_coef,
        policy_kwargs=dict(net_arch=dict(pi=list(config.pi_hidden), vf=list(config.vf_hidden)), activation_fn=nn.ReLU),
        seed=config.seed,
        device="cpu",
        verbose=0,
    )
    policy = Sb3Policy(model.policy, scenario, config.power_levels, config=config)
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "eval.csv").write_text(",".join(EVAL_COLUMNS) + "\n")
    curve: list[CurvePoint] = []
    start, cpu_start = time.perf_counter(), time.process_time()

    class Evaluate(BaseCallback):
        def __init__(self) -> None:
            super().__init__()
            self.next_eval = config.eval_every_steps
            self.rewards: list[float] = []

        def _on_step(self) -> bool:
            for info in self.locals.get("infos", []):
                if "episode" in info:
                    self.rewards.append(info["episode"]["r"])
            if config.eval_every_steps and self.num_timesteps >= self.next_eval:
                self.next_eval += config.eval_every_steps
                self.record()
            return True

        def record(self) -> None:
            r = evaluate_policy(policy, scenario, held_out)
            cell = evaluate_policy(policy, scenario, 1)
            elapsed = time.perf_counter() - start
            train_reward = float(np.mean(self.rewards)) if self.rewards else float("nan")
            self.rewards = []
            interval = r.intervals["reward"] if r.intervals else None
            curve.append(CurvePoint(self.num_timesteps, r.reward, interval.low if interval else float("nan"),
                                    interval.high if interval else float("nan"), cell.reward, train_reward, elapsed))
            if out is not None:
                with open(out / "eval.csv", "a") as f:
                    f.write(",".join(str(v) for v in eval_csv_row(self.num_timesteps, elapsed, r, cell)) + "\n")

    callback = Evaluate()
    model.learn(total_timesteps=config.total_steps, callback=callback, progress_bar=progress)
    if curve and curve[-1].step == model.num_timesteps:
        curve.pop()  # evaluated during the last rollout, before the last update
    callback.record()
    wall_s = time.perf_counter() - start
    policy_path = None
    if out is not None:
        policy_path = policy.save(out / "policy")
        plot_learning_curve({"sb3-ppo": [[(p.step, p.eval_reward) for p in curve]]}, out / "learning_curve.png",
                            title=f"SB3 PPO on {scenario.name}: mean of {config.eval_episodes} held-out episodes",
                            bands={"sb3-ppo": [[(p.step, p.eval_low, p.eval_high) for p in curve]]})
    final = curve[-1].eval_reward
    best = max(p.eval_reward for p in curve)
    return TrainResult(policy_path, int(model.num_timesteps), wall_s, model.num_timesteps / wall_s, curve, final, best, None, time.process_time() - cpu_start)

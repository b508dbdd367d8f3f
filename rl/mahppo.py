"""MAHPPO: multi-agent hybrid PPO for split point, sub-channel and power (Hao et al., TMC 2023).

Read top to bottom: the configuration, the loss pieces (GAE, the per-component clipped
surrogate), then `train_mahppo`: rollout on the batched simulator, GAE, epochs x minibatches,
logging, evaluation and checkpoints. The networks and the hybrid distribution are in
`coinfer.rl.networks`; saving and acting with a trained policy in `coinfer.rl.mahppo_policy`.

Each device has an actor (or one shared actor with a device-id input) with three heads; the
centralised critic reads the global state; every (device, component) pair has its own clipped
ratio, all sharing the GAE advantage of the shared reward; the losses are averaged.
"""

from __future__ import annotations

import csv
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from coinfer.core.errors import InvalidInput
from coinfer.rl.actions import JointAction, powers_from_unit
from coinfer.rl.envs.batched import BatchedEnv
from coinfer.rl.episodes import EpisodeSet, check_training_seeds
from coinfer.rl.networks import ACTIVATIONS, Critic, HybridActor, hybrid_entropy, hybrid_log_prob, hybrid_sample
from coinfer.rl.scenario import Scenario, load_scenario


TRAIN_CELL_MODES = {"random": "train", "evaluation": "eval"}
"""`MahppoConfig.train_cell` -> the simulator mode whose episodes it trains on."""
ADVANTAGE_NORMALIZATIONS = ("minibatch", "rollout", "none")
"""Values of `MahppoConfig.advantage_normalization`."""
TRACE_DECAYS = ("gamma-lambda", "lambda")
"""Values of `MahppoConfig.trace_decay`."""
CRITIC_TARGETS = ("lambda-return", "one-step")
"""Values of `MahppoConfig.critic_target`."""


@dataclass
class MahppoConfig:
    """Everything a MAHPPO run depends on.

    The defaults are the paper's and its code's (learning rates, gamma, lambda, clip, entropy,
    network sizes, an update every 1024 environment steps with 80 minibatches of 256, a constant
    learning rate, no gradient clipping, 500k steps), except: each update's 1024 steps come from 64
    environments stepped together (16 steps each; the paper code steps one), advantages are
    normalised per minibatch (the code: over the rollout), the power head spans its range
    geometrically (the code: linearly), GAE decays by gamma x lambda and the critic learns
    lambda-returns (the code: lambda alone, one-step targets) and the hidden layers are ReLU (the
    paper: tanh). What
    each of these choices is worth: docs/rl.md, "MAHPPO's defaults and the paper code's choices".
    """

    scenario: str = "mahppo-paper-resnet18"
    """Scenario name or TOML path."""
    num_devices: int | None = None
    """Override: that many copies of the scenario's first device (device-count sweeps)."""
    beta: float | None = None
    """Override: the reward's energy weight."""
    total_steps: int = 500_000
    """Environment steps (slots of one environment) to train for."""
    seed: int = 0
    """Root seed of the simulator, the networks and the sampling."""
    num_envs: int = 64
    """Environments stepped together by the batched simulator. Since its event loop is compiled,
    fewer cost little more per step (2026-12-08, 500k steps, one thread, two runs on 2 cores: 8
    environments 1,147 steps/s, 16 1,245, the default 64 1,130-1,420; docs/rl.md)."""
    rollout_steps: int = 1024
    """Environment steps per update, over all environments (16 per environment by default; the paper code's 1024)."""
    update_epochs: int = 20
    """Passes over each rollout: 20 epochs of minibatches of 256 are the paper's 80 minibatches per 1024 steps."""
    minibatch_size: int = 256
    """Samples per gradient step."""
    actor_lr: float = 1e-4
    """Adam learning rate of the actors."""
    critic_lr: float = 1e-4
    """Adam learning rate of the critic."""
    anneal_lr: bool = False
    """Decay both learning rates linearly to 0 over training (as CleanRL's ppo.py); the paper code keeps them constant."""
    gamma: float = 0.95
    """Discount factor."""
    gae_lambda: float = 0.95
    """GAE lambda."""
    clip_coef: float = 0.2
    """PPO clip range of every component's ratio."""
    ent_coef: float = 0.001
    """Entropy bonus weight."""
    max_grad_norm: float = 0.0
    """Global gradient-norm clip per network (0: no clipping, as the paper code)."""
    advantage_normalization: str = "minibatch"
    """Scale advantages to mean 0 and std 1 over each 'minibatch', over the whole 'rollout' (the
    paper's code), or not at all ('none')."""
    trace_decay: str = "gamma-lambda"
    """How far back GAE carries an advantage: by gamma x lambda per step ('gamma-lambda', the GAE
    paper and CleanRL) or by lambda alone ('lambda', as the paper code's recursion does: a longer
    credit horizon, 20 steps instead of 10 at 0.95 and 0.95)."""
    critic_target: str = "lambda-return"
    """What the critic regresses on: the lambda-return, advantage plus value ('lambda-return'), or
    the one-step bootstrapped target r + gamma V(s') ('one-step', the paper code)."""
    actor_hidden: tuple[int, ...] = (256, 128)
    """Hidden sizes of each actor's trunk."""
    critic_hidden: tuple[int, ...] = (256, 128, 64)
    """Hidden sizes of the critic."""
    power_scale: str = "log"
    """How the power head's u in [0, 1] maps onto the power range: 'linear' (the paper) or 'log' (geometric)."""
    activation: str = "relu"
    """Hidden-layer nonlinearity of the actors and the critic: 'relu' (cheaper on CPU) or 'tanh' (the paper)."""
    train_cell: str = "random"
    """Episodes trained on: 'random' (the paper: distances and task counts drawn per episode) or
    'evaluation' (the evaluation mode's fixed distances and task counts: a scheduler for the cell it serves)."""
    share_actor: bool = False
    """One actor for every device, reading its local observation and a one-hot device id."""
    max_devices: int = 16
    """Size of the shared actor's device-id input (most devices it can serve)."""
    torch_threads: int = 1
    """Intra-op threads for torch (the networks are small; 1 is fastest on 2 cores)."""
    eval_every_steps: int = 25_000
    """Evaluate the deterministic policy every this many steps (0: only at the end)."""
    eval_episodes: int = 16
    """Held-out episodes per evaluation: the first of the scenario's held-out set (drawn like the
    training episodes; `coinfer.rl.episodes`). The evaluation cell is evaluated beside them."""
    checkpoint_every_steps: int = 100_000
    """Save a checkpoint every this many steps (0: only the final policy)."""

    def steps_per_env(self) -> int:
        return self.rollout_steps // self.num_envs

    def validate(self) -> None:
        if self.num_envs < 1 or self.rollout_steps < self.num_envs or self.rollout_steps % self.num_envs:
            raise InvalidInput(f"rollout_steps ({self.rollout_steps}) must be a positive multiple of num_envs ({self.num_envs})")
        if not 1 <= self.minibatch_size <= self.rollout_steps:
            raise InvalidInput(f"minibatch_size ({self.minibatch_size}) must be in 1..rollout_steps ({self.rollout_steps})")
        if self.total_steps < 1:
            raise InvalidInput(f"total_steps must be >= 1, got {self.total_steps}")
        if self.power_scale not in ("linear", "log"):
            raise InvalidInput(f"power_scale must be 'linear' or 'log', got {self.power_scale!r}")
        if not isinstance(self.train_cell, str) or self.train_cell not in TRAIN_CELL_MODES:
            raise InvalidInput(f"train_cell must be 'random' or 'evaluation', got {self.train_cell!r}")
        if not isinstance(self.activation, str) or self.activation not in ACTIVATIONS:
            raise InvalidInput(f"activation must be one of {sorted(ACTIVATIONS)}, got {self.activation!r}")
        if self.advantage_normalization not in ADVANTAGE_NORMALIZATIONS:
            raise InvalidInput(f"advantage_normalization must be one of {', '.join(ADVANTAGE_NORMALIZATIONS)}, got {self.advantage_normalization!r}")
        if self.trace_decay not in TRACE_DECAYS:
            raise InvalidInput(f"trace_decay must be one of {', '.join(TRACE_DECAYS)}, got {self.trace_decay!r}")
        if self.critic_target not in CRITIC_TARGETS:
            raise InvalidInput(f"critic_target must be one of {', '.join(CRITIC_TARGETS)}, got {self.critic_target!r}")
        if self.max_grad_norm < 0:
            raise InvalidInput(f"max_grad_norm must be >= 0 (0: no clipping), got {self.max_grad_norm}")
        if self.eval_episodes < 2:
            raise InvalidInput(f"eval_episodes must be >= 2 (a mean with an interval), got {self.eval_episodes}")
        check_training_seeds([self.seed], "seed")
        if not (0 < self.gamma <= 1 and 0 <= self.gae_lambda <= 1):
            raise InvalidInput(f"gamma must be in (0, 1] and gae_lambda in [0, 1], got {self.gamma} and {self.gae_lambda}")

    def build_scenario(self) -> Scenario:
        scenario = load_scenario(self.scenario)
        if self.num_devices is not None:
            scenario = scenario.with_num_devices(self.num_devices)
        if self.beta is not None:
            scenario = scenario.with_beta(self.beta)
        return scenario


# ---------------------------------------------------------------------------------------------
# Loss pieces (importable, unit-tested)


def compute_gae(
    rewards: torch.Tensor, values: torch.Tensor, episode_ends: torch.Tensor, last_values: torch.Tensor, gamma: float, gae_lambda: float,
    trace_decay: str = "gamma-lambda", critic_target: str = "lambda-return",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Advantages and critic targets (T, E) by generalised advantage estimation.

    ``episode_ends[t]`` marks an episode that ended with step t (nothing is bootstrapped past it;
    a truncated episode's bootstrap value is already folded into its last reward);
    ``last_values`` (E,) is V of the state after the last step. ``trace_decay`` and
    ``critic_target``: see ``MahppoConfig``.
    """
    T = rewards.shape[0]
    decay = gamma * gae_lambda if trace_decay == "gamma-lambda" else gae_lambda
    advantages = torch.zeros_like(rewards)
    one_step = torch.zeros_like(rewards)
    running = torch.zeros_like(last_values)
    for t in reversed(range(T)):
        next_values = last_values if t == T - 1 else values[t + 1]
        carry = 1.0 - episode_ends[t]
        one_step[t] = rewards[t] + gamma * next_values * carry
        running = one_step[t] - values[t] + decay * carry * running
        advantages[t] = running
    return advantages, (one_step if critic_target == "one-step" else advantages + values)


def clipped_surrogate_loss(new_log_prob: torch.Tensor, old_log_prob: torch.Tensor, advantages: torch.Tensor, clip_coef: float) -> torch.Tensor:
    """PPO's clipped objective with one ratio per (device, component), averaged; to minimise.

    Log-probabilities are (B, N, C); advantages (B,) are shared by every device and component.
    """
    ratio = torch.exp(new_log_prob - old_log_prob)
    adv = advantages[:, None, None]
    unclipped = ratio * adv
    clipped = torch.clamp(ratio, 1.0 - clip_coef, 1.0 + clip_coef) * adv
    return -torch.min(unclipped, clipped).mean()


# ---------------------------------------------------------------------------------------------
# Training


@dataclass
class CurvePoint:
    """One point of the learning curve."""

    step: int
    """Environment steps so far."""
    eval_reward: float
    """Mean reward of the deterministic policy over the held-out episodes of the training loop."""
    eval_low: float
    """Lower end of its 95 % interval."""
    eval_high: float
    """Upper end of its 95 % interval."""
    cell_reward: float
    """Reward of the deterministic policy on the evaluation cell (one episode: the paper's protocol)."""
    train_reward: float
    """Mean reward of the training episodes that ended since the previous point (nan if none)."""
    wall_s: float
    """Seconds since training started."""


@dataclass
class TrainResult:
    """What a training run produced."""

    policy_path: Path | None
    """The saved policy's JSON file (None without an output folder)."""
    steps: int
    """Environment steps taken."""
    wall_s: float
    """Training time, evaluations included."""
    steps_per_s: float
    """Environment steps per second of training."""
    curve: list[CurvePoint] = field(default_factory=list)
    """Learning curve."""
    final_eval_reward: float = float("nan")
    """Held-out mean reward of the final policy (the training loop's episodes)."""
    best_eval_reward: float = float("nan")
    """Best held-out mean reward along the curve (its policy is saved as ``policy-best``)."""
    best_policy_path: Path | None = None
    """The best evaluated policy's JSON file."""
    cpu_s: float = float("nan")
    """CPU seconds this process spent training (its wall time on an idle machine, as training is single-threaded)."""


def train_mahppo(config: MahppoConfig, out_dir: str | Path | None = None, progress: bool = False) -> TrainResult:
    """Train MAHPPO on the batched simulator; write scalars, curve, checkpoints and the policy to ``out_dir``."""
    from coinfer.rl.evaluation import evaluate_policy
    from coinfer.rl.mahppo_policy import MahppoPolicy

    # Setup
    config.validate()
    scenario = config.build_scenario()
    torch.set_num_threads(config.torch_threads)
    torch.manual_seed(config.seed)
    env = BatchedEnv(scenario, num_envs=config.num_envs, mode=TRAIN_CELL_MODES[config.train_cell], seed=config.seed)
    N, P, K, F = env.num_devices, env.num_points, env.num_subchannels, env.num_features
    if config.share_actor and N > config.max_devices:
        raise InvalidInput(f"a shared actor serves at most max_devices={config.max_devices} devices, the scenario has {N}")
    actor = HybridActor(N, F, P, K, config.actor_hidden, config.share_actor, config.max_devices, config.activation)
    critic = Critic(N * F, config.critic_hidden, config.activation)
    # fused: one kernel per step instead of ~10 foreach passes (0.3 vs 1.0 ms a step here, 80 steps per update)
    actor_opt = torch.optim.Adam(actor.parameters(), lr=config.actor_lr, eps=1e-5, fused=True)
    critic_opt = torch.optim.Adam(critic.parameters(), lr=config.critic_lr, eps=1e-5, fused=True)
    low_w, high_w = env.sim.power_low_w, env.sim.power_high_w
    policy = MahppoPolicy(actor, scenario, config, name="mahppo")
    out = Path(out_dir) if out_dir is not None else None
    writer = _ScalarWriter(out)
    held_out = EpisodeSet.of(scenario, config.eval_episodes)

    # Storage
    T, E = config.steps_per_env(), config.num_envs
    obs_buf = torch.zeros((T, E, N * F))
    point_buf = torch.zeros((T, E, N), dtype=torch.long)
    channel_buf = torch.zeros((T, E, N), dtype=torch.long)
    power_buf = torch.zeros((T, E, N))
    logp_buf = torch.zeros((T, E, N, 3))
    value_buf = torch.zeros((T, E))
    reward_buf = torch.zeros((T, E))
    end_buf = torch.zeros((T, E))

    num_updates = math.ceil(config.total_steps / (T * E))
    next_eval = config.eval_every_steps
    next_checkpoint = config.checkpoint_every_steps
    obs = torch.as_tensor(env.reset(), dtype=torch.float32)
    step_count, start, cpu_start = 0, time.perf_counter(), time.process_time()
    curve: list[CurvePoint] = []
    best_reward, best_path = -math.inf, None
    recent_rewards: list[float] = []
    bar = _progress(num_updates * T * E, progress)
    for update in range(num_updates):
        if config.anneal_lr:
            fraction = 1.0 - update / num_updates
            actor_opt.param_groups[0]["lr"] = fraction * config.actor_lr
            critic_opt.param_groups[0]["lr"] = fraction * config.critic_lr

        # Rollout
        actor.eval()
        for t in range(T):
            with torch.no_grad():
                params = actor(obs)
                points, channels, power_u = hybrid_sample(params, deterministic=False)
                log_prob = hybrid_log_prob(params, points, channels, power_u)
                value = critic(obs)
            action = JointAction(points.numpy(), channels.numpy(), powers_from_unit(power_u.numpy().astype(float), low_w, high_w, config.power_scale))
            step = env.step(action)
            reward = torch.as_tensor(step.rewards, dtype=torch.float32)
            if step.truncated.any():  # bootstrap the value of the state the time limit cut off
                cut = torch.as_tensor(step.truncated)
                with torch.no_grad():
                    reward[cut] += config.gamma * critic(torch.as_tensor(step.final_observations[step.truncated], dtype=torch.float32))
            obs_buf[t], point_buf[t], channel_buf[t], power_buf[t] = obs, points, channels, power_u
            logp_buf[t], value_buf[t], reward_buf[t] = log_prob, value, reward
            end_buf[t] = torch.as_tensor(step.terminated | step.truncated, dtype=torch.float32)
            recent_rewards.extend(m.reward for _, m in step.episodes)
            obs = torch.as_tensor(step.observations, dtype=torch.float32)
        step_count += T * E
        bar.update(T * E)

        # GAE
        with torch.no_grad():
            advantages, returns = compute_gae(reward_buf, value_buf, end_buf, critic(obs), config.gamma, config.gae_lambda,
                                              config.trace_decay, config.critic_target)

        # Update: epochs x minibatches
        actor.train()
        b_obs, b_points, b_channels = obs_buf.reshape(T * E, -1), point_buf.reshape(T * E, N), channel_buf.reshape(T * E, N)
        b_power, b_logp = power_buf.reshape(T * E, N), logp_buf.reshape(T * E, N, 3)
        b_adv, b_ret = advantages.reshape(-1), returns.reshape(-1)
        if config.advantage_normalization == "rollout":
            b_adv = (b_adv - b_adv.mean()) / (b_adv.std() + 1e-8)
        stats = _UpdateStats()
        for _ in range(config.update_epochs):
            order = torch.randperm(T * E)
            for begin in range(0, T * E - config.minibatch_size + 1, config.minibatch_size):
                mb = order[begin : begin + config.minibatch_size]
                params = actor(b_obs[mb])
                new_logp = hybrid_log_prob(params, b_points[mb], b_channels[mb], b_power[mb])
                entropy = hybrid_entropy(params).mean()
                mb_adv = b_adv[mb]
                if config.advantage_normalization == "minibatch":
                    mb_adv = (mb_adv - mb_adv.mean()) / (mb_adv.std() + 1e-8)
                # Policy loss
                policy_loss = clipped_surrogate_loss(new_logp, b_logp[mb], mb_adv, config.clip_coef)
                # Value loss
                value_loss = 0.5 * (critic(b_obs[mb]) - b_ret[mb]).pow(2).mean()
                # The actors and the critic share no parameters: one backward pass, two optimisers.
                actor_opt.zero_grad()
                critic_opt.zero_grad()
                (policy_loss - config.ent_coef * entropy + value_loss).backward()
                if config.max_grad_norm:
                    torch.nn.utils.clip_grad_norm_(actor.parameters(), config.max_grad_norm)
                    torch.nn.utils.clip_grad_norm_(critic.parameters(), config.max_grad_norm)
                actor_opt.step()
                critic_opt.step()
                with torch.no_grad():
                    log_ratio = new_logp - b_logp[mb]
                    stats.add(policy_loss, value_loss, entropy, ((log_ratio.exp() - 1) - log_ratio).mean(), ((log_ratio.abs() - math.log1p(config.clip_coef)) > 0).float().mean())

        # Logging
        elapsed = time.perf_counter() - start
        train_reward = float(np.mean(recent_rewards)) if recent_rewards else float("nan")
        writer.train_row(step_count, elapsed, step_count / elapsed, train_reward, stats.means())
        last = update == num_updates - 1
        if (config.eval_every_steps and step_count >= next_eval) or last:
            next_eval += config.eval_every_steps
            actor.eval()
            result = evaluate_policy(policy, scenario, held_out)
            cell = evaluate_policy(policy, scenario, 1)
            interval = result.intervals["reward"] if result.intervals else None
            curve.append(CurvePoint(step_count, result.reward, interval.low if interval else float("nan"),
                                    interval.high if interval else float("nan"), cell.reward, train_reward, elapsed))
            writer.eval_row(step_count, elapsed, result, cell)
            if result.reward > best_reward:
                best_reward = result.reward
                if out is not None:
                    best_path = policy.save(out / "policy-best")
            recent_rewards = []
            bar.set_postfix(eval_reward=f"{result.reward:.3f}", train_reward=f"{train_reward:.3f}")
        if out is not None and config.checkpoint_every_steps and step_count >= next_checkpoint and not last:
            next_checkpoint += config.checkpoint_every_steps
            policy.save(out / "checkpoints" / f"step-{step_count:08d}")
    bar.close()

    wall_s = time.perf_counter() - start
    policy_path = None
    if out is not None:
        policy_path = policy.save(out / "policy", critic=critic)
        from coinfer.rl.plots import plot_learning_curve

        plot_learning_curve({"mahppo": [[(p.step, p.eval_reward) for p in curve]]}, out / "learning_curve.png",
                            title=f"MAHPPO on {scenario.name}: mean of {config.eval_episodes} held-out episodes",
                            bands={"mahppo": [[(p.step, p.eval_low, p.eval_high) for p in curve]]})
    final = curve[-1].eval_reward if curve else float("nan")
    return TrainResult(policy_path, step_count, wall_s, step_count / wall_s, curve, final, best_reward, best_path, time.process_time() - cpu_start)


# ---------------------------------------------------------------------------------------------
# Logging helpers


class _UpdateStats:
    NAMES = ("policy_loss", "value_loss", "entropy", "approx_kl", "clipfrac")

    def __init__(self) -> None:
        self.sums = np.zeros(len(self.NAMES))
        self.count = 0

    def add(self, *values: torch.Tensor) -> None:
        self.sums += np.array([float(v) for v in values])
        self.count += 1

    def means(self) -> dict[str, float]:
        return dict(zip(self.NAMES, self.sums / max(self.count, 1)))


class _ScalarWriter:
    """``train.csv`` (one row per update) and ``eval.csv`` (one row per evaluation)."""

    def __init__(self, out: Path | None) -> None:
        self.out = out
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            self._write("train.csv", ["step", "wall_s", "steps_per_s", "train_reward", *_UpdateStats.NAMES], mode="w")
            self._write("eval.csv", EVAL_COLUMNS, mode="w")

    def _write(self, name: str, row: list, mode: str = "a") -> None:
        if self.out is None:
            return
        with open(self.out / name, mode, newline="") as f:
            csv.writer(f).writerow(row)

    def train_row(self, step: int, wall_s: float, sps: float, train_reward: float, stats: dict[str, float]) -> None:
        self._write("train.csv", [step, f"{wall_s:.2f}", f"{sps:.1f}", f"{train_reward:.5f}", *(f"{v:.6g}" for v in stats.values())])

    def eval_row(self, step: int, wall_s: float, held_out, cell) -> None:
        self._write("eval.csv", eval_csv_row(step, wall_s, held_out, cell))


EVAL_COLUMNS = ["step", "wall_s", "reward", "reward_low", "reward_high", "latency_per_task_s", "energy_per_task_j", "task_latency_mean_s",
                "task_latency_p95_s", "finished_tasks", "cell_reward", "cell_latency_per_task_s", "cell_energy_per_task_j"]
"""``eval.csv``: the held-out means (reward with its 95 % interval) and the evaluation cell's episode."""


def eval_csv_row(step: int, wall_s: float, held_out, cell) -> list:
    """One ``eval.csv`` row from the held-out result and the evaluation cell's (`EvalResult`s)."""
    interval = held_out.intervals["reward"] if held_out.intervals else None
    return [step, f"{wall_s:.2f}", f"{held_out.reward:.5f}", f"{interval.low:.5f}" if interval else "", f"{interval.high:.5f}" if interval else "",
            f"{held_out.latency_per_task_s:.5f}", f"{held_out.energy_per_task_j:.5f}", f"{held_out.task_latency_mean_s:.4f}",
            f"{held_out.task_latency_p95_s:.4f}", f"{held_out.finished_tasks:.1f}", f"{cell.reward:.5f}", f"{cell.latency_per_task_s:.5f}",
            f"{cell.energy_per_task_j:.5f}"]


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def set_postfix(self, **kwargs) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, enabled: bool):
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, unit="step", unit_scale=True, desc="mahppo")


def config_to_dict(config: MahppoConfig) -> dict:
    out = asdict(config)
    out["actor_hidden"], out["critic_hidden"] = list(config.actor_hidden), list(config.critic_hidden)
    return out

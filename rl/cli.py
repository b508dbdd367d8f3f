"""Subcommands of the rl role: ``coinfer rl train|eval|scenarios`` and ``coinfer simulate``.

Handlers import numpy/torch when they run, so ``coinfer --help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

POLICY_HELP = "a policy file or folder (policy.json), or a baseline: local, offload, random, greedy, search"


def register(subparsers: argparse._SubParsersAction) -> None:
    rl = subparsers.add_parser("rl", help="offloading simulator, MAHPPO training and evaluation")
    sub = rl.add_subparsers(dest="rl_command", metavar="RL_COMMAND", required=True)

    p = sub.add_parser("train", help="train a scheduler (MAHPPO or SB3 PPO) on a scenario")
    p.add_argument("--scenario", default="mahppo-paper-resnet18", help="built-in scenario name or TOML path")
    p.add_argument("--algo", choices=("mahppo", "sb3-ppo"), default="mahppo")
    p.add_argument("--steps", type=int, default=500_000, help="environment steps (rounded up to whole rollouts)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="output folder (policy, scalars CSV, learning curve, checkpoints)")
    # Unset, these take the algorithm's configuration defaults, so a run repeats the bench's run of the same seed.
    p.add_argument("--num-envs", type=int, default=None, help="environments stepped together (default: mahppo 128, sb3-ppo 64)")
    p.add_argument("--rollout-steps", type=int, default=None, help="environment steps per update, over all environments (default 4096)")
    p.add_argument("--eval-every", type=int, default=25_000, help="evaluate every this many steps")
    p.add_argument("--torch-threads", type=int, default=1, help="torch intra-op threads (2 pays off only on an idle machine)")
    p.add_argument("--share-actor", action="store_true", help="mahppo: one actor for all devices (device-id input)")
    p.add_argument("--activation", choices=("relu", "tanh"), default=None, help="mahppo: hidden-layer nonlinearity (default relu; tanh is the paper's)")
    p.add_argument("--train-cell", choices=("random", "evaluation"), default=None,
                   help="mahppo: train on random distances and task counts (default, the paper) or on the evaluation cell")
    p.add_argument("--beta", type=float, default=None, help="override the scenario's energy weight")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(handler=_train)

    p = sub.add_parser("eval", help="evaluate policies on held-out episodes (means with 95%% intervals) or on the evaluation cell")
    p.add_argument("--scenario", default="mahppo-paper-resnet18", help="built-in scenario name or TOML path")
    p.add_argument("--policy", action="append", required=True, help=POLICY_HELP + " (repeat for several)")
    p.add_argument("--cell", choices=("random", "evaluation"), default="random",
                   help="episodes drawn like the training episodes (default) or the scenario's evaluation cell (the paper's protocol)")
    p.add_argument("--episodes", type=int, default=64, help="held-out episodes (default 64; an interval needs 2 or more)")
    p.add_argument("--first-episode", type=int, default=0, help="index of the first held-out episode (default 0)")
    p.add_argument("--episode-set", default=None, help="a JSON episode set (as the rl bench writes) instead of --cell/--episodes")
    p.add_argument("--sampled", action="store_true", help="sample the actions (each episode from a generator of its own) instead of modes and means")
    p.add_argument("--batch", type=int, default=32, help="episodes simulated together (the figures do not depend on it)")
    p.add_argument("--seed", type=int, default=0, help="seed of the baselines that draw (search's random starts)")
    p.add_argument("--out", default="eval.json", help="JSON report, one entry per policy name")
    p.set_defaults(handler=_eval)

    p = sub.add_parser("scenarios", help="list the built-in scenarios")
    p.set_defaults(handler=_scenarios)

    p = subparsers.add_parser("simulate", help="narrate one evaluation episode of a scenario under a policy")
    p.add_argument("--scenario", default="mahppo-paper-resnet18", help="built-in scenario name or TOML path")
    p.add_argument("--policy", default="greedy", help=POLICY_HELP)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-slots", type=int, default=None, help="stop after this many slots")
    p.set_defaults(handler=_simulate)


_MAHPPO_OPTIONS = ("activation", "train_cell")
"""Optional MahppoConfig fields set from flags of the same name (None: unset)."""


def _train(args: argparse.Namespace) -> int:
    if args.algo == "mahppo":
        from coinfer.rl.mahppo import MahppoConfig, train_mahppo

        config = MahppoConfig(
            scenario=args.scenario, total_steps=args.steps, seed=args.seed,
            eval_every_steps=args.eval_every, share_actor=args.share_actor, beta=args.beta, torch_threads=args.torch_threads,
        )
        for name in _MAHPPO_OPTIONS:  # unset: the configuration's default
            if getattr(args, name) is not None:
                setattr(config, name, getattr(args, name))
        if args.num_envs is not None:
            config.num_envs = args.num_envs
        if args.rollout_steps is not None:
            config.rollout_steps, config.minibatch_size = args.rollout_steps, min(config.minibatch_size, args.rollout_steps)
        result = train_mahppo(config, args.out, progress=not args.no_progress)
    else:
        from coinfer.core.errors import InvalidInput
        from coinfer.rl.sb3_ppo import Sb3PpoConfig, train_sb3_ppo

        if args.share_actor or args.beta is not None or any(getattr(args, name) is not None for name in _MAHPPO_OPTIONS):
            raise InvalidInput("--share-actor, --beta, --activation and --train-cell apply to --algo mahppo only")
        config = Sb3PpoConfig(scenario=args.scenario, total_steps=args.steps, seed=args.seed, eval_every_steps=args.eval_every, torch_threads=args.torch_threads)
        if args.num_envs is not None or args.rollout_steps is not None:
            rollout_steps = args.rollout_steps if args.rollout_steps is not None else config.num_envs * config.n_steps
            config.num_envs = args.num_envs if args.num_envs is not None else config.num_envs
            config.n_steps, config.batch_size = max(rollout_steps // config.num_envs, 1), min(config.batch_size, rollout_steps)
        result = train_sb3_ppo(config, args.out, progress=not args.no_progress)
    print(
        f"trained {args.algo} for {result.steps} steps in {result.wall_s:.1f} s ({result.steps_per_s:.0f} steps/s); "
        f"final held-out mean reward {result.final_eval_reward:.4f}{_band(result)}, evaluation cell {_cell(result)}; policy {result.policy_path}"
    )
    return 0


def _band(result) -> str:
    last = result.curve[-1] if getattr(result, "curve", None) else None
    return f" [{last.eval_low:.4f}, {last.eval_high:.4f}]" if last is not None else ""


def _cell(result) -> str:
    last = result.curve[-1] if getattr(result, "curve", None) else None
    return f"{last.cell_reward:.4f}" if last is not None else "-"


def _eval(args: argparse.Namespace) -> int:
    from coinfer.core.errors import InvalidInput
    from coinfer.rl.episodes import EpisodeSet
    from coinfer.rl.evaluation import evaluate_policy
    from coinfer.rl.policy import make_policy
    from coinfer.rl.scenario import load_scenario

    scenario = load_scenario(args.scenario)
    if args.episode_set is not None:
        try:
            data = json.loads(Path(args.episode_set).read_text())
        except (OSError, ValueError) as exc:
            raise InvalidInput(f"--episode-set {args.episode_set}: not a readable JSON file ({exc})") from exc
        episodes = EpisodeSet.from_dict(data, args.episode_set)
    else:
        episodes = EpisodeSet.of(scenario, args.episodes, cell=args.cell, first=args.first_episode)
    episodes.check(scenario)
    if len(episodes) < 2 and args.cell == "random" and args.episode_set is None:
        raise InvalidInput(f"--episodes: a 95% interval over held-out episodes needs at least 2 episodes, got {len(episodes)}")
    print(f"evaluating on {episodes.describe()}" + (", sampled actions" if args.sampled else ""))
    report: dict[str, dict] = {}
    for ref in args.policy:
        policy = make_policy(ref, scenario, seed=args.seed)
        result = evaluate_policy(policy, scenario, episodes, deterministic=not args.sampled, batch_size=args.batch)
        key, i = policy.name, 2
        while key in report:
            key, i = f"{policy.name}#{i}", i + 1
        report[key] = {"source": ref, **result.summary()}
        print(f"{key:12s} " + "  ".join(_figure(result, metric, label) for metric, label in _PRINTED) + f"  finished {result.finished_tasks:.0f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}" + ("" if len(episodes) > 1 else " (one episode: no interval)"))
    return 0


_PRINTED = (("reward", "reward"), ("latency_per_task_s", "s/task"), ("energy_per_task_j", "J/task"),
            ("task_latency_mean_s", "task latency mean s"), ("task_latency_p95_s", "p95 s"))


def _figure(result, metric: str, label: str) -> str:
    value = getattr(result, metric)
    interval = result.intervals.get(metric) if result.intervals else None
    return f"{label} {value:.4f}" + (f" [{interval.low:.4f}, {interval.high:.4f}]" if interval else "")


def _scenarios(args: argparse.Namespace) -> int:
    from coinfer.rl.scenario import builtin_scenario_names, load_scenario

    for name in builtin_scenario_names():
        s = load_scenario(name)
        print(f"{name:26s} {s.description}")
    return 0


def _simulate(args: argparse.Namespace) -> int:
    from coinfer.rl.narrate import narrate_episode
    from coinfer.rl.policy import make_policy
    from coinfer.rl.scenario import load_scenario

    scenario = load_scenario(args.scenario)
    narrate_episode(scenario, make_policy(args.policy, scenario, seed=args.seed), seed=args.seed, max_slots=args.max_slots)
    return 0

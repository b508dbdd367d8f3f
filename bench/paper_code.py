"""The paper code's own agent, several seeds of it, under the bench's protocol.

Issue 19 measured the MAHPPO authors' code (Hao840/MAHPPO) once: one training run, one
deterministic episode of the paper's evaluation cell (greedy -0.842). One episode of one run is
the kind of figure the bench's protocol exists to avoid, so this trains the authors' code for
several seeds and puts each final agent through what MAHPPO goes through: the paper cell (greedy,
and 20 sampled episodes) and the held-out episodes, paired with MAHPPO's runs of the same
protocol when the rl bench's folder has them.

Nothing of the authors' code is in coinfer: the user brings a checkout (``--code``); each seed runs
its ``train_agent.py`` unchanged, in a child process on the CPU (``.cuda()`` made a no-op, one
torch thread, numpy / torch / random seeded), which then also evaluates the final agent on the
authors' own simulator and writes the actors' weights as safetensors. The weights are read back
into :class:`PaperCodeActor`, our network with the authors' parameter names, and act on our
simulator through :class:`PaperCodePolicy` (their state scales the distance as (d - dmin) /
(dmax - dmin), ours as d / dmax).

    python -m coinfer.bench.paper_code --code ~/src/MAHPPO --seeds 0,1 --out runs/bench/paper-code [--rl-out runs/bench/rl]

About 45 to 55 minutes per seed on one core of the development machine (the paper code runs 150 to
190 environment steps/s on one thread).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from coinfer.core.errors import InvalidInput, NotFound
from coinfer.rl.actions import JointAction, sample_categorical
from coinfer.rl.scenario import Scenario, load_scenario

SCENARIO = "mahppo-paper-resnet18"
"""The authors' setting; their ``train_agent.py`` defaults are this scenario."""
STEPS = 500_000
"""The authors' ``--max_global_step`` default."""
SAMPLED_EPISODES = 20
"""Sampled-action episodes of the cell per agent (issue 19's measurement of their agent)."""
ACTOR_FILE = "actors.safetensors"
CELL_FILE = "own_simulator.json"


class PaperCodeActor(nn.Module):
    """One device's actor as the paper code builds it (a trunk of 256 and 128 ReLU units; each of
    the point, channel, power-mean and power-spread heads one hidden layer of 64), with its
    parameter names, so its saved weights load as they are."""

    def __init__(self, num_states: int, num_points: int, num_channels: int, pmax_w: float) -> None:
        super().__init__()
        self.base = nn.Sequential(nn.Linear(num_states, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU())

        def head(out: int, last: nn.Module) -> nn.Sequential:
            return nn.Sequential(nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, out), last)

        self.point_header = head(num_points, nn.Softmax(dim=-1))
        self.channel_header = head(num_channels, nn.Softmax(dim=-1))
        self.power_mu_header = head(1, nn.Sigmoid())
        self.power_sigma_header = head(1, nn.Softplus())
        self.pmax_w = pmax_w

    def forward(self, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Point and channel probabilities, the power's mean and spread in watts (a Gaussian the
        paper code samples and clamps to [1e-10, pmax])."""
        code = self.base(state)
        mean_w = self.power_mu_header(code) * (self.pmax_w - 1e-10) + 1e-10
        return self.point_header(code), self.channel_header(code), mean_w[..., 0], self.power_sigma_header(code)[..., 0]


class PaperCodePolicy:
    """The paper code's trained actors as a `coinfer.rl.policy.Policy` on our simulator.

    Rows are acted on one at a time in float64 with probabilities rounded to float32, as
    `MahppoPolicy` does, so an episode's figures do not depend on its batch; greedy is the argmax
    point and channel and the mean power (issue 19's measurement), sampled draws each from the
    episode's generator and clamps the power as the paper code does.
    """

    def __init__(self, actors: Sequence[PaperCodeActor], scenario: Scenario, name: str = "paper-code") -> None:
        if len(actors) != scenario.num_devices:
            raise InvalidInput(f"{len(actors)} actors for the {scenario.num_devices} devices of {scenario.name}")
        self.actors, self.name = [a.double().eval() for a in actors], name
        self.num_devices = scenario.num_devices
        self.state_dim = actors[0].base[0].in_features
        self.num_features = self.state_dim // self.num_devices
        low = np.array([d.distance_range_m[0] for d in scenario.devices])
        high = np.array([d.distance_range_m[1] for d in scenario.devices])
        self._distance_scale, self._distance_shift = high / (high - low), low / (high - low)
        self.power_low_w = np.array([d.power_range_w[0] for d in scenario.devices])
        self.power_high_w = np.array([d.power_range_w[1] for d in scenario.devices])
        self._rng = np.random.default_rng()

    @classmethod
    def load(cls, path: str | Path, scenario: Scenario | str = SCENARIO, name: str = "paper-code") -> "PaperCodePolicy":
        """Actors from ``actors.safetensors`` (keys ``actor<i>.<parameter>``) written by this module's child."""
        from safetensors.torch import load_file

        scenario = load_scenario(scenario)
        if not Path(path).is_file():
            raise NotFound(f"{path}: no paper-code actors (train them with `python -m coinfer.bench.paper_code --code DIR`)")
        tensors = load_file(str(path))
        actors = []
        for i in range(scenario.num_devices):
            state = {k.split(".", 1)[1]: v for k, v in tensors.items() if k.startswith(f"actor{i}.")}
            if not state:
                raise InvalidInput(f"{path}: no weights for actor {i} of {scenario.num_devices}")
            actor = PaperCodeActor(state["base.0.weight"].shape[1], state["point_header.2.weight"].shape[0],
                                   state["channel_header.2.weight"].shape[0], float(scenario.devices[i].power_range_w[1]))
            actor.load_state_dict(state)
            actors.append(actor)
        return cls(actors, scenario, name)

    def reset(self) -> None:
        pass

    def paper_state(self, row: np.ndarray) -> np.ndarray:
        """Our state row as the paper code's: the same four features per device, but the distance
        relative to the device's range rather than to its far end."""
        s = np.array(row, dtype=np.float64).reshape(self.num_devices, self.num_features)
        s[:, 3] = s[:, 3] * self._distance_scale - self._distance_shift
        return s.reshape(-1)

    def act(self, observation: np.ndarray, deterministic: bool = True, rngs: Sequence[np.random.Generator] | None = None) -> JointAction:
        obs = np.asarray(observation, dtype=np.float64)
        if obs.shape[-1] != self.state_dim:
            raise InvalidInput(f"policy {self.name!r} expects global states of {self.state_dim} values, got {obs.shape[-1]}")
        rows = obs.reshape(-1, self.state_dim)
        E, N = rows.shape[0], self.num_devices
        if rngs is not None and len(rngs) != E:
            raise InvalidInput(f"policy {self.name!r}: {len(rngs)} generators for {E} states")
        points, channels, powers = np.zeros((E, N), np.int64), np.zeros((E, N), np.int64), np.zeros((E, N))
        with torch.no_grad():
            for e, row in enumerate(rows):
                state = torch.as_tensor(self.paper_state(row))
                rng = self._rng if rngs is None else rngs[e]
                for n, actor in enumerate(self.actors):
                    point_p, channel_p, mean_w, spread_w = (t.float().numpy().astype(np.float64) for t in actor(state))
                    if deterministic:
                        points[e, n], channels[e, n], power = point_p.argmax(), channel_p.argmax(), float(mean_w)
                    else:
                        points[e, n] = sample_categorical(np.log(np.maximum(point_p, 1e-300)), rng)
                        channels[e, n] = sample_categorical(np.log(np.maximum(channel_p, 1e-300)), rng)
                        power = float(mean_w) + float(spread_w) * rng.standard_normal()
                    powers[e, n] = min(max(power, self.power_low_w[n]), self.power_high_w[n])
        action = JointAction(points, channels, powers)
        return action.env(0) if obs.ndim == 1 else action


# ---------------------------------------------------------------------------------------------
# Training the paper code (child process)


def _child(code: Path, seed: int, run_dir: Path, steps: int) -> None:
    """Train the checkout's ``train_agent.py`` unchanged in ``run_dir``, then write the final agent's
    weights and its figures on the paper code's own simulator (greedy; 20 sampled episodes)."""
    import random
    import runpy

    from safetensors.torch import save_file

    torch.set_num_threads(1)
    torch.Tensor.cuda = lambda self, *a, **k: self  # the paper code moves everything to a GPU; run it on the CPU
    nn.Module.cuda = lambda self, *a, **k: self
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    os.chdir(run_dir)
    sys.path.insert(0, str(code))
    sys.argv = ["train_agent.py", "--max_global_step", str(steps)]
    started = time.perf_counter()
    trained = runpy.run_path(str(code / "train_agent.py"), run_name="__main__")
    train_s = time.perf_counter() - started
    agent, env = trained["agent"], trained["test_env"]

    def episode(greedy: bool) -> dict:
        state, done, reward, time_s, energy_j, finished = env.reset(), False, 0.0, 0.0, 0.0, 0
        while not done:
            if greedy:
                with torch.no_grad():
                    actions = []
                    for actor in agent.actors:
                        point_p, channel_p, (mean_w, _) = actor(torch.tensor(state, dtype=torch.float32))
                        actions.append((int(point_p.argmax()), int(channel_p.argmax()), float(mean_w.clamp(1e-10, agent.pmax))))
            else:
                actions = agent.select_action(state, test=True)  # the paper code's test: sampled actions
            state, r, done, info = env.step(actions)
            reward, time_s = reward + r, time_s + info["total_time_used"]
            energy_j, finished = energy_j + info["total_energy_used"], finished + info["total_finished"]
        return {"reward": float(reward), "latency_per_task_s": time_s / finished, "energy_per_task_j": float(energy_j / finished)}

    sampled = [episode(False) for _ in range(SAMPLED_EPISODES)]
    figures = {"seed": seed, "steps": steps, "train_s": train_s, "steps_per_s": steps / train_s, "greedy": episode(True),
               "sampled": {k: float(np.mean([e[k] for e in sampled])) for k in sampled[0]},
               "sampled_reward_std": float(np.std([e["reward"] for e in sampled]))}
    tensors = {f"actor{i}.{k}": v.detach().contiguous() for i, a in enumerate(agent.actors) for k, v in a.state_dict().items()}
    save_file(tensors, str(run_dir / (ACTOR_FILE + ".tmp")))
    os.replace(run_dir / (ACTOR_FILE + ".tmp"), run_dir / ACTOR_FILE)  # written whole or not at all
    (run_dir / (CELL_FILE + ".tmp")).write_text(json.dumps(figures, indent=1))
    os.replace(run_dir / (CELL_FILE + ".tmp"), run_dir / CELL_FILE)


def train_seed(code: Path, seed: int, out_dir: Path, steps: int = STEPS) -> Path:
    """The seed's run folder, training the paper code there first unless it holds a finished run."""
    run_dir = out_dir / f"seed{seed}"
    if (run_dir / ACTOR_FILE).is_file() and (run_dir / CELL_FILE).is_file():
        return run_dir
    if not (code / "train_agent.py").is_file() or not (code / "agent" / "hppo.py").is_file():
        raise NotFound(f"{code}: not a checkout of the MAHPPO paper code (no train_agent.py and agent/hppo.py)")
    print(f"[paper-code] seed {seed}: training {steps} steps in {run_dir} (log: {run_dir}/result/*/output.log)", flush=True)
    cmd = [sys.executable, "-m", "coinfer.bench.paper_code", "--child", str(code.resolve()), str(seed), str(run_dir.resolve()), str(steps)]
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / "child.log", "w") as log:  # the paper code logs every update; its output.log keeps the same
        done = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        tail = (run_dir / "child.log").read_text().strip().splitlines()[-3:]
        raise RuntimeError(f"the paper code's run of seed {seed} failed (exit {done.returncode}; {run_dir / 'child.log'}): " + " | ".join(tail))
    return run_dir


# ---------------------------------------------------------------------------------------------
# Evaluation under the bench's protocol


def evaluate(out_dir: Path, seeds: Sequence[int], rl_out: Path | None = None) -> dict:
    """Each seed's agent on the paper cell (greedy, sampled) and the held-out episodes, on our
    simulator; pooled over seeds; paired with MAHPPO's bench runs where ``rl_out`` has them."""
    from coinfer.bench import rl as rl_bench
    from coinfer.rl.evaluation import evaluate_policy
    from coinfer.rl.verdict import PolicyRecord, beats

    scenario = load_scenario(SCENARIO)
    sets = rl_bench.episode_sets(scenario, rl_bench.PROTOCOL)
    per_seed, held, cells, sampled_cells = [], [], [], []
    for seed in seeds:
        run_dir = out_dir / f"seed{seed}"
        policy = PaperCodePolicy.load(run_dir / ACTOR_FILE, scenario)
        own = json.loads((run_dir / CELL_FILE).read_text())
        cell = evaluate_policy(policy, scenario, sets.cell)
        sampled = evaluate_policy(policy, scenario, sets.sampled_cell, deterministic=False)
        held_out = evaluate_policy(policy, scenario, sets.held_out)
        held.append(held_out)
        cells.append(cell)
        sampled_cells.append(sampled)
        row = {"seed": seed, "own_simulator": own, "cell": cell.summary(), "sampled_cell": sampled.summary(), "held_out": held_out.summary()}
        per_seed.append(row)
        print(f"  paper code seed {seed}: cell greedy {cell.reward:.3f} ({cell.latency_per_task_s:.4f} s, {cell.energy_per_task_j:.4f} J;"
              f" its own simulator {own['greedy']['reward']:.3f}), sampled {sampled.reward:.3f} (own {own['sampled']['reward']:.3f}),"
              f" held-out {held_out.reward:.3f} ({held_out.latency_per_task_s:.4f} s, {held_out.energy_per_task_j:.4f} J)", flush=True)
    record = PolicyRecord("paper-code", tuple(held), tuple(seeds))
    report: dict = {"seeds": list(seeds), "per_seed": per_seed, "anchor": rl_bench.AUTHORS_AGENT,
                    "cell_greedy": PolicyRecord("paper-code", tuple(cells), tuple(seeds)).spread(),
                    "sampled_cell": PolicyRecord("paper-code", tuple(sampled_cells), tuple(seeds)).spread()}
    if len(held[0].per_episode) >= 2:
        iv = record.interval()
        report["held_out"] = {"mean": iv.mean, "ci95": [iv.low, iv.high]}
    print(f"[paper-code] {len(seeds)} seed(s): cell greedy {report['cell_greedy']['mean']:.3f} ± {report['cell_greedy']['std']:.3f}"
          f" (the single run issue 19 measured: {rl_bench.AUTHORS_AGENT['greedy']['reward']}); sampled {report['sampled_cell']['mean']:.3f}"
          f" ({rl_bench.AUTHORS_AGENT['sampled']['reward']})" + (f"; held-out {report['held_out']['mean']:.3f} [{report['held_out']['ci95'][0]:.3f}, {report['held_out']['ci95'][1]:.3f}]"
             if "held_out" in report else ""))
    if rl_out is not None:
        ours = [s for s in rl_bench.SEEDS if (rl_bench._run_dir(rl_out, SCENARIO, "mahppo", s, rl_bench.FULL.train_steps) / "result.json").is_file()]
        if ours:
            records = rl_bench._trained_records("mahppo", SCENARIO, tuple(ours), rl_bench.FULL, rl_out, rl_bench.PROTOCOL)[0]
            d = beats(records["held_out"], record)
            cell = records["cell"].spread()
            report["mahppo"] = {"seeds": ours, "held_out_minus_paper_code": d.to_dict(), "cell_greedy": cell,
                                "sampled_cell": records["sampled_cell"].spread()}
            print(f"[paper-code] MAHPPO (seeds {ours}) minus the paper code, held-out reward paired per episode: "
                  f"{d.mean:+.3f} [{d.low:+.3f}, {d.high:+.3f}]; MAHPPO cell greedy {cell['mean']:.3f} ± {cell['std']:.3f}")
        else:
            print(f"[paper-code] {rl_out} has no MAHPPO runs of {SCENARIO} at the defaults: no paired comparison")
    return report


def main(argv: list[str] | None = None) -> dict | None:
    parser = argparse.ArgumentParser(prog="python -m coinfer.bench.paper_code", description=__doc__.split("\n\n")[0])
    parser.add_argument("--code", type=Path, help="a checkout of Hao840/MAHPPO (train_agent.py, agent/, env/)")
    parser.add_argument("--seeds", default="0,1", help="training seeds of the paper code (default 0,1)")
    parser.add_argument("--steps", type=int, default=STEPS, help=f"environment steps per run (default {STEPS}, the paper code's)")
    parser.add_argument("--out", type=Path, default=Path("runs/bench/paper-code"), help="run folders and paper_code.json")
    parser.add_argument("--rl-out", type=Path, default=None, help="the rl bench's folder, to pair with its MAHPPO runs")
    parser.add_argument("--jobs", type=int, default=1, help="seeds trained at once (one core each)")
    parser.add_argument("--child", nargs=4, metavar=("CODE", "SEED", "DIR", "STEPS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        code, seed, run_dir, steps = args.child
        _child(Path(code), int(seed), Path(run_dir), int(steps))
        return None
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        raise InvalidInput(f"--seeds must be integers separated by commas, got {args.seeds!r}") from None
    if not seeds:
        raise InvalidInput("--seeds names no seed")
    missing = [s for s in seeds if not (args.out / f"seed{s}" / ACTOR_FILE).is_file()]
    if missing:
        if args.code is None:
            raise InvalidInput(f"seeds {missing} have no trained run in {args.out}: give --code, a checkout of Hao840/MAHPPO")
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max(1, args.jobs)) as pool:
            list(pool.map(lambda s: train_seed(args.code, s, args.out, args.steps), missing))
    report = evaluate(args.out, seeds, args.rl_out)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "paper_code.json").write_text(json.dumps(report, indent=1))
    print(f"[paper-code] wrote {args.out / 'paper_code.json'}")
    return report


if __name__ == "__main__":
    main()

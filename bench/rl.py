"""``make bench`` for the rl role: every figure of the issue's targets beside its target and anchor.

Sections, each written to ``out_dir`` as JSON (``bench.json``) and PNG plots:

1. conformance - the paper simulator's reference figures (ANCHORS.md) from fixed policies;
2. speed - one environment alone against the batched form (target >= 10x per step); MAHPPO
   500k steps on ``dense`` (10 devices, the slowest to train) alone with 2 threads (target <= 15
   min); MAHPPO's default configuration on ``mahppo-paper-resnet18`` alone with 1 thread (target
   >= 725 steps/s, 5x the paper code's 145);
3. schedulers - the verdict protocol (`PROTOCOL`, fixed before any result was seen): every
   scheduler on the same held-out episodes of each scenario, means with 95 % intervals, "A beats
   B" by the paired bootstrap, MAHPPO and sb3-ppo pooled over their training seeds, and the
   paper's one-episode protocol on a row of its own;
4. paper protocol - MAHPPO on the paper's evaluation cell against the paper code's agent (greedy
   and sampled actions), mean over training seeds;
5. ablations - the paper code's training choices one at a time, each against MAHPPO's
   defaults under the held-out protocol;
6. sweeps - latency and energy per task against ``local`` over 1..10 devices and over beta.

Every training run and every evaluation is cached under ``out_dir`` (``runs/<scenario>/<run>``,
named by a hash of the run's configuration, and ``evals/<scenario>/<episode set>/<policy>.json``),
so an interrupted bench resumes and a run trained elsewhere (or under a configuration that later
became the default) is reused. The training runs and the baselines' evaluations are planned first
and run by ``jobs`` single-threaded worker processes (default: one per core), longest first.
``quick`` shrinks every budget to a smoke run (minutes); the figures then say nothing about quality.

    python -m coinfer.bench.rl --out runs/bench/rl [--quick] [--jobs J] [--seeds 0,1,2,3,4] [--scenarios a,b]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

PAPER_FIGURES = {  # ANCHORS.md, MAHPPO: fixed policies in the paper simulator's evaluation mode (ResNet18)
    "all local": (5, 0.1, 0.0475, 0.0984),
    "point 3, 0.1 W, UE i on sub-channel i mod 2": (3, 0.1, 0.0700, 0.0771),
    "point 1, 0.1 W, UE i on sub-channel i mod 2": (1, 0.1, 0.1775, 0.0247),
}
PAPER_STEPS_PER_S = 145.0
"""The paper code (Hao840/MAHPPO, its defaults), one CPU thread, on this project's machine (issue 19)."""
AUTHORS_AGENT = {"greedy": {"reward": -0.842, "latency_per_task_s": 0.0300, "energy_per_task_j": 0.0386},
                 "sampled": {"reward": -1.065, "latency_per_task_s": 0.0320, "energy_per_task_j": 0.0414}}
"""The paper code's agent after 500k steps, on the paper's evaluation cell (issue 19): greedy actions
(argmax point and channel, mean power), and the mean of 20 episodes of sampled actions."""
MOONSHOT_REWARD = -0.75
THROUGHPUT_TARGET = 5 * PAPER_STEPS_PER_S
PAPER_LATENCY_CLAIM, PAPER_ENERGY_CLAIM = 0.56, 0.72
BASELINES = ("local", "offload", "random", "greedy", "search")
ORACLE = "search-oracle"
ALGOS = ("mahppo", "sb3-ppo")
SEEDS = (0, 1, 2, 3, 4)
PAPER_SCENARIO = "mahppo-paper-resnet18"


@dataclass(frozen=True)
class Protocol:
    """The verdict protocol, fixed before any result was seen (docs/rl.md, "How schedulers are compared")."""

    scenarios: tuple[str, ...] = (PAPER_SCENARIO, "edge-server", "dense", "heterogeneous")
    """Scenarios of the scheduler comparison."""
    fewer_seeds: tuple[tuple[str, int], ...] = (("dense", 3), ("heterogeneous", 3))
    """Scenarios that take only the first few of the training seeds (5 elsewhere)."""
    held_out_episodes: int = 64
    """Held-out episodes per scenario: the first of the held-out seeds (1 000 000 on), drawn like the training episodes."""
    tuning_episodes: int = 16
    """Tuning episodes ``search`` is tuned on (seeds 2 000 000 on), drawn like the training episodes."""
    sampled_cell_episodes: int = 20
    """Evaluation-cell episodes with sampled actions (the paper code's agent was measured so)."""
    ablation_seeds: int = 3
    """Training seeds of each ablation (the first of the seeds)."""
    metric: str = "reward"
    """The figure verdicts compare (higher is better)."""

    def seeds_for(self, scenario: str, seeds: tuple[int, ...]) -> tuple[int, ...]:
        return seeds[: dict(self.fewer_seeds).get(scenario, len(seeds))]


PROTOCOL = Protocol()
QUICK_PROTOCOL = Protocol(held_out_episodes=6, tuning_episodes=2, sampled_cell_episodes=3, ablation_seeds=1)

PREVIOUS_DEFAULTS = {"num_envs": 128, "rollout_steps": 4096, "anneal_lr": True, "max_grad_norm": 0.5}
"""MAHPPO's defaults before issue 19: 4096-step rollouts from 128 environments, the learning rate
annealed to 0, gradients clipped at norm 0.5."""
ABLATIONS: dict[str, dict] = {
    "defaults": {},
    "previous defaults (4096-step rollouts from 128 envs, lr annealed, clip 0.5)": PREVIOUS_DEFAULTS,
    "cadence: 4096-step rollouts from 128 environments": {"num_envs": 128, "rollout_steps": 4096},
    "gradient clipping at norm 0.5": {"max_grad_norm": 0.5},
    "learning rate annealed to 0": {"anneal_lr": True},
    "advantages normalised over the rollout (the paper code)": {"advantage_normalization": "rollout"},
    "linear power head (the paper code)": {"power_scale": "linear"},
    "32 environments (issue 19's lead)": {"num_envs": 32},
    "advantage trace decayed by lambda alone (the paper code)": {"trace_decay": "lambda"},
    "critic on one-step targets (the paper code)": {"critic_target": "one-step"},
}
"""MahppoConfig overrides of each ablation on ``mahppo-paper-resnet18``, one choice (or, for the
previous defaults, one configuration) changed from the defaults."""


def seeds_per_algo(mahppo: tuple[int, ...] = SEEDS, sb3: tuple[int, ...] | None = None) -> dict[str, tuple[int, ...]]:
    """Training seeds of each algorithm; sb3-ppo's default to MAHPPO's."""
    return {"mahppo": mahppo, "sb3-ppo": mahppo if sb3 is None else sb3}


def _default_jobs(jobs: int | None) -> int:
    return jobs if jobs is not None else (os.cpu_count() or 1)


@dataclass(frozen=True)
class Budget:
    """How much each part of the bench trains."""

    train_steps: int
    """Steps per MAHPPO / sb3-ppo run in the scheduler comparison and the ablations."""
    sweep_steps: int
    """Steps per MAHPPO run in the sweeps."""
    eval_every_steps: int
    """Learning-curve resolution."""
    speed_steps: int
    """Environment steps timed in the simulator-speed section."""
    timing_steps: int
    """Steps of the MAHPPO run timed alone on 2 cores (the training-time target)."""
    throughput_steps: int
    """Steps of the MAHPPO run timed alone on 1 core (the throughput target)."""
    sweep_devices: tuple[int, ...]
    """Device counts of the device sweep."""
    sweep_betas: tuple[float, ...]
    """Energy weights of the beta sweep."""
    search_options: tuple[tuple[str, int], ...] = ()
    """Options of the ``search`` baselines (power levels, starts, rounds); empty: their defaults."""


FULL = Budget(500_000, 150_000, 25_000, 2_000, 500_000, 100_000, tuple(range(1, 11)), (0.1, 0.3, 1.0, 3.0, 10.0))
QUICK = Budget(4_096, 2_048, 2_048, 200, 4_096, 2_048, (1, 3, 5), (0.3, 3.0), (("power_levels", 4), ("starts", 2), ("max_rounds", 2)))
TIMING_SCENARIO = "dense"
"""The scenario of the timed training run: the most devices, so the slowest to train."""
TIMING_THREADS = 2
"""Torch threads of the timed run: the target is stated for 2 cores."""


class Targets:
    """Figures beside their targets and anchors: printed as they come, kept as rows for the report."""

    def __init__(self) -> None:
        self.rows: list[dict] = []

    def add(self, name: str, ours: str, target: str, anchor: str, met: bool | None = None) -> None:
        mark = "" if met is None else ("  [met]" if met else "  [NOT met]")
        print(f"  {name:<58s} ours {ours:<24s} target {target:<22s} anchor {anchor}{mark}", flush=True)
        self.rows.append({"name": name, "ours": ours, "target": target, "anchor": anchor, "met": met})


# ---------------------------------------------------------------------------------------------
# 1. Conformance


def bench_conformance(targets: Targets) -> dict:
    from coinfer.rl.scenario import load_scenario
    from coinfer.rl.sim.core import Simulator

    print("[conformance] mahppo-paper-resnet18, evaluation mode (5 UEs at 50 m, 200 tasks each)")
    scenario = load_scenario(PAPER_SCENARIO)
    N, K = scenario.num_devices, scenario.num_subchannels
    rows = {}
    for name, (point, power_w, latency_s, energy_j) in PAPER_FIGURES.items():
        sim = Simulator(scenario, num_envs=1, mode="eval")
        while True:
            out = sim.step(np.full((1, N), point), (np.arange(N) % K)[None], np.full((1, N), power_w))
            if out.terminated[0] or out.truncated[0]:
                break
        m = sim.episode_metrics(0)
        err_t, err_e = m.latency_per_task_s / latency_s - 1, m.energy_per_task_j / energy_j - 1
        rows[name] = {"latency_per_task_s": m.latency_per_task_s, "energy_per_task_j": m.energy_per_task_j, "paper_latency_s": latency_s,
                      "paper_energy_j": energy_j, "latency_error": err_t, "energy_error": err_e, "pass": abs(err_t) <= 0.01 and abs(err_e) <= 0.01}
        targets.add(f"{name}: s/task", f"{m.latency_per_task_s:.4f} ({err_t:+.2%})", "within 1%", f"{latency_s:.4f} (paper sim)", abs(err_t) <= 0.01)
        targets.add(f"{name}: J/task", f"{m.energy_per_task_j:.4f} ({err_e:+.2%})", "within 1%", f"{energy_j:.4f} (paper sim)", abs(err_e) <= 0.01)
    return rows


# ---------------------------------------------------------------------------------------------
# 2. Speed


def bench_speed(budget: Budget, targets: Targets, num_envs: int = 256) -> dict:
    from coinfer.rl.scenario import load_scenario
    from coinfer.rl.sim.core import Simulator

    print("[speed] simulator steps per second, random actions on mahppo-paper-resnet18 (shared 2-core machine: noisy)")
    scenario = load_scenario(PAPER_SCENARIO)

    def steps_per_s(E: int, steps: int) -> float:
        sim = Simulator(scenario, num_envs=E, mode="train", seed=0)
        rng = np.random.default_rng(0)
        N, P, K = scenario.num_devices, scenario.num_points, scenario.num_subchannels
        start = time.perf_counter()
        for _ in range(max(steps // E, 3)):
            out = sim.step(rng.integers(0, P, (E, N)), rng.integers(0, K, (E, N)), rng.uniform(1e-10, 1.0, (E, N)))
            sim.reset(np.flatnonzero(out.terminated | out.truncated))
        return max(steps // E, 3) * E / (time.perf_counter() - start)

    single = steps_per_s(1, budget.speed_steps // 4)
    batched = steps_per_s(num_envs, budget.speed_steps * 8)
    ratio = batched / single
    targets.add("one environment alone, steps/s", f"{single:.0f}", "-", f"~{PAPER_STEPS_PER_S:.0f} (paper code training, 1 core)")
    targets.add(f"batched ({num_envs} environments), env steps/s", f"{batched:.0f}", "-", "-")
    targets.add("batched / alone, per env step", f"{ratio:.1f}x", ">= 10x", "-", ratio >= 10)
    return {"single_steps_per_s": single, "batched_steps_per_s": batched, "num_envs": num_envs, "speedup": ratio, "pass": ratio >= 10}


def bench_training_time(budget: Budget, out_dir: Path, targets: Targets) -> dict:
    """One MAHPPO run on ``TIMING_SCENARIO`` timed alone with 2 torch threads (cached in OUT/timing).

    The scheduler runs train in parallel, one thread each, so their wall times measure a shared
    machine; this run is the training-time target's figure. Run it with nothing else on the machine.
    """
    import torch

    threads = min(TIMING_THREADS, os.cpu_count() or 1)
    out = out_dir / "timing" / f"{TIMING_SCENARIO}-{_config_tag('mahppo', TIMING_SCENARIO, budget.timing_steps, {})}"
    print(f"[training time] MAHPPO, {budget.timing_steps} steps on {TIMING_SCENARIO}, alone, {threads} torch thread(s)")
    previous = torch.get_num_threads()
    try:
        run = _train_cached("mahppo", TIMING_SCENARIO, 0, budget.timing_steps, budget.eval_every_steps, out, torch_threads=threads)
    finally:
        torch.set_num_threads(previous)
    minutes = run["wall_s"] * 500_000 / run["steps"] / 60
    targets.add(f"{TIMING_SCENARIO}: MAHPPO 500k steps alone, {threads} threads (incl. evaluations)", f"{minutes:.1f} min",
                "<= 15 min (2 cores)", f"~{500_000 / PAPER_STEPS_PER_S / 60:.0f} min (paper code, 1 core)", minutes <= 15)
    return {"scenario": TIMING_SCENARIO, "steps": run["steps"], "wall_s": run["wall_s"], "cpu_s": run.get("cpu_s"),
            "torch_threads": threads, "cpu_count": os.cpu_count(), "minutes_per_500k_steps": minutes, "pass": minutes <= 15}


def bench_throughput(budget: Budget, out_dir: Path, targets: Targets) -> dict:
    """MAHPPO's default configuration on the paper scenario, alone, 1 torch thread: steps per second."""
    import torch

    out = out_dir / "timing" / f"{PAPER_SCENARIO}-{_config_tag('mahppo', PAPER_SCENARIO, budget.throughput_steps, {})}"
    print(f"[throughput] MAHPPO defaults, {budget.throughput_steps} steps on {PAPER_SCENARIO}, alone, 1 torch thread")
    previous = torch.get_num_threads()
    try:
        run = _train_cached("mahppo", PAPER_SCENARIO, 0, budget.throughput_steps, budget.eval_every_steps, out, torch_threads=1)
    finally:
        torch.set_num_threads(previous)
    wall, cpu = run["steps"] / run["wall_s"], run["steps"] / run["cpu_s"]
    load = run.get("load_average")
    targets.add(f"{PAPER_SCENARIO}: MAHPPO training, 1 thread (incl. evaluations), steps/s", f"{wall:.0f} ({cpu:.0f} per CPU-s)",
                f">= {THROUGHPUT_TARGET:.0f} (5x paper code)", f"{PAPER_STEPS_PER_S:.0f} (paper code, 1 thread)", wall >= THROUGHPUT_TARGET)
    return {"scenario": PAPER_SCENARIO, "steps": run["steps"], "wall_s": run["wall_s"], "cpu_s": run["cpu_s"], "steps_per_s": wall,
            "steps_per_cpu_s": cpu, "load_average_at_start": load, "pass": wall >= THROUGHPUT_TARGET}


# ---------------------------------------------------------------------------------------------
# Planned work: every training run and baseline evaluation, run in parallel before the sections


@dataclass(frozen=True)
class PlannedRun:
    """One training run of the bench (``algo`` 'mahppo' or 'sb3-ppo') and its evaluations, or a scenario's baselines ('baselines')."""

    algo: str
    scenario: str
    seed: int
    steps: int
    eval_every: int
    out: Path
    overrides: tuple[tuple[str, float | str | bool], ...] = ()
    search_options: tuple[tuple[str, int], ...] = ()
    part: str = "schedulers"
    """The bench section it serves: 'schedulers', 'ablations' or 'sweeps' (``--train-only`` picks by it)."""
    protocol: Protocol = PROTOCOL

    def done(self) -> bool:
        if self.algo == "baselines":
            return all(_eval_path(self.out.parent.parent, self.scenario, s, p).exists()
                       for s, p in _baseline_evaluations(self.scenario, self.protocol))
        return (self.out / "result.json").exists()

    def label(self) -> str:
        extra = "".join(f" {k}={v:g}" if isinstance(v, float) else f" {k}={v}" for k, v in self.overrides)
        return f"{self.scenario} {self.algo}" + ("" if self.algo == "baselines" else f" seed {self.seed}{extra}")


def _config(algo: str, scenario: str, steps: int, overrides: dict):
    from coinfer.rl.mahppo import MahppoConfig
    from coinfer.rl.sb3_ppo import Sb3PpoConfig

    return (MahppoConfig if algo == "mahppo" else Sb3PpoConfig)(scenario=scenario, total_steps=steps, **overrides)


_UNTRAINED_FIELDS = ("seed", "eval_every_steps", "eval_episodes", "checkpoint_every_steps", "torch_threads")
"""Configuration fields that do not change what a run learns (the seed names the run folder)."""
_LATER_FIELDS = {"trace_decay": "gamma-lambda", "critic_target": "lambda-return"}
"""Fields added after runs were cached, with the value every earlier run had: left out of the hash
at that value, so those runs keep their folders."""


def _config_tag(algo: str, scenario: str, steps: int, overrides: dict) -> str:
    """A short hash of everything a run learns from: equal configurations share their runs."""
    config = {k: v for k, v in asdict(_config(algo, scenario, steps, overrides)).items()
              if k not in _UNTRAINED_FIELDS and not (k in _LATER_FIELDS and v == _LATER_FIELDS[k])}
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=list).encode()).hexdigest()[:8]


def _run_dir(out_dir: Path, scenario: str, algo: str, seed: int, steps: int, overrides: dict | None = None) -> Path:
    return out_dir / "runs" / scenario / f"{algo}-{_config_tag(algo, scenario, steps, overrides or {})}-seed{seed}"


def _sweep_overrides(kind: str, value: float) -> dict:
    return {"num_devices": int(value)} if kind == "devices" else {"beta": float(value)}


def _sweep_dir(out_dir: Path, kind: str, value: float, steps: int) -> Path:
    overrides = {**_sweep_overrides(kind, value), "eval_every_steps": 0}
    return out_dir / "runs" / "sweep" / f"{kind}-{value:g}-{_config_tag('mahppo', PAPER_SCENARIO, steps, overrides)}"


def planned_runs(budget: Budget, out_dir: Path, seeds: dict[str, tuple[int, ...]] | None = None, protocol: Protocol = PROTOCOL,
                 scenarios: tuple[str, ...] | None = None) -> list[PlannedRun]:
    """What the comparison, the ablations and the sweeps will train, in that order (for packing into workers).

    ``seeds`` maps each algorithm to its training seeds (default: SEEDS for both; dense and
    heterogeneous take the first 3); the scheduler runs come seed by seed, so a run stopped early
    has whole seeds rather than whole scenarios.
    """
    seeds = seeds or seeds_per_algo()
    names = scenarios or protocol.scenarios
    options = budget.search_options
    plan = [PlannedRun("baselines", name, 0, 0, 0, out_dir / "runs" / name, search_options=options, protocol=protocol) for name in names]
    for s in sorted({s for algo in ALGOS for s in seeds[algo]}):
        for algo in ALGOS:
            for name in names:
                if s in protocol.seeds_for(name, seeds[algo]):
                    plan.append(PlannedRun(algo, name, s, budget.train_steps, budget.eval_every_steps,
                                           _run_dir(out_dir, name, algo, s, budget.train_steps), protocol=protocol))
    if scenarios is None or PAPER_SCENARIO in scenarios:
        known = {(r.algo, r.out) for r in plan}
        for s in seeds["mahppo"][: protocol.ablation_seeds]:  # seed by seed: a bench stopped early has every variant's first seeds
            for overrides in ABLATIONS.values():
                out = _run_dir(out_dir, PAPER_SCENARIO, "mahppo", s, budget.train_steps, overrides)
                if ("mahppo", out) not in known:
                    known.add(("mahppo", out))
                    plan.append(PlannedRun("mahppo", PAPER_SCENARIO, s, budget.train_steps, budget.eval_every_steps, out,
                                           overrides=tuple(overrides.items()), part="ablations", protocol=protocol))
        for kind, values in (("devices", budget.sweep_devices), ("beta", budget.sweep_betas)):
            for value in values:
                overrides = {**_sweep_overrides(kind, value), "eval_every_steps": 0}
                plan.append(PlannedRun("mahppo", PAPER_SCENARIO, 0, budget.sweep_steps, 0, _sweep_dir(out_dir, kind, value, budget.sweep_steps),
                                       overrides=tuple(overrides.items()), part="sweeps", protocol=protocol))
    return plan


def _execute(run: PlannedRun) -> str:
    """Worker entry point: one planned run and its evaluations, single-threaded."""
    import torch

    torch.set_num_threads(1)
    out_dir = run.out.parent.parent.parent if run.algo != "baselines" else run.out.parent.parent
    if run.algo == "baselines":
        _baseline_records(run.scenario, out_dir, run.protocol, dict(run.search_options))
    else:
        overrides = dict(run.overrides)
        _train_cached(run.algo, run.scenario, run.seed, run.steps, run.eval_every, run.out, **overrides)
        if run.part != "sweeps":
            _evaluate_run(run.algo, run.scenario, run.out, out_dir, run.protocol, sampled=run.algo == "mahppo" and run.scenario == PAPER_SCENARIO)
    return run.label()


def execute_planned(plan: list[PlannedRun], jobs: int) -> None:
    """Run what ``plan`` has not finished yet with ``jobs`` worker processes (1: in this process), with a progress bar."""
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from multiprocessing import get_context

    from tqdm import tqdm

    pending = [run for run in plan if not run.done()]
    if not pending:
        return
    print(f"[plan] {len(pending)} of {len(plan)} runs to do, {jobs} worker process(es)", flush=True)
    bar = tqdm(total=len(pending), unit="run", desc="rl bench")
    if jobs <= 1:
        for run in pending:
            bar.set_postfix_str(run.label())
            _execute(run)
            bar.update(1)
    else:
        with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
            futures = [pool.submit(_execute, run) for run in pending]
            for future in as_completed(futures):
                bar.set_postfix_str(future.result())
                bar.update(1)
    bar.close()


# ---------------------------------------------------------------------------------------------
# Training runs and evaluations, cached


def _train_cached(algo: str, scenario: str, seed: int, steps: int, eval_every: int, out: Path, **overrides) -> dict:
    """Train once (or reuse ``out/result.json``); the run's record: configuration, timing, curve.

    Several bench processes may share ``out_dir``: a lock file makes each run train only once.
    """
    done = out / "result.json"
    _once(done, out / "running.lock", lambda: _train_run(algo, scenario, seed, steps, eval_every, out, overrides))
    return json.loads(done.read_text())


def _once(done: Path, lock: Path, work: Callable[[], object]) -> None:
    """Run ``work`` until ``done`` exists, in one process only: others sharing the folder wait for it."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    while not done.exists():
        if not _take_lock(lock):  # another bench process is on it
            time.sleep(20)
            continue
        try:
            if not done.exists():  # it may have finished between our check and the lock
                work()
        finally:
            lock.unlink(missing_ok=True)


def _take_lock(lock: Path) -> bool:
    """Create ``lock`` holding our pid; False while a live process holds it (a dead one's is taken over)."""
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        try:
            os.kill(int(lock.read_text().strip() or 0), 0)
            return False
        except (ProcessLookupError, ValueError, FileNotFoundError):
            lock.unlink(missing_ok=True)
            return _take_lock(lock)
        except PermissionError:
            return False
    with os.fdopen(fd, "w") as f:
        f.write(str(os.getpid()))
    return True


def _train_run(algo: str, scenario: str, seed: int, steps: int, eval_every: int, out: Path, overrides: dict) -> None:
    from coinfer.rl.mahppo import config_to_dict, train_mahppo
    from coinfer.rl.sb3_ppo import train_sb3_ppo

    overrides = {"eval_every_steps": eval_every, **overrides}
    config = _config(algo, scenario, steps, {**overrides, "seed": seed})
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    result = (train_mahppo if algo == "mahppo" else train_sb3_ppo)(config, out)
    record = {"algo": algo, "scenario": scenario, "overrides": overrides, "seed": seed, "steps": result.steps, "wall_s": result.wall_s,
              "cpu_s": result.cpu_s, "steps_per_s": result.steps_per_s, "load_average": load,
              "config": config_to_dict(config) if algo == "mahppo" else asdict(config),
              "curve": [asdict(p) for p in result.curve], "policy": str(result.policy_path)}
    (out / "result.json").write_text(json.dumps(record, indent=2, default=list) + "\n")


def _eval_path(out_dir: Path, scenario: str, episodes_key: str, policy_id: str) -> Path:
    return out_dir / "evals" / scenario / episodes_key / f"{policy_id}.json"


def _cached_eval(path: Path, make: Callable[[], tuple[object, dict]]):
    """The `EvalResult` cached at ``path``, made (with extra JSON fields) and written if missing."""
    from coinfer.rl.evaluation import EvalResult

    def write() -> None:
        result, extra = make()
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({**result.to_dict(), **extra}, indent=1) + "\n")
        tmp.replace(path)

    _once(path, path.with_suffix(".lock"), write)  # bench processes sharing a folder search a baseline once
    return EvalResult.from_dict(json.loads(path.read_text()))


@dataclass(frozen=True)
class ScenarioSets:
    """The episode sets of one scenario under a protocol."""

    held_out: object
    """The held-out random-cell episodes (`EpisodeSet`)."""
    cell: object
    """The evaluation cell, one episode (the paper's protocol)."""
    sampled_cell: object
    """Evaluation-cell episodes for sampled actions."""
    tuning: object
    """What ``search`` is tuned on."""


def episode_sets(scenario, protocol: Protocol) -> ScenarioSets:
    from coinfer.rl.episodes import EpisodeSet

    return ScenarioSets(EpisodeSet.of(scenario, protocol.held_out_episodes), EpisodeSet.of(scenario, 1, cell="evaluation"),
                        EpisodeSet.of(scenario, protocol.sampled_cell_episodes, cell="evaluation"),
                        EpisodeSet.of(scenario, protocol.tuning_episodes, role="tuning"))


def _baseline_evaluations(scenario_name: str, protocol: Protocol) -> list[tuple[str, str]]:
    """(episode-set key, policy id) of every cached baseline evaluation of a scenario."""
    from coinfer.rl.scenario import load_scenario

    sets = episode_sets(load_scenario(scenario_name), protocol)
    return [(s.key(), name) for s in (sets.held_out, sets.cell) for name in BASELINES] + [(sets.held_out.key(), ORACLE)]


def _baseline_records(scenario_name: str, out_dir: Path, protocol: Protocol, search_options: dict) -> dict[str, dict[str, object]]:
    """Every baseline on the held-out set and the cell: {"held_out"|"cell": {name: EvalResult}}."""
    from coinfer.rl.evaluation import evaluate_policy, result_from_episodes
    from coinfer.rl.policy import make_policy
    from coinfer.rl.scenario import load_scenario
    from coinfer.rl.search import search_oracle

    scenario = load_scenario(scenario_name)
    sets = episode_sets(scenario, protocol)
    policies: dict[str, object] = {}

    def baseline(name: str):
        if name not in policies:
            start = time.perf_counter()
            options = {**search_options, "tuning": sets.tuning} if name == "search" else {}
            policies[name] = (make_policy(name, scenario, seed=0, **options), time.perf_counter() - start)
        return policies[name]

    def evaluate(name: str, episodes):
        def make():
            policy, make_s = baseline(name)
            extra = {"make_s": make_s, "tuning_set": sets.tuning.to_dict()} if name == "search" else {}
            if name == "search":
                extra["action"] = policy.action.to_dict()
            return evaluate_policy(policy, scenario, episodes), extra

        return _cached_eval(_eval_path(out_dir, scenario_name, episodes.key(), name), make)

    records = {"held_out": {name: evaluate(name, sets.held_out) for name in BASELINES},
               "cell": {name: evaluate(name, sets.cell) for name in BASELINES}}

    def oracle():
        start = time.perf_counter()
        deployed = baseline("search")[0].action
        searched = search_oracle(scenario, sets.held_out, progress=True, also_from=deployed, **search_options)
        result = result_from_episodes(ORACLE, scenario.name, sets.held_out, [m for _, m in searched])
        return result, {"actions": [a.to_dict() for a, _ in searched], "also_from": deployed.to_dict(), "make_s": time.perf_counter() - start}

    oracle_path = _eval_path(out_dir, scenario_name, sets.held_out.key(), ORACLE)
    if oracle_path.exists() and "also_from" not in json.loads(oracle_path.read_text()):
        oracle_path.unlink()  # cached before the oracle also started from the deployed search: it could end below it
    records["held_out"][ORACLE] = _cached_eval(oracle_path, oracle)
    return records


def _evaluate_run(algo: str, scenario_name: str, run_out: Path, out_dir: Path, protocol: Protocol, sampled: bool = False) -> dict[str, object]:
    """A trained run's policy on the held-out set, the cell and (``sampled``) the sampled cell episodes."""
    from coinfer.rl.evaluation import evaluate_policy
    from coinfer.rl.policy import load_policy
    from coinfer.rl.scenario import load_scenario

    scenario = load_scenario(scenario_name)
    sets = episode_sets(scenario, protocol)
    policy_id = run_out.name
    loaded: list = []

    def policy():
        if not loaded:
            loaded.append(load_policy(run_out / "policy.json", scenario))
        return loaded[0]

    out = {
        "held_out": _cached_eval(_eval_path(out_dir, scenario_name, sets.held_out.key(), policy_id), lambda: (evaluate_policy(policy(), scenario, sets.held_out), {})),
        "cell": _cached_eval(_eval_path(out_dir, scenario_name, sets.cell.key(), policy_id), lambda: (evaluate_policy(policy(), scenario, sets.cell), {})),
    }
    if sampled:
        out["sampled_cell"] = _cached_eval(_eval_path(out_dir, scenario_name, sets.sampled_cell.key() + "-sampled", policy_id),
                                           lambda: (evaluate_policy(policy(), scenario, sets.sampled_cell, deterministic=False), {}))
    return out


# ---------------------------------------------------------------------------------------------
# 3. Schedulers: the verdict protocol


def _text(interval, digits: int = 3) -> str:
    return interval.text(digits)


def _trained_records(algo: str, name: str, seeds: tuple[int, ...], budget: Budget, out_dir: Path, protocol: Protocol,
                     overrides: dict | None = None) -> tuple[dict[str, object], list[dict]]:
    """``algo``'s runs of ``seeds`` on scenario ``name``: {set: PolicyRecord} and the runs' records."""
    from coinfer.rl.verdict import PolicyRecord

    runs, evals = [], []
    for s in seeds:
        out = _run_dir(out_dir, name, algo, s, budget.train_steps, overrides)
        runs.append(_train_cached(algo, name, s, budget.train_steps, budget.eval_every_steps, out, **(overrides or {})))
        evals.append(_evaluate_run(algo, name, out, out_dir, protocol, sampled=algo == "mahppo" and name == PAPER_SCENARIO))
    records = {key: PolicyRecord(algo, tuple(e[key] for e in evals), tuple(seeds)) for key in evals[0]}
    return records, runs


def _figures(record, metrics: tuple[str, ...]) -> dict:
    out = {}
    for metric in metrics:
        entry = {"mean": record.mean(metric)}
        if record.results[0].episodes >= 2:
            interval = record.interval(metric)
            entry["ci95"] = [interval.low, interval.high]
        if record.seeds:
            entry["over_seeds"] = record.spread(metric)
        out[metric] = entry
    return out


def bench_schedulers(budget: Budget, out_dir: Path, targets: Targets, seeds: dict[str, tuple[int, ...]] | None = None,
                     protocol: Protocol = PROTOCOL, scenarios: tuple[str, ...] | None = None) -> dict:
    from coinfer.rl.evaluation import METRICS
    from coinfer.rl.plots import plot_learning_curve
    from coinfer.rl.verdict import PolicyRecord, beats

    seeds = seeds or seeds_per_algo()
    report = {}
    for name in scenarios or protocol.scenarios:
        from coinfer.rl.scenario import load_scenario

        scenario = load_scenario(name)
        sets = episode_sets(scenario, protocol)
        algo_seeds = {algo: protocol.seeds_for(name, seeds[algo]) for algo in ALGOS}
        print(f"[schedulers] {name}: {sets.held_out.describe()}; MAHPPO x {len(algo_seeds['mahppo'])} and sb3-ppo x "
              f"{len(algo_seeds['sb3-ppo'])} seeds x {budget.train_steps} steps")
        base = _baseline_records(name, out_dir, protocol, dict(budget.search_options))
        trained = {algo: _trained_records(algo, name, algo_seeds[algo], budget, out_dir, protocol) for algo in ALGOS}
        held = {b: PolicyRecord(b, (r,)) for b, r in base["held_out"].items()} | {algo: trained[algo][0]["held_out"] for algo in ALGOS}
        cell = {b: PolicyRecord(b, (r,)) for b, r in base["cell"].items()} | {algo: trained[algo][0]["cell"] for algo in ALGOS}
        mahppo = held["mahppo"]
        n = f"{len(mahppo.seeds)} seeds x {len(sets.held_out)} ep."
        verdicts = {}
        for rival, record in held.items():
            if rival == "mahppo":
                continue
            r = record.interval(protocol.metric)
            seeds_note = f", {len(record.seeds)} seeds" if record.seeds else ""
            oracle = rival == ORACLE
            targets.add(f"{name}: {rival}, held-out reward{seeds_note}", _text(r), "report" if oracle else "< MAHPPO", _per_task(record),
                        None if oracle else r.mean < mahppo.mean())
            if record.seeds:
                _add_spread(targets, name, rival, record, protocol.metric)
            d = beats(mahppo, record, protocol.metric)
            verdicts[rival] = d.to_dict()
            target = "> 0 (MAHPPO beats it)" if rival != ORACLE else "report (beating it: stretch)"
            targets.add(f"{name}: MAHPPO - {rival}, paired reward difference ({n})", _text(d), target, "-",
                        d.above_zero() if rival != ORACLE else None)
        m = mahppo.interval(protocol.metric)
        targets.add(f"{name}: MAHPPO, held-out reward ({n})", _text(m), "> every baseline", _per_task(mahppo),
                    all(v["low"] > 0 for k, v in verdicts.items() if k != ORACLE))
        _add_spread(targets, name, "MAHPPO", mahppo, protocol.metric)
        cell_spread = cell["mahppo"].spread(protocol.metric)
        targets.add(f"{name}: paper protocol (evaluation cell, 1 episode), MAHPPO reward over seeds",
                    f"{cell_spread['mean']:.3f} ± {cell_spread['std']:.3f}", "-",
                    f"search {cell['search'].mean():.3f}, greedy {cell['greedy'].mean():.3f}; noise: the last slot moves it by ~0.3")
        curves = {algo: [[(p["step"], p["eval_reward"]) for p in r["curve"]] for r in trained[algo][1]] for algo in ALGOS}
        plot = out_dir / f"learning_curves_{name}.png"
        plot_learning_curve(curves, plot, title=f"{name}: training-loop held-out mean reward ({_config('mahppo', name, 1, {}).eval_episodes} episodes)",
                            baselines={b: held[b].mean() for b in ("local", "greedy", "search")},
                            bands={algo: [[(p["step"], p["eval_low"], p["eval_high"]) for p in r["curve"]] for r in trained[algo][1]] for algo in ALGOS})
        report[name] = {
            "episode_set": sets.held_out.to_dict(), "tuning_set": sets.tuning.to_dict(), "seeds": algo_seeds,
            "held_out": {k: _figures(v, METRICS) for k, v in held.items()},
            "paper_protocol_cell": {k: _figures(v, METRICS) for k, v in cell.items()},
            "mahppo_minus": verdicts, "pass": all(v["low"] > 0 for k, v in verdicts.items() if k != ORACLE),
            "mahppo_steps_per_s": _spread_of([r["steps_per_s"] for r in trained["mahppo"][1]]),
            "mahppo_steps_per_cpu_s": _spread_of([r["steps"] / r["cpu_s"] for r in trained["mahppo"][1]]),
            "learning_curve_png": str(plot),
        }
    return report


def _per_task(record) -> str:
    """The per-task figures of a record with their intervals, for a report row."""
    parts = []
    for metric, label, digits in (("latency_per_task_s", "s/task", 4), ("energy_per_task_j", "J/task", 4),
                                  ("task_latency_mean_s", "task latency mean s", 2), ("task_latency_p95_s", "p95 s", 2)):
        parts.append(f"{label} {record.interval(metric).text(digits)}")
    return "; ".join(parts)


def _add_spread(targets: Targets, scenario: str, name: str, record, metric: str) -> None:
    spread = record.spread(metric)
    targets.add(f"{scenario}: {name}, spread of the per-seed held-out means ({len(record.seeds)} seeds)",
                f"{spread['mean']:.3f} ± {spread['std']:.3f}", "-", f"min {spread['min']:.3f}, max {spread['max']:.3f}")


def _spread_of(values: list[float]) -> dict:
    a = np.array(values, dtype=float)
    return {"mean": float(a.mean()), "std": float(a.std()), "min": float(a.min()), "max": float(a.max()), "runs": [float(v) for v in a]}


# ---------------------------------------------------------------------------------------------
# 4. The paper's protocol against the paper code's agent


def bench_paper_protocol(budget: Budget, out_dir: Path, targets: Targets, seeds: dict[str, tuple[int, ...]] | None = None,
                         protocol: Protocol = PROTOCOL) -> dict:
    seeds = seeds or seeds_per_algo()
    mahppo_seeds = protocol.seeds_for(PAPER_SCENARIO, seeds["mahppo"])
    print(f"[paper protocol] MAHPPO x {len(mahppo_seeds)} seeds on the evaluation cell of {PAPER_SCENARIO}, against the paper code's agent")
    records, runs = _trained_records("mahppo", PAPER_SCENARIO, mahppo_seeds, budget, out_dir, protocol)
    out: dict = {"seeds": mahppo_seeds}
    for kind, key in (("greedy", "cell"), ("sampled", "sampled_cell")):
        record = records[key]
        figures = {m: record.spread(m) for m in ("reward", "latency_per_task_s", "energy_per_task_j")}
        anchor = AUTHORS_AGENT[kind]
        what = "1 episode, modes and means" if kind == "greedy" else f"{protocol.sampled_cell_episodes} episodes of sampled actions"
        r, t, e = figures["reward"], figures["latency_per_task_s"], figures["energy_per_task_j"]
        if kind == "greedy":
            targets.add(f"{PAPER_SCENARIO} cell ({what}): reward, mean ± std of {len(mahppo_seeds)} seeds", f"{r['mean']:.3f} ± {r['std']:.3f}",
                        f">= {anchor['reward']:.3f}", f"{anchor['reward']:.3f} (paper code's agent)", r["mean"] >= anchor["reward"])
            targets.add(f"{PAPER_SCENARIO} cell ({what}): s/task, mean of seeds", f"{t['mean']:.4f}", f"<= {anchor['latency_per_task_s']:.4f}",
                        f"{anchor['latency_per_task_s']:.4f} (paper code's agent)", t["mean"] <= anchor["latency_per_task_s"])
            targets.add(f"{PAPER_SCENARIO} cell ({what}): J/task, mean of seeds", f"{e['mean']:.4f}", f"<= {anchor['energy_per_task_j']:.4f}",
                        f"{anchor['energy_per_task_j']:.4f} (paper code's agent)", e["mean"] <= anchor["energy_per_task_j"])
            targets.add(f"{PAPER_SCENARIO} cell ({what}): reward, moonshot", f"{r['mean']:.3f}", f">= {MOONSHOT_REWARD}", "-", r["mean"] >= MOONSHOT_REWARD)
        else:
            within = float(np.mean([res.reward_std for res in record.results]))
            targets.add(f"{PAPER_SCENARIO} cell ({what}): reward, mean of seeds", f"{r['mean']:.3f} (within-seed std {within:.3f})",
                        f"> {anchor['reward']:.3f}", f"{anchor['reward']:.3f} ± 0.165 (paper code's agent)", r["mean"] > anchor["reward"])
            targets.add(f"{PAPER_SCENARIO} cell ({what}): s/task and J/task, mean of seeds", f"{t['mean']:.4f} s, {e['mean']:.4f} J", "-",
                        f"{anchor['latency_per_task_s']:.4f} s, {anchor['energy_per_task_j']:.4f} J (paper code's agent)")
        out[kind] = figures
    rates = [r["steps"] / r["cpu_s"] for r in runs]
    out["steps_per_cpu_s"] = _spread_of(rates)
    targets.add(f"{PAPER_SCENARIO}: MAHPPO training steps per CPU-second, 1 thread, runs in parallel", f"{np.mean(rates):.0f}",
                f">= {THROUGHPUT_TARGET:.0f}", f"{PAPER_STEPS_PER_S:.0f} (paper code)", float(np.mean(rates)) >= THROUGHPUT_TARGET)
    return out


# ---------------------------------------------------------------------------------------------
# 5. Ablations: the paper code's choices


def bench_ablations(budget: Budget, out_dir: Path, targets: Targets, seeds: dict[str, tuple[int, ...]] | None = None,
                    protocol: Protocol = PROTOCOL) -> dict:
    from coinfer.rl.verdict import beats

    seeds = seeds or seeds_per_algo()
    ablation_seeds = seeds["mahppo"][: protocol.ablation_seeds]
    print(f"[ablations] MAHPPO on {PAPER_SCENARIO}, {len(ablation_seeds)} seeds each, against the defaults on the held-out episodes")
    records = {label: _trained_records("mahppo", PAPER_SCENARIO, ablation_seeds, budget, out_dir, protocol, overrides) for label, overrides in ABLATIONS.items()}
    reference = records["defaults"][0]["held_out"]
    default_tag = _config_tag("mahppo", PAPER_SCENARIO, budget.train_steps, {})
    out = {}
    for label, (record, runs) in records.items():
        held = record["held_out"]
        same = label != "defaults" and _config_tag("mahppo", PAPER_SCENARIO, budget.train_steps, ABLATIONS[label]) == default_tag
        if same:
            label += " (= the defaults: the same runs)"
        d = beats(held, reference) if label != "defaults" and not same else None
        cell, sampled = record["cell"].spread(), record["sampled_cell"].spread()
        rate = float(np.mean([r["steps"] / r["cpu_s"] for r in runs]))
        targets.add(f"ablation: {label}: held-out reward", _text(held.interval()),
                    "-" if d is None else "vs defaults: " + _text(d), f"cell {cell['mean']:.3f}, sampled cell {sampled['mean']:.3f}, {rate:.0f} steps/CPU-s")
        out[label] = {"overrides": ABLATIONS[label.split(" (= the defaults")[0]], "held_out": _figures(held, ("reward", "latency_per_task_s", "energy_per_task_j")),
                      "minus_defaults": d.to_dict() if d else None, "cell": cell, "sampled_cell": sampled, "steps_per_cpu_s": rate}
    return out


# ---------------------------------------------------------------------------------------------
# 6. Sweeps


def bench_sweeps(budget: Budget, out_dir: Path, targets: Targets, protocol: Protocol = PROTOCOL) -> dict:
    from coinfer.rl.episodes import EpisodeSet
    from coinfer.rl.evaluation import evaluate_policy
    from coinfer.rl.policy import load_policy, make_policy

    print(f"[sweeps] MAHPPO ({budget.sweep_steps} steps each) against local on {PAPER_SCENARIO} variants, {protocol.held_out_episodes} held-out episodes")
    report: dict[str, list] = {"devices": [], "beta": []}
    for kind, values in (("devices", budget.sweep_devices), ("beta", budget.sweep_betas)):
        for value in values:
            overrides = {**_sweep_overrides(kind, value), "eval_every_steps": 0}
            scenario = _config("mahppo", PAPER_SCENARIO, budget.sweep_steps, overrides).build_scenario()
            run_out = _sweep_dir(out_dir, kind, value, budget.sweep_steps)
            _train_cached("mahppo", PAPER_SCENARIO, 0, budget.sweep_steps, 0, run_out, **overrides)
            held_out = EpisodeSet.of(scenario, protocol.held_out_episodes)
            ours = _cached_eval(run_out / "held_out.json", lambda: (evaluate_policy(load_policy(run_out / "policy.json", scenario), scenario, held_out), {}))
            local = _cached_eval(run_out / "local_held_out.json", lambda: (evaluate_policy(make_policy("local", scenario), scenario, held_out), {}))
            row = {kind: value, "mahppo": ours.summary(), "local": local.summary(),
                   "latency_reduction": 1 - ours.latency_per_task_s / local.latency_per_task_s,
                   "energy_reduction": 1 - ours.energy_per_task_j / local.energy_per_task_j}
            report[kind].append(row)
            targets.add(f"{kind}={value:g}: latency / energy reduction vs local (held-out means)", f"{row['latency_reduction']:.0%} / {row['energy_reduction']:.0%}",
                        "-", f"up to {PAPER_LATENCY_CLAIM:.0%} / {PAPER_ENERGY_CLAIM:.0%} (paper)")
    _plot_sweeps(report, out_dir / "sweeps.png")
    report["png"] = str(out_dir / "sweeps.png")  # type: ignore[assignment]
    return report


def _plot_sweeps(report: dict, path: Path) -> None:
    from coinfer.rl.plots import _pyplot

    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, kind, label in ((axes[0], "devices", "devices"), (axes[1], "beta", "beta (energy weight)")):
        rows = report[kind]
        x = [r[kind] for r in rows]
        ax.plot(x, [100 * r["latency_reduction"] for r in rows], "o-", label="latency per task")
        ax.plot(x, [100 * r["energy_reduction"] for r in rows], "s-", label="energy per task")
        ax.axhline(100 * PAPER_LATENCY_CLAIM, color="C0", linestyle="--", linewidth=0.9, label="paper claim: 56% latency")
        ax.axhline(100 * PAPER_ENERGY_CLAIM, color="C1", linestyle="--", linewidth=0.9, label="paper claim: 72% energy")
        if kind == "beta":
            ax.set_xscale("log")
            ax.set_xticks(x, [f"{v:g}" for v in x])
            ax.minorticks_off()
        ax.set_xlabel(label)
        ax.set_ylabel("reduction against local (%)")
        ax.grid(alpha=0.3)
    axes[0].set_title("MAHPPO vs local, ResNet18 cell, beta = 1")
    axes[1].set_title("MAHPPO vs local, 5 devices")
    axes[1].legend(fontsize=8, loc="best")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------


def protocol_cost(plan: list[PlannedRun], out_dir: Path, jobs: int) -> dict:
    """How long the planned training takes: CPU time of the finished runs, and an estimate for the rest."""
    done = [json.loads((r.out / "result.json").read_text()) for r in plan if r.algo != "baselines" and r.done()]
    rate = float(np.mean([d["steps"] / d["cpu_s"] for d in done])) if done else 500.0
    todo_steps = sum(r.steps for r in plan if r.algo != "baselines" and not r.done())
    cpu_h = sum(d["cpu_s"] for d in done) / 3600
    left_h = todo_steps / rate / 3600
    return {"runs": sum(r.algo != "baselines" for r in plan), "finished": len(done), "finished_cpu_hours": cpu_h,
            "steps_left": todo_steps, "left_cpu_hours_estimate": left_h, "steps_per_cpu_s": rate,
            "full_protocol_hours_on_jobs": (cpu_h + left_h) / max(jobs, 1), "jobs": jobs}


def train_only(out_dir: Path, quick: bool, jobs: int | None, only: str, seeds: dict[str, tuple[int, ...]] | None = None,
               scenarios: tuple[str, ...] | None = None) -> None:
    """Train (and evaluate) the planned runs of one kind ('schedulers', 'ablations', 'sweeps' or 'all') and stop, without the report.

    For spreading a bench over sittings or machines: each trains its share into a copy of
    ``out_dir``, the ``runs`` and ``evals`` folders are merged, and a plain run then finds
    everything done and reports.
    """
    budget, protocol = (QUICK, QUICK_PROTOCOL) if quick else (FULL, PROTOCOL)
    plan = planned_runs(budget, Path(out_dir), seeds, protocol, scenarios)
    if only != "all":
        plan = [run for run in plan if run.part == only or (run.algo == "baselines" and only == "schedulers")]
    execute_planned(plan, _default_jobs(jobs))


def run_benchmarks(out_dir: Path, quick: bool, jobs: int | None = None, seeds: dict[str, tuple[int, ...]] | None = None,
                   scenarios: tuple[str, ...] | None = None) -> dict:
    """Run every section, print each figure beside its target and anchor, write ``bench.json``.

    ``jobs`` worker processes train the planned runs first (default: one per core). ``scenarios``
    limits the scheduler comparison (and, without the paper scenario, skips the sections on it).

    The returned dict has a ``targets`` list of rows {name, ours, target, anchor, met} for the
    ``coinfer bench`` report, and each section's full figures under its name.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    budget, protocol = (QUICK, QUICK_PROTOCOL) if quick else (FULL, PROTOCOL)
    start = time.perf_counter()
    targets = Targets()
    jobs = _default_jobs(jobs)
    seeds = seeds or seeds_per_algo()
    plan = planned_runs(budget, out_dir, seeds, protocol, scenarios)
    report: dict = {"quick": quick, "budget": asdict(budget), "protocol": asdict(protocol), "jobs": jobs, "seeds": seeds,
                    "cost_before": protocol_cost(plan, out_dir, jobs), "targets": targets.rows}
    cost = report["cost_before"]
    print(f"[plan] {cost['finished']} of {cost['runs']} training runs done ({cost['finished_cpu_hours']:.1f} CPU-h); "
          f"left about {cost['left_cpu_hours_estimate']:.1f} CPU-h; the full protocol takes about {cost['full_protocol_hours_on_jobs']:.1f} h on {jobs} cores")

    def save() -> None:
        (out_dir / "bench.json").write_text(json.dumps(report, indent=2, default=_jsonable) + "\n")

    paper = scenarios is None or PAPER_SCENARIO in scenarios
    sections: list[tuple[str, Callable[[], object]]] = [
        ("conformance", lambda: bench_conformance(targets)),
        ("speed", lambda: bench_speed(budget, targets)),
        ("training_time", lambda: bench_training_time(budget, out_dir, targets)),
        ("throughput", lambda: bench_throughput(budget, out_dir, targets)),
        ("plan", lambda: execute_planned(plan, jobs)),
        ("schedulers", lambda: bench_schedulers(budget, out_dir, targets, seeds, protocol, scenarios)),
    ]
    if paper:
        sections += [("paper_protocol", lambda: bench_paper_protocol(budget, out_dir, targets, seeds, protocol)),
                     ("ablations", lambda: bench_ablations(budget, out_dir, targets, seeds, protocol)),
                     ("sweeps", lambda: bench_sweeps(budget, out_dir, targets, protocol))]
    for name, section in sections:
        result = section()
        if result is not None:
            report[name] = result
        report["wall_s"] = time.perf_counter() - start
        save()
    cost = report["cost_after"] = protocol_cost(plan, out_dir, jobs)
    targets.add(f"the whole protocol: {cost['runs']} training runs", f"{cost['finished_cpu_hours'] + cost['left_cpu_hours_estimate']:.1f} CPU-h",
                "-", f"about {cost['full_protocol_hours_on_jobs']:.1f} h on {jobs} free cores (plus the baselines' searches)")
    save()
    print(f"rl bench done in {report['wall_s'] / 60:.1f} min; wrote {out_dir / 'bench.json'}")
    return report


def _jsonable(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return str(value)


def parse_seeds(text: str) -> tuple[int, ...]:
    """``--seeds``: distinct training seeds (0..999999), comma separated."""
    from coinfer.core.errors import InvalidInput
    from coinfer.rl.episodes import check_training_seeds

    try:
        seeds = tuple(int(piece) for piece in text.split(",") if piece.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a comma list of integers, got {text!r}") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"give one or more distinct seeds >= 0, got {text!r}")
    try:
        check_training_seeds(seeds, "seeds")
    except InvalidInput as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return seeds


def parse_scenarios(text: str) -> tuple[str, ...]:
    """``--scenarios``: a comma list of the protocol's scenarios."""
    names = tuple(p.strip() for p in text.split(",") if p.strip())
    unknown = [n for n in names if n not in PROTOCOL.scenarios]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"choose from {', '.join(PROTOCOL.scenarios)}; got {text!r}")
    return names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m coinfer.bench.rl", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/bench/rl", help="output folder")
    parser.add_argument("--quick", action="store_true", help="smoke budgets (minutes)")
    parser.add_argument("--jobs", type=int, default=None, help="worker processes for the training runs (default: one per core)")
    parser.add_argument("--train-only", choices=("all", "schedulers", "ablations", "sweeps"), default=None,
                        help="train and evaluate that share of the planned runs and stop (to spread the bench over sittings or machines)")
    parser.add_argument("--seeds", type=parse_seeds, default=SEEDS, help="training seeds, comma list (default 0,1,2,3,4; dense and heterogeneous take the first 3)")
    parser.add_argument("--sb3-seeds", type=parse_seeds, default=None, help="sb3-ppo training seeds (default: as --seeds)")
    parser.add_argument("--scenarios", type=parse_scenarios, default=None, help=f"comma list of scenarios to compare on (default all: {', '.join(PROTOCOL.scenarios)})")
    args = parser.parse_args(argv)
    if args.jobs is not None and args.jobs < 1:
        parser.error(f"--jobs must be >= 1, got {args.jobs}")
    seeds = seeds_per_algo(args.seeds, args.sb3_seeds)
    if args.train_only:
        train_only(Path(args.out), args.quick, args.jobs, args.train_only, seeds, args.scenarios)
    else:
        run_benchmarks(Path(args.out), args.quick, args.jobs, seeds, args.scenarios)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

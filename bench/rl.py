"""``make bench`` for the rl role: every figure of the issue's targets beside its target and anchor.

Sections, each written to ``out_dir`` as JSON (``bench.json``) and PNG plots:

1. conformance - the paper simulator's reference figures (ANCHORS.md) from fixed policies;
2. simulator speed - one environment alone against the batched form (target >= 10x per step),
   and one MAHPPO training run of 500k steps on ``dense`` (the heaviest scenario: 10 devices)
   alone on 2 cores, timed (target: <= 15 min);
3. schedulers - MAHPPO against every baseline (local, offload, random, greedy, search, sb3-ppo)
   on ``mahppo-paper-resnet18``, ``edge-server`` and ``dense``, mean and spread over 3 seeds, with
   learning curves and each run's CPU time (the runs train in parallel, one thread each), and on
   ``edge-server`` MAHPPO also trained on the evaluation cell (informative);
4. sweeps - latency and energy per task against ``local`` over 1..10 devices and over beta, with
   the paper's claims (56 % latency, 72 % energy) marked.

Finished training runs are kept under ``out_dir/runs`` and reused, so an interrupted bench resumes.
Every training run and baseline evaluation is planned first and run by ``jobs`` single-threaded
worker processes (default: one per core), longest first; the sections then read the results.
``quick`` shrinks every budget to a smoke run (minutes); the figures then say nothing about quality.

    python -m coinfer.bench.rl --out runs/bench/rl [--quick] [--jobs J]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

PAPER_FIGURES = {  # ANCHORS.md, MAHPPO: fixed policies in the paper simulator's evaluation mode (ResNet18)
    "all local": (5, 0.1, 0.0475, 0.0984),
    "point 3, 0.1 W, UE i on sub-channel i mod 2": (3, 0.1, 0.0700, 0.0771),
    "point 1, 0.1 W, UE i on sub-channel i mod 2": (1, 0.1, 0.1775, 0.0247),
}
PAPER_STEPS_PER_S = 180.0  # the paper's code, one CPU core (ANCHORS.md)
PAPER_LATENCY_CLAIM, PAPER_ENERGY_CLAIM = 0.56, 0.72
SCHEDULER_SCENARIOS = ("mahppo-paper-resnet18", "edge-server", "dense")
BASELINES = ("local", "offload", "random", "greedy", "search")
SEEDS = (0, 1, 2)
CELL_TRAINED_SCENARIOS = ("edge-server",)
"""Where MAHPPO is also trained on the evaluation cell, the episode ``search`` is tuned on: an
informative row beside the verdict, which keeps the paper's protocol."""
CELL_OVERRIDES = {"train_cell": "evaluation"}
"""MahppoConfig overrides of those runs."""
CELL_RUN_PREFIX = "mahppo-evaluation-cell"
"""Their run folders: runs/<scenario>/mahppo-evaluation-cell-seed<K>."""
ALGOS = ("mahppo", "sb3-ppo")


def seeds_per_algo(mahppo: tuple[int, ...] = SEEDS, sb3: tuple[int, ...] | None = None) -> dict[str, tuple[int, ...]]:
    """Training seeds of each algorithm; sb3-ppo's default to MAHPPO's."""
    return {"mahppo": mahppo, "sb3-ppo": mahppo if sb3 is None else sb3}


def _default_jobs(jobs: int | None) -> int:
    return jobs if jobs is not None else (os.cpu_count() or 1)


@dataclass(frozen=True)
class Budget:
    """How much each part of the bench trains."""

    train_steps: int
    """Steps per MAHPPO / sb3-ppo run in the scheduler comparison."""
    sweep_steps: int
    """Steps per MAHPPO run in the sweeps."""
    eval_every_steps: int
    """Learning-curve resolution."""
    speed_steps: int
    """Environment steps timed in the simulator-speed section."""
    timing_steps: int
    """Steps of the MAHPPO run timed alone on 2 cores (the training-time target)."""
    sweep_devices: tuple[int, ...]
    """Device counts of the device sweep."""
    sweep_betas: tuple[float, ...]
    """Energy weights of the beta sweep."""
    search_options: tuple[tuple[str, int], ...] = ()
    """Options of the ``search`` baseline (power levels, starts, rounds); empty: its defaults."""


FULL = Budget(500_000, 150_000, 25_000, 2_000, 500_000, tuple(range(1, 11)), (0.1, 0.3, 1.0, 3.0, 10.0))
QUICK = Budget(4_096, 2_048, 2_048, 200, 4_096, (1, 3, 5), (0.3, 3.0), (("power_levels", 4), ("starts", 2), ("max_rounds", 2)))
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
    scenario = load_scenario("mahppo-paper-resnet18")
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
# 2. Simulator speed


def bench_speed(budget: Budget, targets: Targets, num_envs: int = 256) -> dict:
    from coinfer.rl.scenario import load_scenario
    from coinfer.rl.sim.core import Simulator

    print("[speed] simulator steps per second, random actions on mahppo-paper-resnet18 (shared 2-core machine: noisy)")
    scenario = load_scenario("mahppo-paper-resnet18")

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
    targets.add("one environment alone, steps/s", f"{single:.0f}", "-", f"~{PAPER_STEPS_PER_S:.0f} (paper code, 1 core)")
    targets.add(f"batched ({num_envs} environments), env steps/s", f"{batched:.0f}", "-", "-")
    targets.add("batched / alone, per env step", f"{ratio:.1f}x", ">= 10x", "-", ratio >= 10)
    return {"single_steps_per_s": single, "batched_steps_per_s": batched, "num_envs": num_envs, "speedup": ratio, "pass": ratio >= 10}


def bench_training_time(budget: Budget, out_dir: Path, targets: Targets) -> dict:
    """One MAHPPO run on ``TIMING_SCENARIO`` timed alone with 2 torch threads (cached in OUT/timing).

    The scheduler runs train in parallel, one thread each, so their wall times measure a shared
    machine; this run is the training-time target's figure. Run it with nothing else on the machine.
    """
    import torch

    out = out_dir / "timing" / TIMING_SCENARIO
    threads = min(TIMING_THREADS, os.cpu_count() or 1)
    print(f"[training time] MAHPPO, {budget.timing_steps} steps on {TIMING_SCENARIO}, alone, {threads} torch thread(s)")
    previous = torch.get_num_threads()
    try:
        run = _train_cached("mahppo", TIMING_SCENARIO, 0, budget.timing_steps, budget.eval_every_steps, out, torch_threads=threads)
    finally:
        torch.set_num_threads(previous)
    minutes = run["wall_s"] * 500_000 / run["steps"] / 60
    cpus = os.cpu_count()
    targets.add(f"{TIMING_SCENARIO}: MAHPPO 500k steps alone, {threads} threads (incl. evaluations)", f"{minutes:.1f} min",
                "<= 15 min (2 cores)", f"~{500_000 / PAPER_STEPS_PER_S / 60:.0f} min (paper code, 1 core)", minutes <= 15)
    return {"scenario": TIMING_SCENARIO, "steps": run["steps"], "wall_s": run["wall_s"], "cpu_s": run.get("cpu_s"),
            "torch_threads": threads, "cpu_count": cpus, "minutes_per_500k_steps": minutes, "pass": minutes <= 15}


# ---------------------------------------------------------------------------------------------
# Planned work: every training run and baseline evaluation, run in parallel before the sections


@dataclass(frozen=True)
class PlannedRun:
    """One training run of the bench (``algo`` 'mahppo' or 'sb3-ppo'), or a scenario's baselines ('baselines')."""

    algo: str
    scenario: str
    seed: int
    steps: int
    eval_every: int
    out: Path
    overrides: tuple[tuple[str, float | str], ...] = ()
    search_options: tuple[tuple[str, int], ...] = ()
    part: str = "schedulers"
    """The bench section it serves: 'schedulers' or 'sweeps' (``--train-only`` picks by it)."""

    def done(self) -> bool:
        return (self.out / ("baselines.json" if self.algo == "baselines" else "result.json")).exists()

    def label(self) -> str:
        extra = "".join(f" {k}={v:g}" if isinstance(v, float) else f" {k}={v}" for k, v in self.overrides)
        return f"{self.scenario} {self.algo}" + ("" if self.algo == "baselines" else f" seed {self.seed}{extra}")


def _run_dir(out_dir: Path, scenario: str, algo: str, seed: int) -> Path:
    return out_dir / "runs" / scenario / f"{algo}-seed{seed}"


def _sweep_dir(out_dir: Path, kind: str, value: float) -> Path:
    return out_dir / "runs" / "sweep" / f"{kind}-{value:g}"


def _sweep_overrides(kind: str, value: float) -> dict:
    return {"num_devices": int(value)} if kind == "devices" else {"beta": float(value)}


def planned_runs(budget: Budget, out_dir: Path, seeds: dict[str, tuple[int, ...]] | None = None) -> list[PlannedRun]:
    """What the scheduler comparison and the sweeps will train, longest first (for packing into workers).

    ``seeds`` maps each algorithm to its training seeds (default: SEEDS for both); the scheduler
    runs come seed by seed, so a run stopped early has whole seeds rather than whole scenarios.
    """
    seeds = seeds or seeds_per_algo()
    plan = [PlannedRun("baselines", name, 0, 0, 0, out_dir / "runs" / name, search_options=budget.search_options) for name in SCHEDULER_SCENARIOS]
    plan += [PlannedRun(algo, name, s, budget.train_steps, budget.eval_every_steps, _run_dir(out_dir, name, algo, s))
             for s in sorted({s for algo in ALGOS for s in seeds[algo]}) for algo in ALGOS if s in seeds[algo] for name in SCHEDULER_SCENARIOS]
    plan += [PlannedRun("mahppo", name, s, budget.train_steps, budget.eval_every_steps, _run_dir(out_dir, name, CELL_RUN_PREFIX, s), overrides=tuple(CELL_OVERRIDES.items()))
             for s in seeds["mahppo"] for name in CELL_TRAINED_SCENARIOS]
    for kind, values in (("devices", budget.sweep_devices), ("beta", budget.sweep_betas)):
        for value in values:
            overrides = tuple(_sweep_overrides(kind, value).items())
            plan.append(PlannedRun("mahppo", "mahppo-paper-resnet18", 0, budget.sweep_steps, 0, _sweep_dir(out_dir, kind, value), overrides=overrides, part="sweeps"))
    return plan


def _execute(run: PlannedRun) -> str:
    """Worker entry point: one planned run, single-threaded."""
    import torch

    torch.set_num_threads(1)
    if run.algo == "baselines":
        from coinfer.rl.scenario import load_scenario

        _baselines_cached(load_scenario(run.scenario), run.out, dict(run.search_options))
    else:
        _train_cached(run.algo, run.scenario, run.seed, run.steps, run.eval_every, run.out, **dict(run.overrides))
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
# 3. Schedulers


def _train_cached(algo: str, scenario: str, seed: int, steps: int, eval_every: int, out: Path, **overrides) -> dict:
    """Train once (or reuse ``out/result.json``); the run's record: timing, curve, final evaluation.

    Several bench processes may share ``out_dir``: a lock file makes each run train only once.
    """
    done = out / "result.json"
    out.mkdir(parents=True, exist_ok=True)
    while not done.exists():
        if not _take_lock(out / "running.lock"):  # another bench process is training this run
            time.sleep(20)
            continue
        try:
            _train_run(algo, scenario, seed, steps, eval_every, out, overrides)
        finally:
            (out / "running.lock").unlink(missing_ok=True)
    return json.loads(done.read_text())


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
    from coinfer.rl.evaluation import evaluate_policy
    from coinfer.rl.mahppo import MahppoConfig, train_mahppo
    from coinfer.rl.policy import load_policy
    from coinfer.rl.sb3_ppo import Sb3PpoConfig, train_sb3_ppo

    done = out / "result.json"
    if algo == "mahppo":
        config = MahppoConfig(scenario=scenario, total_steps=steps, seed=seed, eval_every_steps=eval_every, **overrides)
        result = train_mahppo(config, out)
        target = config.build_scenario()
    else:
        result = train_sb3_ppo(Sb3PpoConfig(scenario=scenario, total_steps=steps, seed=seed, eval_every_steps=eval_every), out)
        target = scenario
    final = evaluate_policy(load_policy(result.policy_path, target), target).summary()
    best = max((p.eval_reward for p in result.curve), default=float("nan"))
    record = {"algo": algo, "scenario": scenario, "overrides": overrides, "seed": seed, "steps": result.steps, "wall_s": result.wall_s,
              "best_curve_eval_reward": best, "cpu_s": result.cpu_s,
              "steps_per_s": result.steps_per_s, "curve": [asdict(p) for p in result.curve], "eval": final, "policy": str(result.policy_path)}
    done.write_text(json.dumps(record, indent=2) + "\n")


def _baselines_cached(scenario, out: Path, search_options: dict) -> dict:
    from coinfer.rl.evaluation import evaluate_policy
    from coinfer.rl.policy import make_policy

    path = out / "baselines.json"
    if path.exists():
        return json.loads(path.read_text())
    stochastic = scenario.network.channel_model != "path-loss" or scenario.tasks.arrivals != "batch"
    episodes = 5 if stochastic else 1
    results = {}
    for name in BASELINES:
        start = time.perf_counter()
        policy = make_policy(name, scenario, seed=0, **(search_options if name == "search" else {}))
        results[name] = {**evaluate_policy(policy, scenario, episodes=episodes).summary(), "make_s": time.perf_counter() - start}
        if name == "search":
            results[name]["action"] = policy.action.to_dict()  # type: ignore[attr-defined]
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
    return results


def _spread(values: list[float]) -> dict:
    a = np.array(values, dtype=float)
    return {"mean": float(a.mean()), "std": float(a.std()), "min": float(a.min()), "max": float(a.max()), "runs": [float(v) for v in a]}


def bench_schedulers(budget: Budget, out_dir: Path, targets: Targets, seeds: dict[str, tuple[int, ...]] | None = None) -> dict:
    from coinfer.rl.plots import plot_learning_curve
    from coinfer.rl.scenario import load_scenario

    seeds = seeds or seeds_per_algo()
    report = {}
    for name in SCHEDULER_SCENARIOS:
        scenario = load_scenario(name)
        print(f"[schedulers] {name}: baselines, then MAHPPO x {len(seeds['mahppo'])} and sb3-ppo x {len(seeds['sb3-ppo'])} seeds x {budget.train_steps} steps")
        base = _baselines_cached(scenario, out_dir / "runs" / name, dict(budget.search_options))
        runs = {algo: [_train_cached(algo, name, s, budget.train_steps, budget.eval_every_steps, _run_dir(out_dir, name, algo, s)) for s in seeds[algo]]
                for algo in ALGOS}
        mahppo = _spread([r["eval"]["reward"] for r in runs["mahppo"]])
        sb3 = _spread([r["eval"]["reward"] for r in runs["sb3-ppo"]])
        rivals = {b: base[b]["reward"] for b in BASELINES} | {"sb3-ppo": sb3["mean"]}
        best_rival = max(rivals, key=rivals.get)
        wins = mahppo["mean"] > rivals[best_rival]
        for b in BASELINES:
            r = base[b]
            targets.add(f"{name}: {b} reward (s/task, J/task)", f"{r['reward']:.3f}", "< MAHPPO",
                        f"{r['latency_per_task_s']:.4f} s, {r['energy_per_task_j']:.4f} J", r["reward"] < mahppo["mean"])
        targets.add(f"{name}: sb3-ppo reward, mean [min, max] of {len(seeds['sb3-ppo'])} seed(s)", f"{sb3['mean']:.3f} [{sb3['min']:.3f}, {sb3['max']:.3f}]",
                    "< MAHPPO", "-", sb3["mean"] < mahppo["mean"])
        targets.add(f"{name}: MAHPPO reward, mean [min, max] of {len(seeds['mahppo'])} seed(s)", f"{mahppo['mean']:.3f} [{mahppo['min']:.3f}, {mahppo['max']:.3f}]",
                    f"> {rivals[best_rival]:.3f} ({best_rival})", "-", bool(wins))
        best = _spread([r["best_curve_eval_reward"] for r in runs["mahppo"]])
        targets.add(f"{name}: MAHPPO best evaluation along the curve (not the final policy)", f"{best['mean']:.3f} [{best['min']:.3f}, {best['max']:.3f}]",
                    "-", "-")
        cell = None
        if name in CELL_TRAINED_SCENARIOS:
            cell = _spread([_train_cached("mahppo", name, s, budget.train_steps, budget.eval_every_steps, _run_dir(out_dir, name, CELL_RUN_PREFIX, s),
                                          **CELL_OVERRIDES)["eval"]["reward"] for s in seeds["mahppo"]])
            targets.add(f"{name}: MAHPPO trained on the evaluation cell (not the paper's protocol), mean [min, max]",
                        f"{cell['mean']:.3f} [{cell['min']:.3f}, {cell['max']:.3f}]", "-", f"search {rivals['search']:.3f}")
        walls = [r["wall_s"] * 500_000 / r["steps"] for r in runs["mahppo"]]
        cpus = [r.get("cpu_s", float("nan")) * 500_000 / r["steps"] for r in runs["mahppo"]]
        # Informative: these runs share the machine (see the training-time section for the target).
        targets.add(f"{name}: MAHPPO CPU time for 500k steps, 1 thread, runs in parallel", f"{np.mean(cpus) / 60:.1f} min",
                    "-", f"~{500_000 / PAPER_STEPS_PER_S / 60:.0f} min (paper code, 1 core)")
        curves = {algo: [[(p["step"], p["eval_reward"]) for p in r["curve"]] for r in rs] for algo, rs in runs.items()}
        plot = out_dir / f"learning_curves_{name}.png"
        plot_learning_curve(curves, plot, title=f"{name}: evaluation reward (shared 2-core machine)",
                            baselines={b: base[b]["reward"] for b in ("local", "greedy", "search")})
        report[name] = {
            "baselines": base, "mahppo": mahppo, "mahppo_best_along_curve": best, "sb3-ppo": sb3, "best_rival": best_rival, "pass": bool(wins),
            "mahppo_trained_on_evaluation_cell": cell,
            "mahppo_latency_per_task_s": _spread([r["eval"]["latency_per_task_s"] for r in runs["mahppo"]]),
            "mahppo_energy_per_task_j": _spread([r["eval"]["energy_per_task_j"] for r in runs["mahppo"]]),
            "mahppo_task_latency_mean_s": _spread([r["eval"]["task_latency_mean_s"] for r in runs["mahppo"]]),
            "mahppo_minutes_per_500k_steps": _spread([w / 60 for w in walls]),
            "mahppo_cpu_minutes_per_500k_steps": _spread([c / 60 for c in cpus]),
            "sb3_minutes_per_500k_steps": _spread([r["wall_s"] * 500_000 / r["steps"] / 60 for r in runs["sb3-ppo"]]),
            "learning_curve_png": str(plot),
        }
    return report


# ---------------------------------------------------------------------------------------------
# 4. Sweeps


def bench_sweeps(budget: Budget, out_dir: Path, targets: Targets) -> dict:
    from coinfer.rl.evaluation import evaluate_policy
    from coinfer.rl.mahppo import MahppoConfig
    from coinfer.rl.policy import make_policy

    print(f"[sweeps] MAHPPO ({budget.sweep_steps} steps each) against local on mahppo-paper-resnet18 variants")
    report: dict[str, list] = {"devices": [], "beta": []}
    for kind, values in (("devices", budget.sweep_devices), ("beta", budget.sweep_betas)):
        for value in values:
            overrides = _sweep_overrides(kind, value)
            scenario = MahppoConfig(**overrides).build_scenario()
            run = _train_cached("mahppo", "mahppo-paper-resnet18", 0, budget.sweep_steps, 0, _sweep_dir(out_dir, kind, value), **overrides)
            local = evaluate_policy(make_policy("local", scenario), scenario)
            ours = run["eval"]
            row = {kind: value, "mahppo": ours, "local": local.summary(),
                   "latency_reduction": 1 - ours["latency_per_task_s"] / local.latency_per_task_s,
                   "energy_reduction": 1 - ours["energy_per_task_j"] / local.energy_per_task_j}
            report[kind].append(row)
            targets.add(f"{kind}={value:g}: latency / energy reduction vs local", f"{row['latency_reduction']:.0%} / {row['energy_reduction']:.0%}",
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


def train_only(out_dir: Path, quick: bool, jobs: int | None, only: str, seeds: dict[str, tuple[int, ...]] | None = None) -> None:
    """Train the planned runs of one kind ('schedulers', 'sweeps' or 'all') and stop, without the report.

    For spreading a bench over machines: each trains its share into a copy of ``out_dir``, the
    ``runs`` folders are merged, and a plain run then finds everything trained and reports.
    """
    budget = QUICK if quick else FULL
    plan = planned_runs(budget, Path(out_dir), seeds)
    if only != "all":
        plan = [run for run in plan if run.part == only]
    execute_planned(plan, _default_jobs(jobs))


def run_benchmarks(out_dir: Path, quick: bool, jobs: int | None = None, seeds: dict[str, tuple[int, ...]] | None = None) -> dict:
    """Run every section, print each figure beside its target and anchor, write ``bench.json``.

    ``jobs`` worker processes train the planned runs first (default: one per core).

    The returned dict has a ``targets`` list of rows {name, ours, target, anchor, met} for the
    ``coinfer bench`` report, and each section's full figures under its name.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    budget = QUICK if quick else FULL
    start = time.perf_counter()
    targets = Targets()
    jobs = _default_jobs(jobs)
    seeds = seeds or seeds_per_algo()
    report: dict = {"quick": quick, "budget": asdict(budget), "jobs": jobs, "seeds": seeds, "targets": targets.rows}

    def save() -> None:
        (out_dir / "bench.json").write_text(json.dumps(report, indent=2, default=_jsonable) + "\n")

    sections = (
        ("conformance", lambda: bench_conformance(targets)),
        ("speed", lambda: bench_speed(budget, targets)),
        ("training_time", lambda: bench_training_time(budget, out_dir, targets)),
        ("plan", lambda: execute_planned(planned_runs(budget, out_dir, seeds), jobs)),
        ("schedulers", lambda: bench_schedulers(budget, out_dir, targets, seeds)),
        ("sweeps", lambda: bench_sweeps(budget, out_dir, targets)),
    )
    for name, section in sections:
        result = section()
        if result is not None:
            report[name] = result
        report["wall_s"] = time.perf_counter() - start
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
    """``--seeds``: distinct non-negative integers, comma separated."""
    try:
        seeds = tuple(int(piece) for piece in text.split(",") if piece.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a comma list of integers, got {text!r}") from None
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"give one or more distinct seeds >= 0, got {text!r}")
    return seeds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m coinfer.bench.rl", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/bench/rl", help="output folder")
    parser.add_argument("--quick", action="store_true", help="smoke budgets (minutes)")
    parser.add_argument("--jobs", type=int, default=None, help="worker processes for the training runs (default: one per core)")
    parser.add_argument("--train-only", choices=("all", "schedulers", "sweeps"), default=None,
                        help="train that share of the planned runs and stop (to spread the bench over machines)")
    parser.add_argument("--seeds", type=parse_seeds, default=SEEDS, help="MAHPPO training seeds, comma list (default 0,1,2)")
    parser.add_argument("--sb3-seeds", type=parse_seeds, default=None, help="sb3-ppo training seeds (default: as --seeds)")
    args = parser.parse_args(argv)
    if args.jobs is not None and args.jobs < 1:
        parser.error(f"--jobs must be >= 1, got {args.jobs}")
    seeds = seeds_per_algo(args.seeds, args.sb3_seeds)
    if args.train_only:
        train_only(Path(args.out), args.quick, args.jobs, args.train_only, seeds)
    else:
        run_benchmarks(Path(args.out), args.quick, args.jobs, seeds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""`coinfer demo`: coinfer on the embedded digits data, through the real CLI and real processes.

By default the walking skeleton: a split CNN served by a coordinator and one edge daemon over
gRPC. With ``--full`` (what `make demo` runs), the whole pipeline in five stages, each a real
`coinfer` subprocess whose progress streams to the terminal, each timed:
1. a ViT teacher (`coinfer teacher train`) decomposed for 4 devices (`coinfer decompose --quick`);
2. split-point CNN with autoencoders (`coinfer split --quick`) profiled on this machine
   (`coinfer profile`);
3. a short MAHPPO run on a scenario built from that profile (`coinfer rl train`, cell in
   coinfer.demo_scenario), evaluated against the baselines (`coinfer rl eval`);
4. a coordinator and 4 edge daemons on loopback serving both bundles under the live scheduler;
   the test split streamed through the Open Inference Protocol; one edge killed to show the
   degraded answers (`coinfer.demo_runtime`);
5. a summary table, `report.json`, `report.md` and PNG plots in the runs folder.

A stage whose outputs already exist is reused unless `--fresh` is given; once a stage runs, the
stages after it run too, since their inputs changed. Every setting here is sized for about four
minutes on an idle 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from coinfer.core.errors import FailedPrecondition, InvalidInput

DEMO_DEVICES = 4
DEMO_BACKBONE = "resnet18"
DEMO_TEACHER = ("--arch", "vit-nano", "--patch-size", "4", "--epochs", "60", "--lr", "3e-3", "--batch-size", "128",
                "--drop-path", "0")
"""The demo's teacher: the smallest preset, on 2 x 2 patches of 4 x 4 pixels (the default patch at
8 px, written out so the demo does not move with it), trains in seconds and reaches about 0.95
test accuracy; the default vit-tiny on the same patches reaches about 0.92 in minutes."""
DEMO_RL_STEPS = 81_920
DEMO_RL = ("--num-envs", "16", "--rollout-steps", "1024", "--eval-every", "8192")
"""80 updates of 1024 steps (the paper's rollout size): on the demo's cell a short run learns more
from many small updates than from a few large ones, and by about 80k steps it beats every baseline
(fewer steps often still lose to running locally)."""
THREADS = ("--threads", "1")
"""One torch thread per stage: these small models train fastest so, and torch's default pool
slows down several-fold on cores other jobs keep busy."""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("demo", help="run the end-to-end demo on the digits data")
    p.add_argument("--runs", default="runs/demo", help="folder for everything the demo trains and writes")
    p.add_argument("--fresh", action="store_true", help="retrain everything instead of reusing the runs folder")
    p.add_argument("--rl-steps", type=int, default=DEMO_RL_STEPS, help=f"MAHPPO training steps (default {DEMO_RL_STEPS})")
    p.add_argument(
        "--full", action="store_true",
        help="run the whole pipeline (DEKD, split points, MAHPPO, 4-edge runtime) instead of the one-device walking skeleton",
    )
    p.set_defaults(handler=_run)


def coinfer(*args: str) -> list[str]:
    return [sys.executable, "-m", "coinfer", *args]


def run_stage(title: str, argv: list[str], done_marker: Path, fresh: bool) -> float:
    """Run one CLI stage unless its output exists; returns the seconds it took (0 if reused)."""
    if done_marker.exists() and not fresh:
        print(f"-- {title}: reusing {done_marker}", flush=True)
        return 0.0
    print(f"-- {title}: coinfer {' '.join(argv[3:])}", flush=True)
    started = time.perf_counter()
    code = subprocess.run(argv).returncode
    if code != 0:
        raise FailedPrecondition(f"{title} failed (exit status {code}); its output is above")
    seconds = time.perf_counter() - started
    print(f"   {title}: {seconds:.1f} s", flush=True)
    return seconds


def _run(args: argparse.Namespace) -> int:
    if not args.full:
        from coinfer.demo_skeleton import run_walking_skeleton

        return run_walking_skeleton(args)
    from coinfer.demo_report import write_demo_report
    from coinfer.demo_runtime import run_runtime_stage
    from coinfer.demo_scenario import write_scenario
    from coinfer.rl.scenario import load_scenario

    if isinstance(args.rl_steps, bool) or args.rl_steps < 1:
        raise InvalidInput(f"--rl-steps must be a positive number of steps, got {args.rl_steps}")
    runs = Path(args.runs)
    if args.fresh and runs.exists():
        shutil.rmtree(runs)
    runs.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    timings: dict[str, float] = {}
    stages = _Stages(timings, fresh=args.fresh)
    teacher, devit, split, profile = runs / "teacher", runs / "devit", runs / "split", runs / "profile.json"
    stages.run(
        "teacher", "[1/5] ViT teacher on digits",
        coinfer("teacher", "train", "--dataset", "digits", *DEMO_TEACHER, *THREADS, "--out", str(teacher), "--overwrite"),
        teacher / "manifest.json",
    )
    stages.run(
        "decompose", f"[1/5] DEKD decomposition for {DEMO_DEVICES} devices",
        coinfer("decompose", "--teacher", str(teacher), "--dataset", "digits", "--devices", str(DEMO_DEVICES), "--quick",
                *THREADS, "--out", str(devit), "--overwrite"),
        devit / "report.json",
    )
    stages.run(
        "split", f"[2/5] split-point {DEMO_BACKBONE} with autoencoders",
        coinfer("split", "--backbone", DEMO_BACKBONE, "--dataset", "digits", "--quick", *THREADS, "--out", str(split), "--overwrite"),
        split / "report.json",
    )
    stages.run(
        "profile", "[2/5] profiling the split points on this machine",
        coinfer("profile", "--bundle", str(split), "--out", str(profile), *THREADS),
        profile,
    )
    scenario = write_scenario(profile, runs / "scenario.toml", DEMO_DEVICES)
    mahppo = runs / "mahppo"
    stages.run(
        "rl_train", f"[3/5] MAHPPO, {args.rl_steps} steps on a cell scaled to the measured profile",
        coinfer("rl", "train", "--scenario", str(scenario), "--algo", "mahppo", "--steps", str(args.rl_steps), *DEMO_RL,
                "--seed", "0", "--out", str(mahppo)),
        mahppo / "policy.json",
    )
    scheduler_eval = runs / "scheduler_eval.json"
    policies = [a for ref in (str(mahppo), "local", "offload", "random", "greedy") for a in ("--policy", ref)]
    stages.run(
        "rl_eval", "[3/5] scheduler against the baselines",
        coinfer("rl", "eval", "--scenario", str(scenario), *policies, "--episodes", "3", "--out", str(scheduler_eval)),
        scheduler_eval,
    )
    print(f"-- [4/5] runtime: coordinator + {DEMO_DEVICES} edge daemons on loopback", flush=True)
    t0 = time.perf_counter()
    runtime = run_runtime_stage(runs, devit, split, mahppo, scenario, DEMO_DEVICES)
    timings["runtime"] = time.perf_counter() - t0
    print(f"   [4/5] runtime: {timings['runtime']:.1f} s", flush=True)
    timings["total"] = time.perf_counter() - started
    print("-- [5/5] report", flush=True)
    report = write_demo_report(runs, devit, split, profile, scheduler_eval, runtime, timings,
                               scheduler_scenario=load_scenario(scenario).description, reused=stages.reused)
    print(json.dumps({k: report[k] for k in ("teacher_accuracy", "ensemble_accuracy", "speedup", "runtime_requests", "runtime_errors")}, indent=None))
    print(f"-- demo finished in {time.perf_counter() - started:.0f} s; report in {runs / 'report.md'}", flush=True)
    return 0 if report["runtime_errors"] == 0 else 1


class _Stages:
    """Runs the CLI stages in order; once one runs, every later one runs too (its inputs changed)."""

    def __init__(self, timings: dict[str, float], fresh: bool) -> None:
        self.timings = timings
        self.redo = fresh
        self.reused: list[str] = []
        """Stages whose outputs an earlier run left, in order."""

    def run(self, key: str, title: str, argv: list[str], done_marker: Path) -> None:
        seconds = run_stage(title, argv, done_marker, self.redo)
        if seconds > 0:
            self.timings[key] = seconds
            self.redo = True
        else:
            self.reused.append(key)

"""`coinfer demo`: coinfer on the embedded digits data, through the real CLI and real processes.

By default the walking skeleton: a split CNN served by a coordinator and one edge daemon over
gRPC. With ``--full``, the whole pipeline in five stages, each a real `coinfer` subprocess whose progress streams to the terminal:
1. teacher + DEKD decomposition for 4 devices (`coinfer decompose --quick`);
2. split-point CNN with autoencoders (`coinfer split --quick`) profiled on this machine
   (`coinfer profile`);
3. a short MAHPPO run on a scenario built from that profile (`coinfer rl train`), evaluated
   against the baselines (`coinfer rl eval`);
4. a coordinator and 4 edge daemons on loopback serving both bundles under the live scheduler;
   the test split streamed through the Open Inference Protocol; one edge killed to show the
   degraded answers (`coinfer.demo_runtime`);
5. a summary table, `report.json`, `report.md` and PNG plots in the runs folder.

A stage whose outputs already exist is reused unless `--fresh` is given.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

DEMO_DEVICES = 4
DEMO_BACKBONE = "resnet18"
DEMO_RL_STEPS = 20_000


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
        print(f"-- {title}: reusing {done_marker.parent if done_marker.is_file() else done_marker}", flush=True)
        return 0.0
    print(f"-- {title}: {' '.join(argv[2:])}", flush=True)
    started = time.perf_counter()
    subprocess.run(argv, check=True)
    return time.perf_counter() - started


def write_scenario(profile_path: Path, out: Path) -> Path:
    """A scenario like the paper's, with every device running the measured profile."""
    out.write_text(
        f'''# Built by `coinfer demo` from the profile measured on this machine.
name = "demo-{profile_path.stem}"
description = "{DEMO_DEVICES} devices with the split CNN profiled here, 2 sub-channels of 1 MHz"

[network]
num_subchannels = 2
subchannel_bandwidth_hz = 1.0e6
path_loss_exponent = 3.0
noise_w = 1.0e-9
channel_model = "path-loss"

[episode]
slot_s = 0.5
max_slots = 60

[tasks]
arrivals = "batch"
mean_tasks_per_device = 200

[reward]
beta = 1.0
min_finished = 0.8

[evaluation]
tasks_per_device = 200
max_slots = 400

[server]
model = "none"

[[devices]]
count = {DEMO_DEVICES}
profile = "{profile_path.resolve()}"
power_range_w = [1.0e-10, 1.0]
distance_range_m = [1.0, 100.0]
eval_distance_m = 50.0
'''
    )
    return out


def _run(args: argparse.Namespace) -> int:
    if not args.full:
        from coinfer.server.demo_skeleton import run_walking_skeleton

        return run_walking_skeleton(args)
    from coinfer.demo_report import write_demo_report
    from coinfer.demo_runtime import run_runtime_stage

    runs = Path(args.runs)
    if args.fresh and runs.exists():
        shutil.rmtree(runs)
    runs.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    timings: dict[str, float] = {}
    devit, split, profile = runs / "devit", runs / "split", runs / "profile.json"
    timings["decompose"] = run_stage(
        "[1/5] ViT teacher + DEKD decomposition for 4 devices",
        coinfer("decompose", "--dataset", "digits", "--devices", str(DEMO_DEVICES), "--quick", "--out", str(devit), "--overwrite"),
        devit / "report.json", args.fresh,
    )
    timings["split"] = run_stage(
        f"[2/5] split-point {DEMO_BACKBONE} with autoencoders",
        coinfer("split", "--backbone", DEMO_BACKBONE, "--dataset", "digits", "--quick", "--out", str(split), "--overwrite"),
        split / "report.json", args.fresh,
    )
    timings["profile"] = run_stage(
        "[2/5] profiling the split points on this machine",
        coinfer("profile", "--bundle", str(split), "--out", str(profile), "--no-progress"),
        profile, args.fresh,
    )
    scenario = write_scenario(profile, runs / "scenario.toml")
    mahppo = runs / "mahppo"
    timings["rl_train"] = run_stage(
        f"[3/5] MAHPPO, {args.rl_steps} steps on the measured profile",
        coinfer("rl", "train", "--scenario", str(scenario), "--algo", "mahppo", "--steps", str(args.rl_steps), "--seed", "0", "--out", str(mahppo)),
        mahppo / "policy.json", args.fresh,
    )
    scheduler_eval = runs / "scheduler_eval.json"
    timings["rl_eval"] = run_stage(
        "[3/5] scheduler against the baselines",
        coinfer("rl", "eval", "--scenario", str(scenario), *[a for ref in (str(mahppo), "local", "offload", "random", "greedy") for a in ("--policy", ref)], "--episodes", "3", "--out", str(scheduler_eval)),
        scheduler_eval, args.fresh,
    )
    print("-- [4/5] runtime: coordinator + 4 edge daemons on loopback", flush=True)
    t0 = time.perf_counter()
    runtime = run_runtime_stage(runs, devit, split, mahppo, scenario, DEMO_DEVICES)
    timings["runtime"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - started
    print("-- [5/5] report", flush=True)
    report = write_demo_report(runs, devit, split, profile, scheduler_eval, runtime, timings)
    print(json.dumps({k: report[k] for k in ("teacher_accuracy", "ensemble_accuracy", "speedup", "runtime_requests", "runtime_errors")}, indent=None))
    return 0 if report["runtime_errors"] == 0 else 1

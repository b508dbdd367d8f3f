"""The fleet placement benchmark: DeViT on four devices whose compute really differs.

    python -m coinfer.bench.fleet_placement --out runs/bench/fleet_placement [--quick]

Root only (namespaces, `tc`, cgroups). A ViT teacher trained briefly on digits is decomposed by
`coinfer decompose`'s pipeline twice: for device speeds 1,1,0.5,0.5 (the "hetero" bundle) and for
equal speeds. A testbed gives four devices CPU quotas of 0.5, 0.5, 0.25 and 0.25 of a core (the
same ratio) on fast links, plus a fifth device (0.5) that joins later; the coordinator runs in the
server namespace, one edge daemon (1 torch thread) per device. Inside the server namespace
(`placement_phases.py`), in rounds, each of four configurations in turn:

(a) the hetero bundle, placed by speed (the default);
(b) the hetero bundle, placed by count, with the edges registering in the order that gives the
    worst mapping (the slow devices hold the two large sub-models);
(c) the equal-speeds bundle, placed by speed;
(d) the teacher alone, run whole on the fastest device (a split bundle at its local point).

Each phase restarts the coordinator, waits for the placement to settle, and times sequential
batch-1 requests: end-to-end latency at the client, the critical-path compute the daemons report,
and the CPU each daemon spent per request. A last phase streams requests while a fifth device
joins and then a fast one is killed: no request may be lost, and the expected critical path must
come back within 10 % of the optimum. Everything goes to ``fleet_placement.json``; the machine's
load is recorded beside each phase (this machine is shared: figures are noisy, the ratios measured
in one run are what to compare).
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from coinfer.bench.script import bench_main, machine_snapshot, write_report

log = logging.getLogger(__name__)

CPU_CORES = (0.5, 0.5, 0.25, 0.25, 0.5)
"""Quotas of devices 0..3, and of device 4, which joins in the churn phase."""
HETERO_SPEEDS = (1.0, 1.0, 0.5, 0.5)
P50_TARGET_COUNT = 1.6
P50_TARGET_EQUAL = 1.3
RECOVERY_TARGET_S = 5.0
PREFIX = "fleetbench"


@dataclass(frozen=True)
class PlacementBenchConfig:
    """Sizes of one run."""

    quick: bool
    teacher_arch: str
    patch_size: int
    teacher_epochs: int
    distill_epochs: int
    ensemble_epochs: int
    macs_ratio: float
    rounds: int
    requests: int
    """Timed requests per phase and round."""

    @classmethod
    def make(cls, quick: bool) -> PlacementBenchConfig:
        if quick:
            return cls(True, "vit-nano", 1, 2, 1, 1, 0.5, rounds=1, requests=40)
        return cls(False, "vit-tiny", 1, 8, 2, 2, 0.7, rounds=3, requests=150)

    def fixture(self) -> dict[str, Any]:
        """What the bundles depend on (a bundle built from the same is reused)."""
        keys = ("teacher_arch", "patch_size", "teacher_epochs", "distill_epochs", "ensemble_epochs", "macs_ratio")
        return {k: getattr(self, k) for k in keys}


# Bundles --------------------------------------------------------------------------------------


def _fixture_of(path: Path) -> dict | None:
    from coinfer.core.bundle import load_bundle
    from coinfer.core.errors import CoinferError

    try:
        return load_bundle(path).metadata.get("fleet_bench_fixture")
    except CoinferError:
        return None


def build_bundles(folder: Path, config: PlacementBenchConfig) -> dict[str, Path]:
    """The teacher, the two decompositions and the teacher as a one-device split bundle (reused when built from the same settings)."""
    import torch

    from coinfer.core.data import load_dataset
    from coinfer.core.training import TrainConfig
    from coinfer.server.dekd.jobs import decompose_config
    from coinfer.server.dekd.pipeline import decompose, training_targets
    from coinfer.server.dekd.teacher import load_teacher, save_teacher, teacher_config, train_teacher

    torch.set_num_threads(1)
    folder.mkdir(parents=True, exist_ok=True)
    fixture = config.fixture()
    paths = {"teacher": folder / "teacher", "hetero": folder / "fleet-hetero", "equal": folder / "fleet-equal",
             "teacher-split": folder / "fleet-teacher"}
    splits = load_dataset("digits", seed=0)
    if _fixture_of(paths["teacher"]) == fixture:
        teacher, _ = load_teacher(paths["teacher"])
    else:
        started = time.perf_counter()
        cfg = teacher_config(config.teacher_arch, splits.image_shape, splits.num_classes, patch_size=config.patch_size, drop_path_rate=0.0)
        teacher, result = train_teacher(splits, cfg, TrainConfig(epochs=config.teacher_epochs, lr=3e-3, batch_size=32, warmup_epochs=0.5,
                                                                 seed=0, desc="fleet bench teacher"))
        save_teacher(teacher, paths["teacher"], {"dataset": splits.name, "fleet_bench_fixture": fixture,
                                                  "val_accuracy": result.best_val_accuracy}, overwrite=True)
        print(f"      trained the teacher ({teacher.macs() / 1e6:.0f} M MACs) in {time.perf_counter() - started:.0f} s", flush=True)
    targets = None
    for name, speeds in (("hetero", HETERO_SPEEDS), ("equal", (1.0,) * 4)):
        if _fixture_of(paths[name]) == fixture:
            continue
        started = time.perf_counter()
        dekd = decompose_config(splits, "quick", devices=4, device_speeds=speeds, baseline=False, progress=False,
                                macs_ratio=config.macs_ratio, distill_epochs=config.distill_epochs,
                                ensemble_epochs=config.ensemble_epochs)
        targets = targets or training_targets(teacher, splits, dekd)
        torch.manual_seed(0)
        decompose(teacher, splits, dekd, out=paths[name], overwrite=True, targets=targets,
                  metadata={"model_name": f"fleet-{name}", "fleet_bench_fixture": fixture})
        print(f"      decomposed for speeds {','.join(f'{s:g}' for s in speeds)} in {time.perf_counter() - started:.0f} s", flush=True)
    if _fixture_of(paths["teacher-split"]) != fixture:
        write_teacher_split_bundle(paths["teacher-split"], teacher, splits, fixture)
    return paths


def write_teacher_split_bundle(path: Path, teacher, splits, fixture: dict) -> None:
    """The teacher as a split bundle with two points: upload the image, or run it all on the device."""
    from coinfer.core.bundle import PartToWrite, TensorSpec, write_bundle
    from coinfer.core.split_point import MODEL_PART, SPLIT_SCHEMA

    channels, height, width = splits.image_shape
    part = PartToWrite(MODEL_PART, teacher.state_dict(), role="model", config=teacher.config_dict(),
                       inputs=[TensorSpec("image", "FP32", (-1, channels, height, width))],
                       outputs=[TensorSpec("logits", "FP32", (-1, splits.num_classes))])
    points = [
        {"index": 0, "name": "input", "head": None, "encoder": None, "decoder": None, "tail": MODEL_PART, "bits": 0, "compress": False},
        {"index": 1, "name": "local", "head": MODEL_PART, "encoder": None, "decoder": None, "tail": None, "bits": 0, "compress": False},
    ]
    metadata = {
        "model_name": "fleet-teacher",
        "split": {"schema": SPLIT_SCHEMA, "backbone": "vit", "dataset": splits.name, "input_shape": [channels, height, width],
                  "num_classes": splits.num_classes, "points": points},
        "fleet_bench_fixture": fixture,
    }
    write_bundle(path, name=path.name, kind="split-points", parts=[part], metadata=metadata, overwrite=True)


# The run --------------------------------------------------------------------------------------


def missing_requirements() -> list[str]:
    from coinfer.testbed import cgroups, missing_requirements as netns_missing

    return sorted(set(netns_missing()) | set(cgroups.missing_requirements()))


def run_benchmark(out_dir: str | Path, quick: bool = False) -> dict[str, Any]:
    from coinfer.testbed import Testbed, make_config

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = PlacementBenchConfig.make(quick)
    missing = missing_requirements()
    if missing:
        report = {"status": "skipped", "error": "needs root, ip, tc and a cgroup cpu controller: " + "; ".join(missing)}
        write_report(report, out / "fleet_placement.json")
        print(f"fleet placement bench skipped: {report['error']}", flush=True)
        return report
    print("[1/3] bundles", flush=True)
    bundles = build_bundles(out / "bundles", config)
    print(f"[2/3] testbed: {len(CPU_CORES)} devices with CPU quotas {', '.join(f'{c:g}' for c in CPU_CORES)}", flush=True)
    state_dir = out / "testbed-state"
    Testbed.teardown(PREFIX, state_dir)  # what an interrupted run left behind
    tb = Testbed.up(make_config(len(CPU_CORES), uplink_mbit=[1000.0], downlink_mbit=[1000.0], cpu_cores=list(CPU_CORES), prefix=PREFIX, state_dir=state_dir))
    measurements = out / "measurements.json"
    measurements.unlink(missing_ok=True)
    try:
        argv = [sys.executable, "-m", "coinfer.bench.placement_phases", "--prefix", PREFIX, "--state-dir", str(state_dir),
                "--bundles", str(out / "bundles"), "--run-dir", str(out / "run"), "--out", str(measurements),
                "--rounds", str(config.rounds), "--requests", str(config.requests)]
        print("[3/3] phases, from the server namespace", flush=True)
        done = subprocess.run(argv)
        if done.returncode != 0 or not measurements.is_file():
            raise RuntimeError(f"the phases failed (exit status {done.returncode}); logs under {out / 'run'}")
    finally:
        status = tb.status()
        tb.down()
    raw = json.loads(measurements.read_text())
    report = summarise(raw, config)
    report["testbed"] = [{"device": d.index, "cpu_cores": d.cpu_cores} for d in status.devices]
    report["bundles"] = {name: str(path) for name, path in bundles.items()}
    report["accuracy"]["bundle_test_accuracy"] = _bundle_accuracies(bundles)
    report["machine_end"] = machine_snapshot(_MACHINE_NOTE)
    report["targets"] = target_rows(report)
    write_report(report, out / "fleet_placement.json")
    print_summary(report)
    return report


_MACHINE_NOTE = ("4-5 edge daemons under CPU quotas (2 cores in all at most), the coordinator and one client share this "
                 "machine with other engineers' jobs")


def _bundle_accuracies(bundles: dict[str, Path]) -> dict[str, float]:
    out = {}
    for name in ("hetero", "equal"):
        try:
            report = json.loads((bundles[name] / "report.json").read_text())
            out[name] = report["ensemble"]["accuracy"]
            out["teacher"] = report["teacher"]["accuracy"]
        except (OSError, KeyError, ValueError):
            continue
    return out


# Summary --------------------------------------------------------------------------------------


def _ratio_ci(slow: list[float], fast: list[float], seed: int = 0, resamples: int = 2000) -> tuple[float, float, float]:
    """p50(slow) / p50(fast) with a 95 % bootstrap interval (each phase resampled on its own)."""
    rng = np.random.default_rng(seed)
    a, b = np.asarray(slow), np.asarray(fast)
    ratios = [np.median(rng.choice(a, len(a))) / np.median(rng.choice(b, len(b))) for _ in range(resamples)]
    low, high = np.percentile(ratios, [2.5, 97.5])
    return float(np.median(a) / np.median(b)), float(low), float(high)


def summarise(raw: dict[str, Any], config: PlacementBenchConfig) -> dict[str, Any]:
    phases: dict[str, Any] = {}
    for name, rounds in raw["phases"].items():
        latency = [v for r in rounds for v in r["latency_ms"]]
        compute = [v for r in rounds for v in r["compute_ms"]]
        phases[name] = {
            "description": rounds[0]["description"],
            "p50_ms": float(np.percentile(latency, 50)),
            "p99_ms": float(np.percentile(latency, 99)),
            "compute_p50_ms": float(np.percentile(compute, 50)),
            "compute_p99_ms": float(np.percentile(compute, 99)),
            "p50_ms_per_round": [float(np.percentile(r["latency_ms"], 50)) for r in rounds],
            "cpu_ms_per_request": {k: float(np.mean([r["cpu_ms_per_request"][k] for r in rounds])) for k in rounds[0]["cpu_ms_per_request"]},
            "expected_critical_path_ms": [r.get("expected_critical_path_ms") for r in rounds],
            "placement": rounds[-1].get("placement"),
            "agreement_with_in_process": float(np.mean([r["agreement_with_in_process"] for r in rounds])),
            "accuracy": float(np.mean([r["accuracy"] for r in rounds])),
            "degraded": int(sum(r["degraded"] for r in rounds)),
            "machine": [r["machine"] for r in rounds],
        }
    latency = {name: [v for r in rounds for v in r["latency_ms"]] for name, rounds in raw["phases"].items()}
    ratios = {}
    for other in ("count_worst", "equal_bundle", "teacher"):
        if other in latency and "speed" in latency:
            ratio, low, high = _ratio_ci(latency[other], latency["speed"])
            ratios[f"{other}_over_speed"] = {"p50_ratio": ratio, "ci95": [low, high]}
    return {
        "config": asdict(config),
        "phases": phases,
        "p50_ratios": ratios,
        "churn": raw.get("churn", {}),
        "accuracy": {name: {"runtime": p["accuracy"], "agreement_with_in_process": p["agreement_with_in_process"]}
                     for name, p in phases.items()},
        "machine_start": raw.get("machine_start"),
    }


def target_rows(r: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    ratios, phases, churn = r["p50_ratios"], r["phases"], r.get("churn", {})

    def ratio_row(key: str, name: str, target: float, anchor: str) -> None:
        if key in ratios:
            q = ratios[key]
            rows.append({"name": f"{name} (95% CI {q['ci95'][0]:.2f}-{q['ci95'][1]:.2f})", "ours": q["p50_ratio"],
                         "target": f">= {target}", "anchor": anchor, "met": q["p50_ratio"] >= target})

    ratio_row("count_worst_over_speed", "p50 latency, count placement (worst mapping) / speed placement", P50_TARGET_COUNT,
              "compute alone allows ~2x (issue)")
    ratio_row("equal_bundle_over_speed", "p50 latency, bundle for equal speeds / bundle for the fleet's speeds", P50_TARGET_EQUAL,
              "compute alone allows ~1.5-2x (issue)")
    for name, p in phases.items():
        rows.append({"name": f"{name}: p50 / p99 latency ms, critical-path compute p50 ms",
                     "ours": f"{p['p50_ms']:.1f} / {p['p99_ms']:.1f}, {p['compute_p50_ms']:.1f}", "target": None, "anchor": None, "met": None})
    for name in ("speed", "count_worst"):
        if name in phases:
            rows.append({"name": f"{name}: answers equal to the in-process ensemble (accuracy unchanged)",
                         "ours": phases[name]["agreement_with_in_process"], "target": "1.0", "anchor": None,
                         "met": phases[name]["agreement_with_in_process"] == 1.0})
    if churn:
        rows.append({"name": "churn (a device joins, a fast one is killed): requests lost", "ours": churn["lost"], "target": "0",
                     "anchor": None, "met": churn["lost"] == 0})
        recovered = churn.get("recovery_s")
        rows.append({"name": "churn: seconds until the expected critical path is within 10% of the optimum",
                     "ours": recovered, "target": f"<= {RECOVERY_TARGET_S:g}", "anchor": "a few seconds (issue)",
                     "met": recovered is not None and recovered <= RECOVERY_TARGET_S})
    return rows


def print_summary(r: dict[str, Any]) -> None:
    for name, p in r["phases"].items():
        cpu = ", ".join(f"{k} {v:.1f}" for k, v in p["cpu_ms_per_request"].items())
        print(f"  {name:<13} p50 {p['p50_ms']:7.1f} ms  p99 {p['p99_ms']:7.1f} ms  compute p50 {p['compute_p50_ms']:6.1f} ms  "
              f"accuracy {p['accuracy']:.3f}  CPU ms/request: {cpu}")
    for row in r["targets"]:
        if row["target"] is not None:
            ours = f"{row['ours']:.3g}" if isinstance(row["ours"], float) else row["ours"]
            print(f"  {row['name']}: {ours} (target {row['target']}) {'met' if row['met'] else 'NOT met'}")


def main(argv: list[str] | None = None) -> int:
    return bench_main(argv, module=__name__, doc=__doc__, run=run_benchmark, default_out="runs/bench/fleet_placement",
                      quick_help="a smaller teacher, one round of fewer requests: checks the benchmark runs")


if __name__ == "__main__":
    sys.exit(main())

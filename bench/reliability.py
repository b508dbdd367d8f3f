"""The reliability benchmark: malformed requests at volume, injected faults, sustained load, network faults.

    python -m coinfer.bench.reliability --out runs/bench/reliability [--quick]

A coordinator (`coinfer serve`, a DeViT bundle of 4 sub-models and a multi-point split bundle)
and 4 edge daemons (`coinfer edge`) run as real processes on loopback. Phases:

1. fuzz: at least 10,000 malformed requests (`malformed.CASES`, drawn at random) across the
   OIP front doors and the coinfer.v1 services of all five daemons, with a valid request every
   50; every one must be answered with a non-OK status within its deadline, no daemon may die;
2. load: 64 concurrent clients (half DeViT at the coordinator, half split at the edges) for
   5 minutes, bounded in count and time: errors, p50/p99, throughput, every daemon's memory;
3. faults: a stream of DeViT and split requests while an edge is killed (SIGKILL), restarted,
   another frozen (SIGSTOP) and thawed (SIGCONT), and the coordinator killed and restarted on
   its address while the edges keep running: every request's outcome, the edges'
   re-registration time and the coordinator's memory growth;
4. network faults (root only, on `server.testbed`): the same stream inside network namespaces
   while one device's link is cut and restored, one is throttled, one has delay and loss.

Quick mode shortens every phase (and says so in the report); the figures are then not the targets'.
"""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from coinfer.bench.script import bench_main, machine_snapshot, write_report

log = logging.getLogger(__name__)

_MACHINE_NOTE = "five daemons (1 torch thread each), the clients and other jobs share this machine"
"""What shared the machine with the benchmark (recorded beside the machine's load)."""

DEVIT = "rel-devit"
SPLIT = "rel-split"
NUM_EDGES = 4
MAX_MESSAGE_MB = 1
REREGISTER_TARGET_S = 5.0
MEMORY_STABLE_PCT = 10.0


@dataclass(frozen=True)
class ReliabilityConfig:
    """Sizes of one benchmark run."""

    quick: bool
    fuzz_requests: int
    fuzz_workers: int = 8
    fuzz_deadline_s: float = 10.0
    fuzz_valid_every: int = 50
    load_clients: int = 64
    load_s: float = 300.0
    load_max_requests: int = 1_000_000
    load_deadline_s: float = 30.0
    fault_step_s: float = 10.0
    """Seconds between fault events."""
    fault_deadline_s: float = 5.0
    testbed_step_s: float = 10.0

    @classmethod
    def make(cls, quick: bool) -> ReliabilityConfig:
        if quick:
            return cls(quick=True, fuzz_requests=2_000, load_s=20.0, fault_step_s=6.0, testbed_step_s=6.0)
        return cls(quick=False, fuzz_requests=10_000)


# Bundles and fleet ------------------------------------------------------------------------------


def build_bundles(folder: Path) -> tuple[Path, Path]:
    """Untrained DeViT (4 sub-models) and split bundles: reliability needs answers, not accuracy."""
    from coinfer.core.bundle import load_bundle
    from coinfer.core.errors import CoinferError
    from coinfer.bench.fixtures import DeViTBundleConfig, SplitBundleConfig, build_devit_bundle, build_split_bundle

    wanted = {
        folder / DEVIT: (DeViTBundleConfig(num_devices=NUM_EDGES), build_devit_bundle),
        folder / SPLIT: (SplitBundleConfig(model_name=SPLIT), build_split_bundle),
    }
    for path, (config, build) in wanted.items():
        try:
            if load_bundle(path).metadata.get("runtime_fixture") == json.loads(json.dumps(config.__dict__)):
                continue
        except CoinferError:
            pass
        build(path, config, overwrite=True)
    return folder / DEVIT, folder / SPLIT


def _coordinator_args(devit_timeout_ms: float) -> list[str]:
    return ["--max-message-mb", str(MAX_MESSAGE_MB), "--devit-timeout-ms", f"{devit_timeout_ms:g}", "--device-timeout-s", "3",
            "--heartbeat-s", "0.5"]


def _alive(process) -> bool:
    return process is not None and process.poll() is None


def _daemon_pids(fleet) -> dict[str, int]:
    """Live daemons by name; each coordinator instance is its own entry (a restart is a new process)."""
    coordinator = fleet.coordinator.process
    pids = {f"coordinator pid {coordinator.pid}": coordinator.pid} if _alive(coordinator) else {}
    pids.update({e.name: e.process.pid for e in fleet.edges if _alive(e.process)})
    return pids


def _internal_errors(fleet) -> int:
    """INTERNAL answers the daemons logged (each a bug: the error interceptor logs them with a traceback)."""
    return sum(path.read_text(errors="replace").count("internal error in ") for path in fleet.run_dir.glob("*.log"))


def _list_devices(address: str, timeout_s: float = 2.0):
    from coinfer.protos import coinfer_v1_pb2 as v1
    from coinfer.protos import coinfer_v1_pb2_grpc as v1_grpc
    from coinfer.serving.security import open_channel

    with open_channel(address) as channel:
        return v1_grpc.CoordinatorStub(channel).ListDevices(v1.ListDevicesRequest(), timeout=timeout_s).devices


# 1. Fuzz ------------------------------------------------------------------------------------------


def fuzz_phase(fleet, devit_path: Path, split_path: Path, config: ReliabilityConfig) -> dict[str, Any]:
    import grpc

    from coinfer.core.bundle import load_bundle
    from coinfer.serving.security import open_channel
    from coinfer.bench.malformed import CASES, target_from_bundles, valid_infer
    from coinfer.bench.raw_calls import send

    base = target_from_bundles(load_bundle(split_path), load_bundle(devit_path), max_message_bytes=MAX_MESSAGE_MB << 20)
    held = {d.info.name: d.assignment.submodels[0] for d in _list_devices(fleet.address) if d.assignment.submodels}
    roles = {"coordinator": (fleet.address, base)}
    for edge in fleet.edges:
        ref = held.get(edge.name)
        roles[edge.name] = (edge.address, replace(base, submodel=(ref.model_name, ref.bundle, ref.part) if ref else None))
    edge_roles = [name for name in roles if name != "coordinator" and roles[name][1].submodel]
    internal_before = _internal_errors(fleet)
    counter = iter(range(config.fuzz_requests))
    lock = threading.Lock()
    rows: list[tuple[str, str, str, bool, bool, float]] = []  # case, role, code, precise, hang, seconds
    valid_failures: list[str] = []

    def worker(w: int) -> None:
        rng = random.Random(1000 + w)
        channels = {role: open_channel(address) for role, (address, _) in roles.items()}
        try:
            while True:
                with lock:
                    n = next(counter, None)
                if n is None:
                    return
                case = rng.choice(CASES)
                role = {"oip": lambda: rng.choice(list(roles)), "coordinator": lambda: "coordinator",
                        "edge": lambda: rng.choice(edge_roles)}[case.service]()
                call = case.make(roles[role][1], rng)
                outcome = send(channels[role], call, config.fuzz_deadline_s)
                hang = outcome.code == grpc.StatusCode.DEADLINE_EXCEEDED or outcome.seconds >= config.fuzz_deadline_s
                precise = outcome.code in call.expected and bool(outcome.details)
                with lock:
                    rows.append((case.name, role, outcome.code.name, precise, hang, outcome.seconds))
                if n % config.fuzz_valid_every == 0:
                    check_role = rng.choice(list(roles))
                    valid = send(channels[check_role], valid_infer(roles[check_role][1], rng.choice([SPLIT, DEVIT]), rng), config.fuzz_deadline_s)
                    if valid.code != grpc.StatusCode.OK:
                        with lock:
                            valid_failures.append(f"{check_role}: {valid.code.name}: {valid.details[:120]}")
        finally:
            for channel in channels.values():
                channel.close()

    started = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(w,), daemon=True) for w in range(config.fuzz_workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    dead = [name for name, process in [("coordinator", fleet.coordinator.process), *((e.name, e.process) for e in fleet.edges)] if not _alive(process)]
    by_case: dict[str, dict[str, int]] = {}
    for case, _, code, _, _, _ in rows:
        by_case.setdefault(case, {}).setdefault(code, 0)
        by_case[case][code] += 1
    not_precise = sorted({f"{case}@{role}: {code}" for case, role, code, precise, _, _ in rows if not precise})
    seconds = [r[5] for r in rows]
    return {
        "requests": len(rows),
        "cases": len(CASES),
        "daemons": len(roles),
        "seconds": elapsed,
        "requests_per_s": len(rows) / elapsed,
        "answered_non_ok": sum(code != "OK" and not hang for _, _, code, _, hang, _ in rows),
        "answered_ok": sum(code == "OK" for _, _, code, _, _, _ in rows),
        "precise": sum(r[3] for r in rows),
        "hangs": sum(r[4] for r in rows),
        "crashes": len(dead),
        "dead_daemons": dead,
        "internal_errors_logged": _internal_errors(fleet) - internal_before,
        "valid_requests": config.fuzz_requests // config.fuzz_valid_every + 1,
        "valid_failures": len(valid_failures),
        "valid_failure_examples": valid_failures[:5],
        "latency_ms": {"p50": float(np.percentile(seconds, 50) * 1e3), "p99": float(np.percentile(seconds, 99) * 1e3), "max": max(seconds) * 1e3},
        "not_precise": not_precise[:20],
        "by_case": by_case,
    }


# 2. Sustained load --------------------------------------------------------------------------------


def load_phase(fleet, images: np.ndarray, config: ReliabilityConfig) -> dict[str, Any]:
    from coinfer.bench.faults import RequestStream, RssSampler, StreamConfig, summarise

    half = config.load_clients // 2
    stream_config = StreamConfig(
        fleet.address, DEVIT, tuple(e.address for e in fleet.edges), SPLIT, devit_clients=half,
        split_clients_per_edge=max(1, half // len(fleet.edges)), deadline_s=config.load_deadline_s,
        duration_s=config.load_s, max_requests=config.load_max_requests,
    )
    sampler = RssSampler(lambda: _daemon_pids(fleet), period_s=2.0 if config.quick else 5.0)
    sampler.start()
    started = time.monotonic()
    records = RequestStream(stream_config, images).run()
    elapsed = time.monotonic() - started
    sampler.stop()
    summary = summarise(records, elapsed)
    # Memory after the warm-up quarter (channels, caches and allocator pools fill first) to the end.
    memory = {name: sampler.growth(name, since_s=elapsed / 4) for name in sorted({n for _, n, _ in sampler.samples})}
    errors = summary["refused"] + summary["timed_out"] + summary["lost"]
    return {
        "clients": stream_config.devit_clients + stream_config.split_clients_per_edge * len(fleet.edges),
        "duration_s": elapsed,
        "shortened_for_quick_mode": config.quick,
        "bounds": {"duration_s": config.load_s, "max_requests": config.load_max_requests, "deadline_s": config.load_deadline_s},
        "errors": errors,
        "summary": summary,
        "memory": memory,
        "memory_stable": all(m.get("growth_pct", 0.0) <= MEMORY_STABLE_PCT for m in memory.values()),
        "rss_samples": [(round(t, 1), name, rss) for t, name, rss in sampler.samples],
    }


# 3. Process faults ----------------------------------------------------------------------------------


def _wait_registered(address: str, names: set[str], timeout_s: float) -> float | None:
    """Seconds until every device in ``names`` is listed live by the coordinator at ``address`` (None: never)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        try:
            if names <= {d.info.name for d in _list_devices(address) if d.live}:
                return time.monotonic() - started
        except Exception:  # noqa: BLE001 - not up yet
            pass
        time.sleep(0.05)
    return None


def _restart_edge(edge) -> float:
    """Start a (dead) edge again on its old address; seconds until it serves its split model."""
    from coinfer.serving.client import InferenceClient

    argv = list(edge.argv)
    argv[argv.index("--listen") + 1] = edge.address  # a device keeps its address across a restart
    edge.argv = argv
    started = time.monotonic()
    edge.start(timeout_s=120)
    with InferenceClient(edge.address, timeout_s=10) as client:
        client.wait_until_ready(SPLIT, timeout_s=120, poll_s=0.05)
    return time.monotonic() - started


def fault_phase(fleet, bundles: tuple[Path, Path], images: np.ndarray, config: ReliabilityConfig) -> dict[str, Any]:
    from coinfer.bench.faults import OUTCOMES, RequestStream, RssSampler, StreamConfig, summarise, wait_whole

    step = config.fault_step_s
    stream = RequestStream(
        StreamConfig(fleet.address, DEVIT, tuple(e.address for e in fleet.edges), SPLIT, devit_clients=4,
                     split_clients_per_edge=1, deadline_s=config.fault_deadline_s, duration_s=3600.0),
        images,
    )
    sampler = RssSampler(lambda: _daemon_pids(fleet), period_s=1.0)
    events: list[dict[str, Any]] = []
    names = {e.name for e in fleet.edges}

    def event(name: str, **extra: Any) -> None:
        events.append({"event": name, "at_s": time.monotonic() - stream.started_at, **extra})
        print(f"      {events[-1]['at_s']:6.1f} s  {name} {extra or ''}", flush=True)

    killed, frozen = fleet.edges[-1], fleet.edges[-2]
    sampler.start()
    stream.start()
    try:
        time.sleep(step)
        killed.process.send_signal(signal.SIGKILL)
        event(f"SIGKILL {killed.name}")
        time.sleep(step)
        event(f"restart {killed.name}")
        event(f"{killed.name} serving again", seconds=_restart_edge(killed))
        time.sleep(step)
        os.kill(frozen.process.pid, signal.SIGSTOP)
        event(f"SIGSTOP {frozen.name}")
        time.sleep(step)
        os.kill(frozen.process.pid, signal.SIGCONT)
        event(f"SIGCONT {frozen.name}")
        time.sleep(step)
        fleet.coordinator.process.send_signal(signal.SIGKILL)
        fleet.coordinator.process.wait()
        killed_at = time.monotonic()
        event("SIGKILL coordinator", sampler_s=sampler.elapsed_s())
        fleet.start_coordinator(bundles, _coordinator_args(1000))
        serving_at = time.monotonic()
        event("coordinator serving again", seconds=serving_at - killed_at, sampler_s=sampler.elapsed_s())
        reregistered = _wait_registered(fleet.address, names, 60.0)
        event("every edge registered again", seconds_after_serving=reregistered)
        time.sleep(step)
    finally:
        stream.stop()
        records = stream.join(config.fault_deadline_s + 10)
        sampler.stop()
        event("stream stopped")
    recovered = wait_whole(fleet.address, DEVIT, [e.address for e in fleet.edges], SPLIT, images[:1], 120.0)
    windows = {}
    for this, after in zip(events, events[1:]):
        inside = [r for r in records if this["at_s"] <= r.started_s < after["at_s"]]
        windows[this["event"]] = {
            kind: {o: sum(r.outcome == o for r in inside if r.kind == kind) for o in OUTCOMES} for kind in ("devit", "split")
        }
    coordinators = list(dict.fromkeys(n for _, n, _ in sampler.samples if n.startswith("coordinator")))  # in start order
    # The killed coordinator is measured until its kill (not while it dies), the new one from when it
    # serves (its start-up is not growth).
    kill_s = next(e["sampler_s"] for e in events if e["event"] == "SIGKILL coordinator")
    serve_s = next(e["sampler_s"] for e in events if e["event"] == "coordinator serving again")
    spans = {name: (0.0, kill_s - 0.5) if i == 0 else (serve_s, None) for i, name in enumerate(coordinators)}
    return {
        "requests": summarise(records, events[-1]["at_s"]),
        "deadline_s": config.fault_deadline_s,
        "events": events,
        "by_window": windows,
        "edge_restart_serving_s": next(e["seconds"] for e in events if e["event"].endswith("serving again") and "edge" in e["event"]),
        "coordinator_restart_s": next(e["seconds"] for e in events if e["event"] == "coordinator serving again"),
        "reregistration_s": reregistered,
        "seconds_to_whole_after_stream": recovered,
        "coordinator_memory": {name: sampler.growth(name, *spans[name]) for name in coordinators},
        "rss_samples": [(round(t, 1), name, rss) for t, name, rss in sampler.samples],
        "edge_memory": {e.name: sampler.growth(e.name) for e in fleet.edges},
    }


# 4. Network faults on the testbed ----------------------------------------------------------------------


def testbed_phase(bundles: tuple[Path, Path], run_dir: Path, config: ReliabilityConfig) -> dict[str, Any]:
    """The fault stream across shaped links (root, `ip` and `tc` only); see `netfaults.py`."""
    from coinfer.bench.netfaults import run_network_faults

    return run_network_faults(bundles, run_dir, step_s=config.testbed_step_s, deadline_s=config.fault_deadline_s)


# Driver -------------------------------------------------------------------------------------------------


def _row(name: str, ours: Any, target: Any, met: bool | None, anchor: str = "issue 8") -> dict[str, Any]:
    return {"name": name, "ours": ours, "target": target, "anchor": anchor, "met": met}


def target_rows(r: dict[str, Any]) -> list[dict[str, Any]]:
    """The figures beside their targets (quick runs leave the volume and duration targets unjudged)."""
    quick = r["config"]["quick"]
    rows = []
    if "fuzz" in r:
        f = r["fuzz"]
        rows += [
            _row("fuzz: malformed requests sent", f["requests"], ">= 10000" + (" - quick: shortened" if quick else ""),
                 None if quick else f["requests"] >= 10_000),
            _row("fuzz: daemons crashed", f["crashes"], 0, f["crashes"] == 0),
            _row("fuzz: hangs (no answer within the deadline)", f["hangs"], 0, f["hangs"] == 0),
            _row("fuzz: answered non-OK", f"{f['answered_non_ok']}/{f['requests']}", "all", f["answered_non_ok"] == f["requests"]),
            _row("fuzz: answered with the precise status", f"{f['precise']}/{f['requests']}", "all", f["precise"] == f["requests"]),
            _row("fuzz: valid requests in between refused", f["valid_failures"], 0, f["valid_failures"] == 0),
        ]
    if "load" in r:
        load, s = r["load"], r["load"]["summary"]
        rows += [
            _row(f"load: {load['clients']} clients x {load['duration_s']:.0f} s, errors", load["errors"],
                 "0 (300 s)" + (" - quick: shortened" if load["shortened_for_quick_mode"] else ""), load["errors"] == 0 and (load["duration_s"] >= 299 or None)),
            _row("load: p50 / p99 latency (ms)", f"{s['latency_ms']['p50']:.0f} / {s['latency_ms']['p99']:.0f}", "reported", None),
            _row("load: throughput (answers/s)", round(s["throughput_per_s"], 1), "reported", None),
            _row("load: daemon memory growth after warm-up (max %)", round(max((m.get("growth_pct", 0.0) for m in load["memory"].values()), default=0.0), 1),
                 f"<= {MEMORY_STABLE_PCT:g} % (stable)", load["memory_stable"]),
        ]
    if "faults" in r:
        fa, q = r["faults"], r["faults"]["requests"]
        coordinator_growth = ", ".join(f"{m.get('growth_mib', float('nan')):+.1f}" for m in fa["coordinator_memory"].values())
        rows += [
            _row("faults: requests sent / answered / degraded", f"{q['sent']} / {q['answered']} / {q['degraded']}", "reported", None),
            _row("faults: refused with a clear status / timed out", f"{q['refused']} / {q['timed_out']}", "reported", None),
            _row("faults: lost", q["lost"], 0, q["lost"] == 0),
            _row("faults: edge re-registration after coordinator restart (s)",
                 None if fa["reregistration_s"] is None else round(fa["reregistration_s"], 2), f"< {REREGISTER_TARGET_S:g}",
                 fa["reregistration_s"] is not None and fa["reregistration_s"] < REREGISTER_TARGET_S),
            _row("faults: coordinator RSS growth per instance (MiB)", coordinator_growth, "reported", None),
        ]
    if "network" in r and r["network"].get("status") == "ok":
        n = r["network"]["requests"]
        rows += [
            _row("network faults: sent / answered / degraded", f"{n['sent']} / {n['answered']} / {n['degraded']}", "reported", None),
            _row("network faults: refused / timed out", f"{n['refused']} / {n['timed_out']}", "reported", None),
            _row("network faults: lost", n["lost"], 0, n["lost"] == 0),
        ]
    return rows


def run_benchmark(out_dir: str | Path, quick: bool = False) -> dict[str, Any]:
    """Run every phase, print each figure beside its target, write ``reliability.json``; return the report."""
    from coinfer.core.data import load_dataset
    from coinfer.bench.faults import wait_whole
    from coinfer.bench.fleet import Fleet

    config = ReliabilityConfig.make(quick)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"config": asdict(config), "machine_before": machine_snapshot(_MACHINE_NOTE)}
    images = load_dataset("digits", seed=0).test.x
    print(f"[1/5] bundles in {out / 'bundles'}", flush=True)
    bundles = build_bundles(out / "bundles")
    fleet = Fleet(out / "fleet", num_edges=NUM_EDGES)
    try:
        print(f"      coordinator + {NUM_EDGES} edges as processes", flush=True)
        fleet.start_coordinator(bundles, _coordinator_args(10_000))
        fleet.start_edges(["--max-message-mb", str(MAX_MESSAGE_MB)])
        report["startup_s"] = wait_whole(fleet.address, DEVIT, [e.address for e in fleet.edges], SPLIT, images[:1], 180.0)
        print(f"[2/5] fuzz: {config.fuzz_requests} malformed requests, {config.fuzz_workers} senders", flush=True)
        report["fuzz"] = fuzz_phase(fleet, bundles[0], bundles[1], config)
        print(f"[3/5] load: {config.load_clients} clients for {config.load_s:.0f} s", flush=True)
        report["load"] = load_phase(fleet, images, config)
        print("[4/5] faults: kill, restart, freeze and thaw edges; kill and restart the coordinator", flush=True)
        fleet.start_coordinator(bundles, _coordinator_args(1000))
        wait_whole(fleet.address, DEVIT, [e.address for e in fleet.edges], SPLIT, images[:1], 180.0)
        report["faults"] = fault_phase(fleet, bundles, images, config)
    finally:
        report["exit_statuses"] = fleet.stop()
    print("[5/5] network faults on the testbed", flush=True)
    from coinfer.testbed import missing_requirements

    missing = missing_requirements()
    if missing:
        report["network"] = {"status": "skipped", "reason": "; ".join(missing)}
    else:
        try:
            report["network"] = {"status": "ok", **testbed_phase(bundles, out / "testbed", config)}
        except Exception as exc:  # noqa: BLE001 - the other phases' figures still count
            log.exception("network fault phase failed")
            report["network"] = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}
    report["machine_after"] = machine_snapshot(_MACHINE_NOTE)
    report["targets"] = target_rows(report)
    written = write_report(report, out / "reliability.json")
    print_summary(report)
    print(f"\nwritten to {written}", flush=True)
    return report


def print_summary(report: dict[str, Any]) -> None:
    print("\nreliability benchmark (ours vs target)" + (" - QUICK settings" if report["config"]["quick"] else ""))
    for row in report["targets"]:
        mark = {True: "ok  ", False: "MISS", None: "    "}[row["met"]]
        print(f"  {mark} {row['name']}: {row['ours']}  [target {row['target']}]")


def main(argv: list[str] | None = None) -> int:
    return bench_main(argv, module="coinfer.bench.reliability", doc=__doc__, run=run_benchmark,
                      default_out="runs/bench/reliability", quick_help="2,000 malformed requests, 20 s of load, 6 s between faults")


if __name__ == "__main__":
    sys.exit(main())

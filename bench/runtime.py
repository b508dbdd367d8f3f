"""The runtime benchmark: parity, overhead, load and faults with a coordinator and 4 edge daemons.

    python -m coinfer.bench.runtime --out runs/bench/runtime [--quick]

Everything runs on loopback as real processes (`Fleet`): `coinfer serve` with a small trained
DeViT bundle and a multi-point split bundle, and four `coinfer edge` daemons. Phases:

1. parity (live ``random`` scheduler, 100 ms slots): every digits test image through the runtime,
   one request each — split requests to the edges in turn (compared with the bundle run
   in-process at the split point each answer reports), DeViT requests to the coordinator
   (compared with the in-process ensemble);
2. overhead (coordinator restarted without a scheduler, split point 2; once every edge has
   registered again and holds one sub-model): sequential requests;
   overhead = end-to-end latency at the client - the critical-path compute the daemons report
   (``compute_ms``: slowest sub-model + fusion; head + encode + tail);
3. load: 16 concurrent clients (half DeViT at the coordinator, half split at the edges) for 60 s
   (10 s in quick mode);
4. faults: 1,000 DeViT requests from 4 clients with a 1 s deadline; one edge is killed (SIGKILL)
   after a quarter of them.

Each figure is printed beside its target and everything is written to ``runtime.json``.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from coinfer.bench.script import bench_main, machine_snapshot, write_report

log = logging.getLogger(__name__)

_MACHINE_NOTE = "all daemons (1 torch thread each) and the clients share this machine; other jobs may run on it too"
"""What shared the machine with the benchmark (recorded beside the machine's load)."""

OVERHEAD_TARGET_MS = 2.0
LOAD_CLIENTS = 16
FAULT_REQUESTS = 1000
FAULT_DEADLINE_S = 1.0
DEVIT = "bench-devit"
SPLIT = "bench-split"


@dataclass(frozen=True)
class BenchConfig:
    """Sizes of one benchmark run."""

    quick: bool
    load_s: float
    """Duration of the load phase."""
    overhead_requests: int
    """Sequential requests per model in the overhead phase."""
    devit_epochs: int
    split_epochs: int
    ae_steps: int

    @classmethod
    def make(cls, quick: bool) -> BenchConfig:
        if quick:
            return cls(quick=True, load_s=10.0, overhead_requests=200, devit_epochs=4, split_epochs=2, ae_steps=150)
        return cls(quick=False, load_s=60.0, overhead_requests=359, devit_epochs=8, split_epochs=4, ae_steps=400)


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"p50": float("nan"), "p90": float("nan"), "p99": float("nan"), "mean": float("nan")}
    p50, p90, p99 = np.percentile(values, [50, 90, 99])
    return {"p50": float(p50), "p90": float(p90), "p99": float(p99), "mean": float(np.mean(values))}


# Bundles --------------------------------------------------------------------------------------


def build_bundles(folder: Path, config: BenchConfig) -> tuple[Path, Path]:
    """The trained DeViT and split bundles (reused when already there)."""
    from coinfer.core.bundle import load_bundle
    from coinfer.core.errors import CoinferError
    from coinfer.bench.fixtures import DeViTBundleConfig, SplitBundleConfig, build_devit_bundle, build_split_bundle

    devit, split = folder / DEVIT, folder / SPLIT
    wanted = {
        devit: (DeViTBundleConfig(num_devices=4, embed_dim=48, depth=3, num_heads=3, fused_dim=96, epochs=config.devit_epochs), build_devit_bundle),
        split: (SplitBundleConfig(epochs=config.split_epochs, ae_steps=config.ae_steps, model_name=SPLIT), build_split_bundle),
    }
    for path, (bundle_config, build) in wanted.items():
        try:
            if load_bundle(path).metadata.get("runtime_fixture") == json.loads(json.dumps(bundle_config.__dict__)):
                print(f"      reusing {path}", flush=True)
                continue
        except CoinferError:
            pass  # missing or broken: build it
        started = time.perf_counter()
        build(path, bundle_config, overwrite=True)
        print(f"      built {path} in {time.perf_counter() - started:.1f} s", flush=True)
    return devit, split


# Phases ---------------------------------------------------------------------------------------


def parity_phase(fleet, devit_path: Path, split_path: Path, images: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    from coinfer.core.bundle import load_bundle
    from coinfer.serving.client import InferenceClient
    from coinfer.server.deployment import SplitDeployment
    from coinfer.server.devit_service import DeViTServing

    deployment = SplitDeployment(load_bundle(split_path))
    ensemble = DeViTServing(load_bundle(devit_path))
    reference_devit = ensemble.run_local(images)
    split_logits, points, devit_logits, degraded = [], [], [], 0
    clients = [InferenceClient(e.address, timeout_s=30) for e in fleet.edges]
    try:
        with InferenceClient(fleet.address, timeout_s=30) as coordinator:
            for i in range(len(images)):
                image = images[i : i + 1]
                reply = clients[i % len(clients)].infer(SPLIT, {"image": image}, request_id=f"parity-{i}")
                points.append(int(reply.parameters["split_point"]))
                split_logits.append(reply.outputs["logits"][0])
                fused = coordinator.infer(DEVIT, {"image": image})
                degraded += bool(fused.parameters["degraded"])
                devit_logits.append(fused.outputs["logits"][0])
    finally:
        for client in clients:
            client.close()
    split_logits_a = np.stack(split_logits)
    reference_split = np.concatenate([deployment.reference(images[i : i + 1], p) for i, p in enumerate(points)])
    devit_logits_a = np.stack(devit_logits)
    split_agree = int((split_logits_a.argmax(1) == reference_split.argmax(1)).sum())
    devit_agree = int((devit_logits_a.argmax(1) == reference_devit.argmax(1)).sum())
    return {
        "images": len(images),
        "split": {
            "agree": split_agree,
            "max_abs_logit_diff": float(np.abs(split_logits_a - reference_split).max()),
            "accuracy_runtime": float((split_logits_a.argmax(1) == labels).mean()),
            "accuracy_in_process": float((reference_split.argmax(1) == labels).mean()),
            "points_used": {str(p): points.count(p) for p in sorted(set(points))},
            "met": split_agree == len(images),
        },
        "devit": {
            "agree": devit_agree,
            "max_abs_logit_diff": float(np.abs(devit_logits_a - reference_devit).max()),
            "accuracy_runtime": float((devit_logits_a.argmax(1) == labels).mean()),
            "accuracy_in_process": float((reference_devit.argmax(1) == labels).mean()),
            "degraded": degraded,
            "met": devit_agree == len(images) and degraded == 0,
        },
    }


def _cpu_s(pids: dict[str, int]) -> dict[str, float]:
    """CPU seconds (user + system) each process has used so far."""
    import psutil

    return {name: sum(psutil.Process(pid).cpu_times()[:2]) for name, pid in pids.items()}


def _overhead(client, model: str, images: np.ndarray, count: int, pids: dict[str, int] | None = None) -> dict[str, Any]:
    e2e, compute, hops, client_hop, in_daemons, serial = [], [], [], [], [], []
    degraded = 0
    cpu_before: dict[str, float] = {}
    placements: Counter[str] = Counter()  # which devices answered (sub-model order): requests each
    for i in range(count + 10):
        if i == 10 and pids:
            cpu_before = _cpu_s(pids)
        image = images[i % len(images)][None]
        started = time.perf_counter()
        reply = client.infer(model, {"image": image})
        elapsed_ms = (time.perf_counter() - started) * 1e3
        if i < 10:
            continue  # warm-up: first calls open channels and fill caches
        p = reply.parameters
        e2e.append(elapsed_ms)
        compute.append(float(p["compute_ms"]))
        hops.append(elapsed_ms - float(p["compute_ms"]))
        # Where it goes: the client's own hop (e2e - time inside the front door), and what the
        # daemons spend besides compute (further hops, coding, waiting for a core).
        client_hop.append(elapsed_ms - float(p["server_ms"]))
        in_daemons.append(float(p["server_ms"]) - float(p["compute_ms"]))
        if "submodel_compute_total_ms" in p:
            # As if the sub-models had run one after another (what 4 edges on 2 busy cores come close to).
            serial.append(elapsed_ms - float(p["submodel_compute_total_ms"]) - float(p["fusion_ms"]))
        degraded += bool(p.get("degraded"))
        if "devices" in p:
            placements[str(p["devices"])] += 1
    overhead = _percentiles(hops)
    # What every daemon spent per request, compute included: on a machine with fewer cores than
    # daemons, this total over the cores bounds how fast a request can go.
    cpu_ms = {name: (used - cpu_before[name]) / count * 1e3 for name, used in _cpu_s(pids).items()} if cpu_before and pids else {}
    return {
        "requests": count,
        "overhead_ms": overhead,
        "e2e_ms": _percentiles(e2e),
        "compute_ms": _percentiles(compute),
        "client_hop_ms": _percentiles(client_hop),
        "inside_daemons_besides_compute_ms": _percentiles(in_daemons),
        **({"overhead_if_compute_serialised_ms": _percentiles(serial)} if serial else {}),
        **({"cpu_ms_per_request": {**cpu_ms, "all_daemons": sum(cpu_ms.values())}} if cpu_ms else {}),
        **({"devices_answering": dict(placements)} if placements else {}),
        "degraded": degraded,
        "target_ms": OVERHEAD_TARGET_MS,
        "met": overhead["p50"] <= OVERHEAD_TARGET_MS,
    }


def _noop_rtt_ms(client, count: int = 100) -> dict[str, float]:
    """ServerLive round trips: the bare cost of one gRPC hop on this machine right now."""
    times = []
    for _ in range(count):
        started = time.perf_counter()
        client.server_live()
        times.append((time.perf_counter() - started) * 1e3)
    return _percentiles(times)


def wait_until_spread(fleet, image: np.ndarray, timeout_s: float = 60.0) -> float:
    """Seconds until every DeViT sub-model answers from a device of its own.

    After a coordinator restart the edges register again one by one (each backs off between
    attempts), and until the last has, another device serves its sub-model as well: measuring
    then would time one device running two sub-models.
    """
    from coinfer.core.errors import Unavailable
    from coinfer.serving.client import InferenceClient

    started = time.perf_counter()
    with InferenceClient(fleet.address, timeout_s=30) as client:
        while True:
            devices = str(client.infer(DEVIT, {"image": image}).parameters["devices"]).split(",")
            if len(devices) == len(set(devices)) == fleet.num_edges:
                return time.perf_counter() - started
            if time.perf_counter() - started > timeout_s:
                raise Unavailable(f"after {timeout_s:.0f} s the DeViT sub-models still answer from {devices}, not {fleet.num_edges} distinct edges")
            time.sleep(0.2)


def fanout_call_cost(addresses: list[str], rounds: int = 500) -> dict[str, float]:
    """Caller CPU (ms) per fan-out of one health check to each address: grpc futures against
    blocking calls on kept threads (how the coordinator calls sub-models), alternated 3 times."""
    from concurrent.futures import ThreadPoolExecutor

    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    channels = [grpc.insecure_channel(a) for a in addresses]
    stubs = [health_pb2_grpc.HealthStub(c) for c in channels]
    request = health_pb2.HealthCheckRequest()
    pool = ThreadPoolExecutor(4 * len(stubs))

    def futures() -> None:
        for f in [s.Check.future(request, timeout=5) for s in stubs]:
            f.result()

    def pooled() -> None:
        for f in [pool.submit(s.Check, request, timeout=5) for s in stubs]:
            f.result()

    cost = {"grpc_futures": [], "thread_pool": []}
    try:
        for _ in range(50):
            futures(), pooled()
        for _ in range(3):
            for name, fan_out in (("grpc_futures", futures), ("thread_pool", pooled)):
                cpu = time.process_time()
                for _ in range(rounds):
                    fan_out()
                cost[name].append((time.process_time() - cpu) / rounds * 1e3)
    finally:
        pool.shutdown()
        for channel in channels:
            channel.close()
    return {name: float(np.median(values)) for name, values in cost.items()}


def overhead_phase(fleet, images: np.ndarray, count: int) -> dict[str, Any]:
    from coinfer.serving.client import InferenceClient

    pids = {d.name: d.process.pid for d in (fleet.coordinator, *fleet.edges) if d is not None and d.process is not None}
    with InferenceClient(fleet.address, timeout_s=30) as client:
        devit = _overhead(client, DEVIT, images, count, pids)
        devit["noop_grpc_rtt_ms"] = _noop_rtt_ms(client)
    with InferenceClient(fleet.edges[0].address, timeout_s=30) as client:
        split = _overhead(client, SPLIT, images, count, pids)
        split["noop_grpc_rtt_ms"] = _noop_rtt_ms(client)
    devit["fanout_cpu_ms"] = fanout_call_cost([e.address for e in fleet.edges])
    return {"devit": devit, "split": split}


def load_phase(fleet, images: np.ndarray, duration_s: float, quick: bool) -> dict[str, Any]:
    from coinfer.core.errors import CoinferError
    from coinfer.serving.client import InferenceClient

    results: dict[str, list[float]] = {DEVIT: [], SPLIT: []}
    errors: list[str] = []
    degraded = [0]
    lock = threading.Lock()
    stop_at = time.monotonic() + duration_s

    def client_loop(k: int) -> None:
        model = DEVIT if k % 2 == 0 else SPLIT
        address = fleet.address if model == DEVIT else fleet.edges[(k // 2) % len(fleet.edges)].address
        with InferenceClient(address, timeout_s=30) as client:
            i = k
            while time.monotonic() < stop_at:
                image = images[i % len(images)][None]
                i += LOAD_CLIENTS
                started = time.perf_counter()
                try:
                    reply = client.infer(model, {"image": image})
                except CoinferError as exc:
                    with lock:
                        errors.append(f"{model}: {exc}")
                    continue
                elapsed = (time.perf_counter() - started) * 1e3
                with lock:
                    results[model].append(elapsed)
                    degraded[0] += bool(reply.parameters.get("degraded"))

    started = time.monotonic()
    threads = [threading.Thread(target=client_loop, args=(k,), daemon=True) for k in range(LOAD_CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    per_model = {
        model: {"requests": len(lat), "throughput_per_s": len(lat) / elapsed, "latency_ms": _percentiles(lat)} for model, lat in results.items()
    }
    return {
        "clients": LOAD_CLIENTS,
        "duration_s": elapsed,
        "shortened_for_quick_mode": quick,
        "target": "16 clients for 60 s, no errors",
        "errors": len(errors),
        "error_examples": errors[:5],
        "devit_degraded": degraded[0],
        "devit": per_model[DEVIT],
        "split": per_model[SPLIT],
        "throughput_per_s": sum(len(v) for v in results.values()) / elapsed,
        "met": not errors and (duration_s >= 60 or quick),
    }


def fault_phase(fleet, images: np.ndarray) -> dict[str, Any]:
    from coinfer.core.errors import CoinferError, Unavailable
    from coinfer.serving.client import InferenceClient

    outcomes: list[dict[str, Any]] = []
    lock = threading.Lock()
    killed_at: list[float] = []
    victim = fleet.edges[-1]
    per_client = FAULT_REQUESTS // 4

    def client_loop(k: int) -> None:
        with InferenceClient(fleet.address, timeout_s=FAULT_DEADLINE_S) as client:
            for i in range(per_client):
                image = images[(k * per_client + i) % len(images)][None]
                started = time.monotonic()
                try:
                    reply = client.infer(DEVIT, {"image": image})
                    kind = "degraded" if reply.parameters["degraded"] else "full"
                    detail = str(reply.parameters.get("missing_reason", ""))
                except Unavailable as exc:
                    kind, detail = ("deadline" if "failed: DEADLINE_EXCEEDED" in str(exc) else "refused"), str(exc)
                except CoinferError as exc:
                    kind, detail = "error", str(exc)
                done = time.monotonic()
                with lock:
                    outcomes.append({"kind": kind, "latency_s": done - started, "started": started, "at": done, "detail": detail})
                    if len(outcomes) == FAULT_REQUESTS // 4 and not killed_at:
                        victim.process.send_signal(signal.SIGKILL)
                        killed_at.append(time.monotonic())

    threads = [threading.Thread(target=client_loop, args=(k,), daemon=True) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    kinds = [o["kind"] for o in outcomes]
    kill = killed_at[0] if killed_at else float("nan")
    # Recovery: requests sent after the kill are degraded until the dead device's sub-model has
    # moved (device timeout, then a download and load on a live device).
    after = sorted((o for o in outcomes if o["started"] > kill), key=lambda o: o["at"])
    recovered = next((o["at"] - kill for o in after if o["kind"] == "full"), None)
    latencies = [o["latency_s"] for o in outcomes]
    return {
        "requests": len(outcomes),
        "deadline_s": FAULT_DEADLINE_S,
        "killed": victim.name,
        "full": kinds.count("full"),
        "degraded": kinds.count("degraded"),
        "refused_unavailable": kinds.count("refused"),
        "past_deadline": kinds.count("deadline"),
        "other_errors": kinds.count("error"),
        "max_latency_s": max(latencies) if latencies else float("nan"),
        "latency_ms": _percentiles([x * 1e3 for x in latencies]),
        "seconds_from_kill_to_whole_answers_again": recovered,
        "degraded_after_kill": sum(o["kind"] == "degraded" for o in after),
        "refusal_examples": [o["detail"] for o in outcomes if o["kind"] == "refused"][:3],
        "degraded_examples": [o["detail"] for o in outcomes if o["kind"] == "degraded"][:2],
        "met": len(outcomes) == FAULT_REQUESTS and kinds.count("deadline") == 0 and kinds.count("error") == 0 and max(latencies) < FAULT_DEADLINE_S,
    }


# Driver ---------------------------------------------------------------------------------------


def run_benchmark(out_dir: str | Path, quick: bool = False) -> dict[str, Any]:
    """Run every phase, print each figure beside its target, write ``runtime.json``; return the report."""
    from coinfer.core.data import load_dataset
    from coinfer.bench.fleet import Fleet

    config = BenchConfig.make(quick)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"config": asdict(config), "machine_before": machine_snapshot(_MACHINE_NOTE)}
    print(f"[1/5] bundles in {out / 'bundles'}", flush=True)
    devit_path, split_path = build_bundles(out / "bundles", config)
    test = load_dataset("digits", seed=0).test
    fleet = Fleet(out / "fleet", num_edges=4)
    try:
        print("[2/5] parity: coordinator with the random scheduler (100 ms slots) + 4 edges", flush=True)
        started = time.perf_counter()
        fleet.start_coordinator([devit_path, split_path], ["--policy", "random", "--slot-ms", "100", "--device-timeout-s", "2",
                                                           "--decision-log", str(out / "decisions.jsonl")])
        fleet.start_edges()
        fleet.wait_ready([DEVIT], SPLIT, test.x[:1])
        report["startup_s"] = time.perf_counter() - started
        report["parity"] = parity_phase(fleet, devit_path, split_path, test.x, test.y)
        print("[3/5] overhead: coordinator restarted without a scheduler (split point 2)", flush=True)
        fleet.start_coordinator([devit_path, split_path], ["--split-point", "2", "--heartbeat-s", "0.5", "--device-timeout-s", "2"])
        fleet.wait_ready([DEVIT], SPLIT, test.x[:1])
        report["spread_after_restart_s"] = wait_until_spread(fleet, test.x[:1])
        report["overhead"] = overhead_phase(fleet, test.x, config.overhead_requests)
        print(f"[4/5] load: {LOAD_CLIENTS} clients for {config.load_s:.0f} s", flush=True)
        report["load"] = load_phase(fleet, test.x, config.load_s, quick)
        print(f"[5/5] faults: {FAULT_REQUESTS} DeViT requests, {fleet.edges[-1].name} killed after {FAULT_REQUESTS // 4}", flush=True)
        report["faults"] = fault_phase(fleet, test.x)
    finally:
        report["exit_statuses"] = fleet.stop()
    report["machine_after"] = machine_snapshot(_MACHINE_NOTE)
    report["targets"] = target_rows(report)
    written = write_report(report, out / "runtime.json", default=float)
    print_summary(report)
    print(f"\nwritten to {written}", flush=True)
    return report


def target_rows(r: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows {name, ours, target, anchor, met} for `coinfer bench`'s report."""
    p, o, load, f = r["parity"], r["overhead"], r["load"], r["faults"]
    n = p["images"]
    rows = [
        {"name": "parity, DeViT: predictions = in-process ensemble", "ours": f"{p['devit']['agree']}/{n}", "target": f"{n}/{n}", "anchor": None, "met": p["devit"]["met"]},
        {"name": "parity, split (live scheduler): predictions = in-process split model", "ours": f"{p['split']['agree']}/{n}", "target": f"{n}/{n}", "anchor": None, "met": p["split"]["met"]},
        {"name": "overhead median, DeViT, 4 edges on loopback (ms)", "ours": o["devit"]["overhead_ms"]["p50"], "target": "<= 2", "anchor": None, "met": o["devit"]["met"]},
        {"name": "overhead median, split (ms)", "ours": o["split"]["overhead_ms"]["p50"], "target": "<= 2", "anchor": None, "met": o["split"]["met"]},
        {
            "name": f"load: {load['clients']} clients x {load['duration_s']:.0f} s, errors",
            "ours": load["errors"],
            "target": "0 over 60 s" + (" (quick: shortened)" if load["shortened_for_quick_mode"] else ""),
            "anchor": None,
            "met": load["met"],
        },
        {"name": "load throughput (req/s)", "ours": load["throughput_per_s"], "target": "reported", "anchor": None, "met": None},
        {"name": "load p50/p99 DeViT (ms)", "ours": f"{load['devit']['latency_ms']['p50']:.1f}/{load['devit']['latency_ms']['p99']:.1f}", "target": "reported", "anchor": None, "met": None},
        {"name": "load p50/p99 split (ms)", "ours": f"{load['split']['latency_ms']['p50']:.1f}/{load['split']['latency_ms']['p99']:.1f}", "target": "reported", "anchor": None, "met": None},
        {
            "name": f"faults: {f['requests']} DeViT requests, 1 of 4 edges killed",
            "ours": f"{f['full']} full, {f['degraded']} degraded, {f['refused_unavailable']} refused, {f['past_deadline']} late",
            "target": "all answered or refused, none past deadline",
            "anchor": "DeViT: every device must answer",
            "met": f["met"],
        },
    ]
    return rows


def print_summary(r: dict[str, Any]) -> None:
    p, o, load, f = r["parity"], r["overhead"], r["load"], r["faults"]
    n = p["images"]
    rows = [
        ("parity, DeViT (argmax = in-process ensemble)", f"{p['devit']['agree']}/{n}, max |dlogit| {p['devit']['max_abs_logit_diff']:.1e}, degraded {p['devit']['degraded']}", f"{n}/{n}", p["devit"]["met"]),
        ("parity, split (argmax = in-process, live points)", f"{p['split']['agree']}/{n}, max |dlogit| {p['split']['max_abs_logit_diff']:.1e}, points {p['split']['points_used']}", f"{n}/{n}", p["split"]["met"]),
        *(
            (
                f"overhead median, {label}",
                f"{o[key]['overhead_ms']['p50']:.2f} ms (e2e {o[key]['e2e_ms']['p50']:.2f}, compute {o[key]['compute_ms']['p50']:.2f}; "
                f"client hop {o[key]['client_hop_ms']['p50']:.2f}, inside daemons {o[key]['inside_daemons_besides_compute_ms']['p50']:.2f}; "
                f"bare gRPC round trip {o[key]['noop_grpc_rtt_ms']['p50']:.2f}"
                + (f"; with sub-model compute summed {o[key]['overhead_if_compute_serialised_ms']['p50']:.2f}" if "overhead_if_compute_serialised_ms" in o[key] else "")
                + (f"; daemons' CPU per request {o[key]['cpu_ms_per_request']['all_daemons']:.2f} ms, coordinator {o[key]['cpu_ms_per_request']['coordinator']:.2f}"
                   if "cpu_ms_per_request" in o[key] else "")
                + (f"; caller CPU per 4-call fan-out: grpc futures {o[key]['fanout_cpu_ms']['grpc_futures']:.2f} ms, thread pool {o[key]['fanout_cpu_ms']['thread_pool']:.2f}"
                   if "fanout_cpu_ms" in o[key] else "")
                + ")",
                "<= 2 ms",
                o[key]["met"],
            )
            for key, label in (("devit", "DeViT"), ("split", "split"))
        ),
        (
            f"load, {load['clients']} clients x {load['duration_s']:.0f} s",
            f"{load['errors']} errors, {load['throughput_per_s']:.1f} req/s; DeViT p50/p99 {load['devit']['latency_ms']['p50']:.1f}/{load['devit']['latency_ms']['p99']:.1f} ms, "
            f"split p50/p99 {load['split']['latency_ms']['p50']:.1f}/{load['split']['latency_ms']['p99']:.1f} ms",
            "60 s, 0 errors" + (" (quick: shortened)" if load["shortened_for_quick_mode"] else ""),
            load["met"],
        ),
        (
            f"faults, {f['requests']} DeViT requests, 1 of 4 killed",
            f"{f['full']} full, {f['degraded']} degraded, {f['refused_unavailable']} refused, {f['past_deadline']} past deadline, "
            f"max {f['max_latency_s'] * 1e3:.0f} ms; whole answers again {f['seconds_from_kill_to_whole_answers_again'] or float('nan'):.1f} s after the kill",
            f"all answered/refused, none > {f['deadline_s'] * 1e3:.0f} ms",
            f["met"],
        ),
    ]
    print("\nruntime benchmark (ours vs target)")
    for name, ours, target, met in rows:
        print(f"  {'ok ' if met else 'MISS'} {name}: {ours}  [target {target}]")


def main(argv: list[str] | None = None) -> int:
    return bench_main(argv, module="coinfer.bench.runtime", doc=__doc__, run=run_benchmark,
                      default_out="runs/bench/runtime", quick_help="shorter load phase (10 s) and fewer training epochs")


if __name__ == "__main__":
    sys.exit(main())

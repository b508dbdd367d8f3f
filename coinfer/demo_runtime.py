"""Stage 4 of `coinfer demo`: the runtime on loopback, as separate processes.

A coordinator serves the DeViT bundle and the split bundle with the trained MAHPPO policy as
its live scheduler; 4 edge daemons register, receive their parts over gRPC and serve. The test
split goes through the Open Inference Protocol twice — the decomposed model via the
coordinator, the split model via the edges — then one edge is killed and the decomposed model
keeps answering, degraded.
"""

from __future__ import annotations

import json
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

DEADLINE_S = 20.0
READY_TIMEOUT_S = 120.0


def _percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def run_runtime_stage(runs: Path, devit: Path, split: Path, mahppo: Path, scenario: Path, devices: int) -> dict[str, Any]:
    from tqdm.auto import tqdm

    from coinfer.core.data import load_dataset
    from coinfer.core.errors import CoinferError
    from coinfer.server.catalog import ModelCatalog
    from coinfer.serving.client import InferenceClient
    from coinfer.bench.processes import DaemonProcess, coinfer_command

    work = runs / "runtime"
    work.mkdir(parents=True, exist_ok=True)
    # The coordinator appends to its decision log: start it empty so the count is this run's.
    (work / "decisions.jsonl").unlink(missing_ok=True)
    catalog = ModelCatalog.load([devit, split])
    devit_name = next(iter(catalog.devit))
    split_name = catalog.split.model_name
    test = load_dataset("digits").test
    coordinator = DaemonProcess(
        "coordinator",
        coinfer_command(
            "serve", "--bundle", str(devit), "--bundle", str(split), "--listen", "127.0.0.1:0",
            "--port-file", str(work / "coordinator.addr"), "--threads", "1",
            "--policy", str(mahppo / "policy.json"), "--scenario", str(scenario), "--slot-ms", "500",
            "--decision-log", str(work / "decisions.jsonl"), "--device-timeout-s", "3", "--devit-timeout-ms", "3000",
        ),
        work / "coordinator.addr", work / "coordinator.log",
    )
    edges = [DaemonProcess(f"edge-{i}", [], work / f"edge-{i}.addr", work / f"edge-{i}.log") for i in range(devices)]
    latencies_ms: list[float] = []
    errors: list[str] = []
    result: dict[str, Any] = {}
    try:
        address = coordinator.start()
        print(f"   coordinator on {address}; logs in {work}", flush=True)
        for i, edge in enumerate(edges):
            edge.argv = coinfer_command(
                "edge", "--coordinator", address, "--name", f"device-{i}", "--listen", "127.0.0.1:0", "--threads", "1",
                "--port-file", str(edge.port_file), "--cache-dir", str(work / f"cache-{i}"), "--distance-m", str(20 + 15 * i),
            )
        with ThreadPoolExecutor(devices) as pool:
            list(pool.map(lambda e: e.start(timeout_s=READY_TIMEOUT_S), edges))
        print(f"   {devices} edge daemons up: " + ", ".join(e.address for e in edges), flush=True)
        with InferenceClient(address, timeout_s=DEADLINE_S) as client:
            client.wait_until_ready(devit_name, timeout_s=READY_TIMEOUT_S)
            deadline = time.monotonic() + READY_TIMEOUT_S
            while client.infer(devit_name, {"image": test.x[:1]}).parameters["degraded"]:
                if time.monotonic() > deadline:
                    raise CoinferError("the DeViT sub-models never all loaded on the edges")
                time.sleep(0.2)
        for edge in edges:
            with InferenceClient(edge.address, timeout_s=DEADLINE_S) as client:
                client.wait_until_ready(split_name, timeout_s=READY_TIMEOUT_S)
        print("   every part deployed over gRPC and loaded", flush=True)

        def one(target: str, model: str, i: int) -> tuple[int | None, dict]:
            with_client = clients[target]
            t0 = time.perf_counter()
            try:
                reply = with_client.infer(model, {"image": test.x[i : i + 1]})
            except CoinferError as exc:
                errors.append(f"{model} image {i}: {exc}")
                return None, {}
            latencies_ms.append((time.perf_counter() - t0) * 1e3)
            return int(np.argmax(reply.outputs["logits"][0])), reply.parameters

        targets = [address] + [e.address for e in edges]
        clients = {t: InferenceClient(t, timeout_s=DEADLINE_S) for t in targets}
        try:
            n = len(test)
            devit_pred = [one(address, devit_name, i)[0] for i in tqdm(range(n), desc="decomposed model via the coordinator", leave=False)]
            split_out = [one(edges[i % devices].address, split_name, i) for i in tqdm(range(n), desc="split model via the edges", leave=False)]
            split_pred = [p for p, _ in split_out]
            points = [int(params["split_point"]) for _, params in split_out if "split_point" in params]
            print(f"   killing {edges[-1].name} (SIGKILL)", flush=True)
            edges[-1].process.send_signal(signal.SIGKILL)
            degraded_n = min(100, n)
            degraded = [one(address, devit_name, i) for i in tqdm(range(degraded_n), desc="decomposed model, one edge down", leave=False)]
        finally:
            for c in clients.values():
                c.close()
        decisions = (work / "decisions.jsonl").read_text().splitlines() if (work / "decisions.jsonl").exists() else []
        labels = test.y
        result = {
            "runtime_requests": 2 * n + degraded_n,
            "runtime_errors": len(errors),
            "latency_ms_p50": _percentile(latencies_ms, 50),
            "latency_ms_p99": _percentile(latencies_ms, 99),
            "devit_runtime_accuracy": float(np.mean([p == y for p, y in zip(devit_pred, labels)])),
            "split_runtime_accuracy": float(np.mean([p == y for p, y in zip(split_pred, labels)])),
            "degraded_answers": sum(1 for _, params in degraded if params.get("degraded")),
            "degraded_accuracy": float(np.mean([p == y for (p, _), y in zip(degraded, labels[:degraded_n])])),
            "degraded_missing": sorted({params.get("missing", "") for _, params in degraded if params.get("degraded")}),
            "split_points_used": {str(k): points.count(k) for k in sorted(set(points))},
            "scheduler_decisions": len(decisions),
            "runtime_error_samples": errors[:5],
        }
        (work / "runtime.json").write_text(json.dumps(result, indent=2) + "\n")
        return result
    finally:
        for edge in edges:
            edge.stop()
        coordinator.stop()

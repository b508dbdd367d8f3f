"""`coinfer demo`, walking-skeleton stage: one coordinator, one edge, the digits test split.

Builds (or reuses) the skeleton split bundle under ``--runs``, starts `coinfer serve` and
`coinfer edge` as child processes on free loopback ports, streams every test image through the
edge's Open Inference Protocol front door one request at a time, prints accuracy, agreement
with the in-process FP32 model and latency percentiles, and stops both daemons.
"""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from coinfer.core.errors import FailedPrecondition

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SkeletonReport:
    """What the demo measured over the test split."""

    images: int
    accuracy: float
    """Top-1 accuracy of the served split model."""
    reference_accuracy: float
    """Top-1 accuracy of the same model run whole, in FP32, in this process."""
    agreement: float
    """Fraction of images where served and reference predictions agree."""
    latency_ms_p50: float
    latency_ms_p90: float
    latency_ms_p99: float
    payload_bytes_mean: float
    head_ms_mean: float
    tail_ms_mean: float


def _reference_logits(bundle, images: np.ndarray) -> np.ndarray:
    import torch

    from coinfer.core.data import to_float

    head, tail = bundle.load_module("head"), bundle.load_module("tail")
    with torch.inference_mode():
        return tail(head(to_float(images))).numpy()


def stream_test_split(address: str, model_name: str, images: np.ndarray, labels: np.ndarray, reference: np.ndarray) -> SkeletonReport:
    """Send each image as its own request, as a camera would, and summarise."""
    from coinfer.serving.client import InferenceClient

    predictions, latencies_ms, payloads, heads, tails = [], [], [], [], []
    with InferenceClient(address, timeout_s=10.0) as client:
        client.wait_until_ready(model_name, timeout_s=120)
        for i in range(len(images)):
            started = time.perf_counter()
            reply = client.infer(model_name, {"image": images[i : i + 1]}, request_id=f"test-{i}")
            latencies_ms.append((time.perf_counter() - started) * 1e3)
            predictions.append(int(reply.outputs["logits"].argmax(1)[0]))
            payloads.append(float(reply.parameters.get("payload_bytes", 0)))
            heads.append(float(reply.parameters.get("head_ms", 0.0)))
            tails.append(float(reply.parameters.get("tail_ms", 0.0)))
    predicted = np.asarray(predictions)
    p50, p90, p99 = np.percentile(latencies_ms, [50, 90, 99])
    return SkeletonReport(
        images=len(images),
        accuracy=float((predicted == labels).mean()),
        reference_accuracy=float((reference.argmax(1) == labels).mean()),
        agreement=float((predicted == reference.argmax(1)).mean()),
        latency_ms_p50=float(p50),
        latency_ms_p90=float(p90),
        latency_ms_p99=float(p99),
        payload_bytes_mean=float(np.mean(payloads)),
        head_ms_mean=float(np.mean(heads)),
        tail_ms_mean=float(np.mean(tails)),
    )


def run_walking_skeleton(args: argparse.Namespace) -> int:
    """Entry point of `coinfer demo` (walking-skeleton stage)."""
    from coinfer.core.data import load_dataset
    from coinfer.bench.processes import DaemonProcess, coinfer_command
    from coinfer.skeleton import SkeletonConfig, ensure_skeleton_bundle

    runs = Path(args.runs)
    work = runs / "skeleton"
    print(f"[1/4] skeleton split bundle in {work / 'bundle'}", flush=True)
    started = time.perf_counter()
    bundle = ensure_skeleton_bundle(work / "bundle", SkeletonConfig(epochs=3), fresh=bool(getattr(args, "fresh", False)))
    meta = bundle.metadata
    model_name = str(meta["model_name"])
    print(
        f"      {model_name}: split at point {meta['split_point']} ({meta['split_point_name']}), "
        f"{meta['codec_bits']}-bit feature, test accuracy in FP32 {meta['test_accuracy']:.4f} "
        f"({time.perf_counter() - started:.1f} s)",
        flush=True,
    )
    coordinator = DaemonProcess(
        "coordinator",
        coinfer_command("serve", "--bundle", str(bundle.path), "--listen", "127.0.0.1:0", "--port-file", str(work / "coordinator.addr"), "--threads", "1"),
        work / "coordinator.addr",
        work / "coordinator.log",
    )
    edge = DaemonProcess("edge", [], work / "edge.addr", work / "edge.log")
    try:
        print("[2/4] starting `coinfer serve`", flush=True)
        coordinator_address = coordinator.start()
        print(f"      coordinator on {coordinator_address} (log: {coordinator.log_path})", flush=True)
        edge.argv = coinfer_command(
            "edge", "--coordinator", coordinator_address, "--name", "demo-edge-1", "--listen", "127.0.0.1:0",
            "--port-file", str(work / "edge.addr"), "--cache-dir", str(work / "edge-cache"), "--threads", "1",
        )
        print("[3/4] starting `coinfer edge`", flush=True)
        edge_address = edge.start()
        print(f"      edge on {edge_address} (log: {edge.log_path})", flush=True)
        splits = load_dataset(str(meta.get("dataset", "digits")), seed=int(meta.get("skeleton", {}).get("seed", 0)))
        reference = _reference_logits(bundle, splits.test.x)
        print(f"[4/4] streaming {len(splits.test)} test images through the edge, one request each", flush=True)
        report = stream_test_split(edge_address, model_name, splits.test.x, splits.test.y, reference)
    finally:
        edge_status = edge.stop()
        coordinator_status = coordinator.stop()
    print(
        f"\naccuracy {report.accuracy:.4f} over {report.images} images "
        f"(FP32 in-process {report.reference_accuracy:.4f}, agreement {report.agreement:.4f})\n"
        f"latency per request: p50 {report.latency_ms_p50:.2f} ms, p90 {report.latency_ms_p90:.2f} ms, "
        f"p99 {report.latency_ms_p99:.2f} ms\n"
        f"uplink payload {report.payload_bytes_mean:.0f} bytes/image; head {report.head_ms_mean:.2f} ms on the edge, "
        f"tail {report.tail_ms_mean:.2f} ms on the coordinator",
        flush=True,
    )
    if edge_status != 0 or coordinator_status != 0:
        raise FailedPrecondition(f"daemons did not stop cleanly (edge {edge_status}, coordinator {coordinator_status})")
    print("both daemons stopped cleanly", flush=True)
    return 0

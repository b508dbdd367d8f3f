"""`coinfer serve` with a live scheduler and four `coinfer edge` daemons as real processes.

The coordinator serves a DeViT bundle and a multi-point split bundle, and runs the ``random``
baseline every 200 ms, so devices change split point, sub-channel and power all the time:
every answer must still be what the bundle computes in-process at the point the answer says
it used. A stock Triton client must work against both daemons; killing an edge mid-run must
leave every request answered (degraded or not) or refused with a reason, none past its deadline.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import signal
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from coinfer.core.errors import CoinferError, Unavailable
from coinfer.serving.client import InferenceClient
from coinfer.bench.processes import DaemonProcess, coinfer_command
from quantised import assert_float_close, expected_logits, split_halves

pytestmark = pytest.mark.slow
DEADLINE_S = 20.0
DEVIT = "digits-devit"
SPLIT = "digits-split"


@pytest.fixture(scope="module")
def fleet(devit_bundle, split_bundle, tmp_path_factory):
    """(coordinator process, [edge processes], run folder)."""
    run = tmp_path_factory.mktemp("fleet")
    coordinator = DaemonProcess(
        "coordinator",
        coinfer_command(
            "serve", "--bundle", str(devit_bundle.path), "--bundle", str(split_bundle.path), "--listen", "127.0.0.1:0",
            "--port-file", str(run / "coordinator.addr"), "--threads", "1", "--policy", "random", "--slot-ms", "200",
            "--decision-log", str(run / "decisions.jsonl"), "--device-timeout-s", "3", "--devit-timeout-ms", "2000",
        ),
        run / "coordinator.addr",
        run / "coordinator.log",
    )
    edges = [DaemonProcess(f"edge-{i}", [], run / f"edge-{i}.addr", run / f"edge-{i}.log") for i in range(4)]
    try:
        address = coordinator.start()
        for i, edge in enumerate(edges):
            edge.argv = coinfer_command(
                "edge", "--coordinator", address, "--name", f"proc-{i}", "--listen", "127.0.0.1:0", "--threads", "1",
                "--port-file", str(edge.port_file), "--cache-dir", str(run / f"cache-{i}"), "--distance-m", str(20 + 10 * i),
            )
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda e: e.start(timeout_s=90), edges))
        _wait_whole(address, edges)
        yield coordinator, edges, run
    finally:
        statuses = [e.stop() for e in edges]
        coordinator_status = coordinator.stop()
    assert coordinator_status == 0, coordinator.log_tail()
    # Every edge drains and exits 0 (the one the fault test kills is started again by it).
    assert statuses == [0, 0, 0, 0], [e.log_tail() for e in edges]


def _wait_whole(address: str, edges: list[DaemonProcess]) -> None:
    """Until the DeViT answers with every sub-model and every edge serves the split model."""
    with InferenceClient(address, timeout_s=DEADLINE_S) as client:
        client.wait_until_ready(DEVIT, timeout_s=90)
        deadline = time.monotonic() + 90
        while client.infer(DEVIT, {"image": np.zeros((1, 1, 8, 8), np.uint8)}).parameters["degraded"]:
            assert time.monotonic() < deadline, "sub-models never all loaded"
            time.sleep(0.2)
    for edge in edges:
        with InferenceClient(edge.address, timeout_s=DEADLINE_S) as client:
            client.wait_until_ready(SPLIT, timeout_s=90)


def test_live_scheduling_changes_points_and_answers_stay_exact(fleet, split_bundle, digits_test) -> None:
    _, edges, run = fleet
    halves = functools.cache(lambda point: split_halves(split_bundle, point))
    seen: dict[str, set[int]] = {}
    clients = [InferenceClient(e.address, timeout_s=DEADLINE_S) for e in edges]
    # At least 48 answers, and on until the scheduler (a decision every 200 ms) has used three points.
    deadline = time.monotonic() + 120
    i = 0
    try:
        while i < 48 or len(set().union(*seen.values())) < 3:
            assert time.monotonic() < deadline, f"the scheduler hardly moved anyone: {seen}"
            image = digits_test.x[i % len(digits_test.x)][None]
            reply = clients[i % 4].infer(SPLIT, {"image": image})
            point = int(reply.parameters["split_point"])
            expected_logits(halves(point), image).check(reply.outputs["logits"], f"image {i} at point {point}")
            seen.setdefault(edges[i % 4].name, set()).add(point)
            i += 1
            time.sleep(0.02)  # spreads the requests over several of the scheduler's slots
    finally:
        for client in clients:
            client.close()
    lines = [json.loads(line) for line in (run / "decisions.jsonl").read_text().splitlines()]
    assert len(lines) >= 5 and lines[-1]["policy"] == "random" and lines[-1]["scenario"] == "mahppo-paper-resnet18"
    last = lines[-1]
    assert sorted(d["name"] for d in last["devices"]) == [f"proc-{i}" for i in range(4)]
    assert all(0 <= d["split_point"] <= 5 and d["sub_channel"] in (0, 1) and 0 < d["power_w"] <= 1 for d in last["devices"])


_TRITON_SCRIPT = textwrap.dedent(
    """
    import sys, numpy as np
    import tritonclient.grpc as triton
    out = {}
    images = np.load(sys.argv[1])
    for address, model in zip(sys.argv[2::2], sys.argv[3::2]):
        client = triton.InferenceServerClient(address)
        meta = client.get_model_metadata(model, as_json=True)
        assert meta["inputs"][0] == {"name": "image", "datatype": "UINT8", "shape": ["-1", "1", "8", "8"]}, meta
        inp = triton.InferInput("image", list(images.shape), "UINT8")
        inp.set_data_from_numpy(images)
        result = client.infer(model, [inp], outputs=[triton.InferRequestedOutput("logits")], client_timeout=20)
        out[model] = result.as_numpy("logits")
    np.savez(sys.argv[1] + ".out.npz", **out)
    """
)


@pytest.mark.skipif(importlib.util.find_spec("tritonclient") is None, reason="needs tritonclient[grpc]")
def test_a_stock_triton_client_works_against_both_daemons(fleet, digits_test, tmp_path) -> None:
    coordinator, edges, _ = fleet
    images = digits_test.x[:4]
    np.save(tmp_path / "images.npy", images)
    proc = subprocess.run(
        [sys.executable, "-c", _TRITON_SCRIPT, str(tmp_path / "images.npy"), coordinator.address, DEVIT, edges[0].address, SPLIT],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = np.load(tmp_path / "images.npy.out.npz")
    with InferenceClient(coordinator.address, timeout_s=DEADLINE_S) as client:
        ours = client.infer(DEVIT, {"image": images}).outputs["logits"]
    assert_float_close(out[DEVIT], ours, "DeViT logits through Triton")
    assert out[SPLIT].shape == (4, 10) and np.isfinite(out[SPLIT]).all()


def test_killing_an_edge_mid_run_answers_or_refuses_every_request_in_time(fleet, digits_test) -> None:
    coordinator, edges, _ = fleet
    deadline_s = 3.0
    outcomes: list[tuple[str, float, str]] = []
    lock = threading.Lock()
    killed = threading.Event()

    def worker(k: int) -> None:
        with InferenceClient(coordinator.address, timeout_s=deadline_s) as client:
            for i in range(25):
                started = time.monotonic()
                try:
                    reply = client.infer(DEVIT, {"image": digits_test.x[(k * 25 + i) % len(digits_test.x)][None]})
                    kind = "degraded" if reply.parameters["degraded"] else "full"
                    detail = str(reply.parameters.get("missing_reason", ""))
                except Unavailable as exc:
                    kind, detail = "refused", str(exc)
                except CoinferError as exc:
                    kind, detail = "error", str(exc)
                with lock:
                    outcomes.append((kind, time.monotonic() - started, detail))
                    if len(outcomes) == 30 and not killed.is_set():
                        edges[3].process.send_signal(signal.SIGKILL)
                        killed.set()

    try:
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(worker, range(4)))
    finally:
        if killed.is_set():  # the fleet as the other tests expect it, whichever order they run in
            edges[3].stop()  # reaps the killed process
            edges[3].start(timeout_s=90)
            _wait_whole(coordinator.address, edges)
    assert killed.is_set() and len(outcomes) == 100
    kinds = [k for k, _, _ in outcomes]
    # The client's own deadline passing would read "ModelInfer on ... failed: DEADLINE_EXCEEDED".
    errors = [(k, d) for k, _, d in outcomes if k == "error" or "failed: DEADLINE_EXCEEDED" in d]
    assert not errors, errors[:3]
    assert max(t for _, t, _ in outcomes) < deadline_s, "an answer came after its deadline"
    assert "degraded" in kinds[30:], "the kill left no trace"
    degraded = [d for k, _, d in outcomes if k == "degraded"]
    assert all(d.startswith("sub-model ") for d in degraded), "a degraded answer must say what is missing and why"
    assert any("proc-3" in d for d in degraded), "the killed device must be named"

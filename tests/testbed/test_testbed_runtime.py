"""The runtime across the testbed: `coinfer serve` in the server namespace, `coinfer edge` per device.

Split requests go to each device's daemon, which runs the head and uploads the 8-bit feature to
the coordinator over its shaped link. The upload time the daemon measures (offload minus the
tail's compute) must follow that link's rate, and must move when the rate is changed live, as
the scheduler does when it picks a transmit power. (Root, `ip` and `tc` only.)
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from coinfer.bench.processes import DaemonProcess, coinfer_command
from coinfer.testbed import Testbed

from testbed_helpers import assert_shaped_ms, needs_netns, wait_line
from quantised import ExpectedLogits, expected_logits, split_halves
from suite_threads import suite_threads

pytestmark = [needs_netns, pytest.mark.slow]

COORDINATOR_PORT, EDGE_PORT = 8001, 8101
N_IMAGES = 256
ROUNDS = 4  # the first is a warm-up and is not timed
DELAY_MS = [0.0, 5.0]

# One client process in the server namespace, driven line by line from stdin: "ADDRESS ROUNDS".
CLIENT = textwrap.dedent("""
    import json, sys
    from coinfer.core.data import load_dataset
    from coinfer.serving.client import InferenceClient

    model = sys.argv[1]
    images = load_dataset("digits", seed=0).test.x[:int(sys.argv[2])]
    print("READY", flush=True)
    for line in sys.stdin:
        address, rounds = line.split()
        with InferenceClient(address, timeout_s=30) as client:
            client.wait_until_ready(model, timeout_s=45)
            replies = [client.infer(model, {"image": images}) for _ in range(int(rounds))]
        print(json.dumps({
            "logits": replies[-1].outputs["logits"].tolist(),
            "upload_ms": [r.parameters["offload_ms"] - r.parameters["tail_ms"] for r in replies],
            "payload_bytes": replies[-1].parameters["payload_bytes"],
        }), flush=True)
""")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    from coinfer.skeleton import SkeletonConfig, build_skeleton_bundle

    # Accuracy is irrelevant here: one epoch of the thin skeleton carries the bytes.
    return build_skeleton_bundle(tmp_path_factory.mktemp("tb-skeleton") / "bundle",
                                 SkeletonConfig(arch="vgg11", width_mult=0.25, epochs=1, threads=suite_threads(1)))


@dataclass
class Running:
    """A testbed with a coordinator, one edge per device and a client process running."""

    tb: Testbed
    client: subprocess.Popen
    daemons: list[DaemonProcess]


@pytest.fixture
def deployment(testbed_factory, bundle, tmp_path):
    """A coordinator in the server namespace, an edge daemon in each device's, and a client."""
    tb: Testbed = testbed_factory(2, uplink_mbit=[2, 8], downlink_mbit=[8], delay_ms=DELAY_MS)
    coordinator = DaemonProcess(
        "coordinator",
        ["ip", "netns", "exec", tb.server_namespace, *coinfer_command(
            "serve", "--bundle", str(bundle.path), "--listen", f"{tb.server_address}:{COORDINATOR_PORT}",
            "--insecure", "--port-file", str(tmp_path / "coordinator.addr"), "--threads", "1", "--heartbeat-s", "0.5")],
        tmp_path / "coordinator.addr", tmp_path / "coordinator.log")
    edges = [
        DaemonProcess(
            f"edge{i}",
            ["ip", "netns", "exec", tb.namespace(i), *coinfer_command(
                "edge", "--coordinator", str(tb.reach_server(i, COORDINATOR_PORT)), "--name", f"device{i}",
                "--listen", f"0.0.0.0:{EDGE_PORT}", "--insecure", "--advertise", str(tb.reach_device(i, EDGE_PORT)),
                "--port-file", str(tmp_path / f"edge{i}.addr"), "--threads", "1",
                "--cache-dir", str(tmp_path / f"cache{i}"))],
            tmp_path / f"edge{i}.addr", tmp_path / f"edge{i}.log")
        for i in range(2)
    ]
    daemons = [coordinator, *edges]
    client = None
    try:
        # All at once: the addresses are fixed in advance and edges retry registration until the
        # coordinator answers, so the three torch imports overlap.
        client = tb.exec_in_server([sys.executable, "-c", CLIENT, str(bundle.metadata["model_name"]), str(N_IMAGES)],
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        with ThreadPoolExecutor(len(daemons)) as pool:
            list(pool.map(lambda d: d.start(timeout_s=90), daemons))
        assert wait_line(client, 60) == "READY"
        yield Running(tb, client, daemons)
    finally:
        if client is not None:
            client.stdin.close()  # the client exits at end of input
            try:
                client.wait(timeout=20)
            except subprocess.TimeoutExpired:
                client.kill()
                client.wait()
        with ThreadPoolExecutor(len(daemons)) as pool:
            statuses = list(pool.map(lambda d: d.stop(), daemons))
    assert statuses == [0, 0, 0], [d.log_tail() for d in daemons]


def infer_via(run: Running, device_i: int) -> dict:
    run.client.stdin.write(f"{run.tb.reach_device(device_i, EDGE_PORT)} {ROUNDS}\n")
    run.client.stdin.flush()
    line = wait_line(run.client, 90)
    if not line:  # the client died: the daemons' logs say why
        pytest.fail("client got no answer:\n" + "\n".join(f"--- {d.name}\n{d.log_tail(15)}" for d in run.daemons))
    return json.loads(line)


def reference_logits(bundle) -> ExpectedLogits:
    """head -> the link's codec -> tail, run in this process, with what other kernels may change."""
    from coinfer.core.data import load_dataset

    return expected_logits(split_halves(bundle), load_dataset("digits", seed=0).test.x[:N_IMAGES])


def expected_upload_ms(tb: Testbed, device_i: int, payload_bytes: int) -> float:
    # The relay (no netem) or netem delays the feature on its way up and the logits on their way back.
    return payload_bytes * 8 / tb.rate_bps(device_i, "up") * 1000 + 2 * DELAY_MS[device_i]


def assert_follows_rate(measured_ms: list[float], expected_ms: float) -> None:
    assert_shaped_ms(statistics.median(measured_ms[1:]), expected_ms, floor=0.9)


def test_split_requests_cross_the_testbed_at_each_devices_rate(deployment, bundle):
    tb = deployment.tb
    results = [infer_via(deployment, i) for i in range(2)]
    reference = reference_logits(bundle)
    for i, result in enumerate(results):
        reference.check(np.array(result["logits"], dtype=np.float32), f"through device {i}")
    for i, result in enumerate(results):
        assert_follows_rate(result["upload_ms"], expected_upload_ms(tb, i, result["payload_bytes"]))
    # Each device its own rate (2 against 8 Mbit/s: about 3x the time); the fastest round is the
    # one least stretched by other work on the machine.
    assert min(results[0]["upload_ms"][1:]) > 2 * min(results[1]["upload_ms"][1:])

    # The scheduler lowers device 1's power: its link slows down at once, daemons untouched.
    rate = tb.set_power(1, 1e-4)
    assert rate < 8e6 / 2
    slower = infer_via(deployment, 1)
    assert_follows_rate(slower["upload_ms"], expected_upload_ms(tb, 1, slower["payload_bytes"]))

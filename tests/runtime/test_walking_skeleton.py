"""The walking skeleton end to end: `coinfer serve` and `coinfer edge` as real processes.

The edge registers, downloads its head part, and answers ModelInfer by running the head,
sending the 8-bit feature to the coordinator's tail and returning the logits. What comes back
must be what the same bundle computes in this process.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap

import grpc
import numpy as np
import pytest

from coinfer.protos import inference_pb2 as pb
from coinfer.protos.oip import build_infer_request
from coinfer.serving.client import InferenceClient
from coinfer.bench.processes import DaemonProcess, coinfer_command
from quantised import assert_float_close, assert_predictions_agree, expected_logits, float_logits

pytestmark = pytest.mark.slow
DEADLINE_S = 10.0
N_IMAGES = 120


@pytest.fixture(scope="module")
def daemons(skeleton_bundle, model_name, tmp_path_factory):
    """(edge address, coordinator address) of two running daemons; both stopped afterwards."""
    run = tmp_path_factory.mktemp("daemons")
    coordinator = DaemonProcess(
        "coordinator",
        coinfer_command(
            "serve", "--bundle", str(skeleton_bundle.path), "--listen", "127.0.0.1:0",
            "--port-file", str(run / "coordinator.addr"), "--threads", "1", "--heartbeat-s", "0.5",
        ),
        run / "coordinator.addr",
        run / "coordinator.log",
    )
    edge = DaemonProcess(
        "edge",
        [],  # filled in once the coordinator's address is known
        run / "edge.addr",
        run / "edge.log",
    )
    try:
        coordinator_address = coordinator.start()
        edge.argv = coinfer_command(
            "edge", "--coordinator", coordinator_address, "--name", "edge-test", "--listen", "127.0.0.1:0",
            "--port-file", str(run / "edge.addr"), "--threads", "1", "--cache-dir", str(run / "cache"),
        )
        edge_address = edge.start()
        with InferenceClient(edge_address, timeout_s=DEADLINE_S) as client:
            client.wait_until_ready(model_name, timeout_s=60)
        yield edge_address, coordinator_address, run
    finally:
        edge_status = edge.stop()
        coordinator_status = coordinator.stop()
    # SIGTERM must end both cleanly (drained, exit status 0), not by a kill.
    assert edge_status == 0, edge.log_tail()
    assert coordinator_status == 0, coordinator.log_tail()


def test_edge_answers_like_the_in_process_model(daemons, skeleton_bundle, model_name, digits_test, skeleton_halves) -> None:
    edge_address, _, _ = daemons
    images = digits_test.x[:N_IMAGES]
    with InferenceClient(edge_address, timeout_s=DEADLINE_S) as client:
        assert client.server_live() and client.server_ready()
        batched = client.infer(model_name, {"image": images}, request_id="batch-1")
        singles = np.concatenate([client.infer(model_name, {"image": images[i : i + 1]}).outputs["logits"] for i in range(20)])
    logits = batched.outputs["logits"]
    assert batched.id == "batch-1"
    assert logits.dtype == np.float32 and logits.shape == (N_IMAGES, 10)
    expected_logits(skeleton_halves, images).check(logits, f"a batch of {N_IMAGES}")
    # One scale per tensor: a lone image is quantised with its own range.
    for i in range(20):
        expected_logits(skeleton_halves, images[i : i + 1]).check(singles[i : i + 1], f"image {i} alone")
    # Against the full FP32 model: the same answers.
    assert_predictions_agree(logits, float_logits(skeleton_halves, images), 0.98, "8-bit codec against FP32")
    # The payload is the 8-bit feature (1 byte per element + header), not FP32.
    feature_elements = int(np.prod(skeleton_bundle.part("head").outputs[0].shape[1:]))
    assert feature_elements * N_IMAGES < batched.parameters["payload_bytes"] < feature_elements * N_IMAGES + 128


def _malformed(model_name: str, images: np.ndarray) -> dict[str, tuple[pb.ModelInferRequest, grpc.StatusCode, str]]:
    unknown = build_infer_request("no-such-model", {"image": images})
    wrong_type = build_infer_request(model_name, {"image": images.astype(np.float32)})
    wrong_shape = build_infer_request(model_name, {"image": images.reshape(len(images), 1, 4, 16)})
    short = build_infer_request(model_name, {"image": images})
    short.raw_input_contents[0] = short.raw_input_contents[0][:-1]
    long = build_infer_request(model_name, {"image": images})
    long.raw_input_contents[0] = long.raw_input_contents[0] + b"\x00"
    return {
        "unknown model": (unknown, grpc.StatusCode.NOT_FOUND, "unknown model 'no-such-model'"),
        "wrong datatype": (wrong_type, grpc.StatusCode.INVALID_ARGUMENT, "must be UINT8"),
        "wrong shape": (wrong_shape, grpc.StatusCode.INVALID_ARGUMENT, "shape [2, 1, 4, 16]"),
        "one byte short": (short, grpc.StatusCode.INVALID_ARGUMENT, "raw content of 127 bytes"),
        "one byte long": (long, grpc.StatusCode.INVALID_ARGUMENT, "raw content of 129 bytes"),
    }


def test_malformed_requests_get_clear_errors_and_the_daemon_keeps_serving(daemons, model_name, digits_test) -> None:
    edge_address, _, _ = daemons
    images = digits_test.x[:2]
    with InferenceClient(edge_address, timeout_s=DEADLINE_S) as client:
        for case, (request, code, message) in _malformed(model_name, images).items():
            with pytest.raises(grpc.RpcError) as info:
                client.stub.ModelInfer(request, timeout=DEADLINE_S)
            assert info.value.code() == code, case
            assert message in info.value.details(), f"{case}: {info.value.details()}"
        # Still serving, and still right.
        reply = client.infer(model_name, {"image": images})
        assert reply.outputs["logits"].shape == (2, 10)


_TRITON_SCRIPT = textwrap.dedent(
    """
    import sys, numpy as np
    import tritonclient.grpc as triton
    address, model, images_path, out_path = sys.argv[1:]
    client = triton.InferenceServerClient(address)
    meta = client.get_model_metadata(model, as_json=True)
    assert meta["inputs"][0]["name"] == "image" and meta["inputs"][0]["datatype"] == "UINT8", meta
    assert meta["outputs"][0]["name"] == "logits", meta
    assert client.is_server_live() and client.is_model_ready(model)
    images = np.load(images_path)
    inp = triton.InferInput("image", list(images.shape), "UINT8")
    inp.set_data_from_numpy(images)
    result = client.infer(model, [inp], outputs=[triton.InferRequestedOutput("logits")], client_timeout=10)
    np.save(out_path, result.as_numpy("logits"))
    """
)


@pytest.mark.skipif(importlib.util.find_spec("tritonclient") is None, reason="needs tritonclient[grpc]")
def test_a_stock_triton_client_works_unchanged(daemons, model_name, digits_test, skeleton_halves, tmp_path) -> None:
    # Its generated `inference.*` messages clash with ours in one process: run it in its own.
    edge_address, _, _ = daemons
    images = digits_test.x[:8]
    np.save(tmp_path / "images.npy", images)
    proc = subprocess.run(
        [sys.executable, "-c", _TRITON_SCRIPT, edge_address, model_name, str(tmp_path / "images.npy"), str(tmp_path / "out.npy")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    expected_logits(skeleton_halves, images).check(np.load(tmp_path / "out.npy"), "through Triton")


def test_the_coordinator_serves_the_whole_model_itself(daemons, model_name, digits_test, skeleton_halves) -> None:
    _, coordinator_address, _ = daemons
    images = digits_test.x[:16]
    with InferenceClient(coordinator_address, timeout_s=DEADLINE_S) as client:
        logits = client.infer(model_name, {"image": images}).outputs["logits"]
    assert_float_close(logits, float_logits(skeleton_halves, images), "the coordinator's whole model")

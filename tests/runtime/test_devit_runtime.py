"""A DeViT bundle served by a coordinator and four edge daemons (in process).

The fan-out must give the in-process ensemble's answer; a missing device must give a degraded
answer that says who contributed (and equals the ensemble with that device marked missing);
too few features must be UNAVAILABLE with the reason; bad input must get precise statuses
while the daemons keep serving; devices, decisions and metrics must be visible.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import replace
import urllib.request

import grpc
import numpy as np
import pytest

from coinfer.bench.fixtures import DeViTBundleConfig, build_devit_bundle
from coinfer.core.errors import NotFound
from coinfer.edge.daemon import EdgeConfig
from coinfer.edge.serve import start_edge
from coinfer.protos import coinfer_v1_pb2 as v1
from coinfer.protos import coinfer_v1_pb2_grpc as v1_grpc
from coinfer.protos.oip import build_infer_request
from coinfer.serving.security import open_channel
from coinfer.serving.server import ServerOptions
from coinfer.serving.client import InferenceClient
from coinfer.server.coordinator import CoordinatorConfig
from coinfer.server.devit_service import DeViTServeConfig
from coinfer.server.serve import start_coordinator
from quantised import assert_float_close

DEADLINE_S = 20.0
MODEL = "digits-devit"
MAX_MESSAGE_BYTES = 1 << 20


@pytest.fixture(scope="module")
def cluster(devit_bundle, split_bundle, tmp_path_factory, free_port):
    """(coordinator server, [edge servers], metrics port of the coordinator)."""
    metrics_port = free_port()
    coordinator = start_coordinator(
        [devit_bundle.path, split_bundle.path],
        ServerOptions(listen="127.0.0.1:0", grace_s=0.2, max_message_bytes=MAX_MESSAGE_BYTES, max_workers=16),
        CoordinatorConfig(heartbeat_interval_s=0.1, device_timeout_s=1.5, suspect_s=0.5),
        devit=DeViTServeConfig(timeout_s=5.0),
        metrics_port=metrics_port,
    )
    edges = []
    try:
        for i in range(4):
            # One process holds all four: their calibrations would share its cores, so say they are equal.
            config = EdgeConfig(name=f"nano-{i}", coordinator=coordinator.address, address="", cache_dir=tmp_path_factory.mktemp(f"nano-{i}"),
                                speed=1.0)
            edges.append(start_edge(config, ServerOptions(listen="127.0.0.1:0", grace_s=0.2)))
        with InferenceClient(coordinator.address, timeout_s=DEADLINE_S) as client:
            _wait_full(client, spread=4)  # one sub-model on each device once placement settles
        yield coordinator, edges, metrics_port
    finally:
        for edge in edges:
            edge.stop()
        coordinator.stop()


def _wait_full(client: InferenceClient, images=None, timeout_s: float = 60.0, spread: int = 0, model: str = MODEL):
    """Wait for a non-degraded answer of ``model`` from at least ``spread`` distinct devices; returns it."""
    images = np.zeros((1, 1, 8, 8), np.uint8) if images is None else images
    client.wait_until_ready(model, timeout_s=timeout_s)
    deadline = time.monotonic() + timeout_s
    while True:
        reply = client.infer(model, {"image": images})
        if not reply.parameters["degraded"] and len(set(reply.parameters["devices"].split(","))) >= spread:
            return reply
        assert time.monotonic() < deadline, f"still degraded: {reply.parameters}"
        time.sleep(0.1)


def test_the_fan_out_equals_the_in_process_ensemble(cluster, digits_test) -> None:
    coordinator, edges, _ = cluster
    serving = coordinator.coordinator.catalog.devit[MODEL]
    images = digits_test.x[:16]
    with InferenceClient(coordinator.address, timeout_s=DEADLINE_S) as client:
        reply = client.infer(MODEL, {"image": images}, request_id="fan-1")
    p = reply.parameters
    assert reply.id == "fan-1" and p["degraded"] is False and p["submodels"] == "0,1,2,3"
    assert sorted(p["devices"].split(",")) == sorted(e.daemon.config.name for e in edges)  # one sub-model each
    assert_float_close(reply.outputs["logits"], serving.run_local(images), "the fan-out")
    assert p["compute_ms"] == pytest.approx(p["submodel_compute_ms"] + p["fusion_ms"])
    assert p["fanout_ms"] >= p["submodel_compute_ms"]
    # Any edge forwards the same request to the coordinator and relays the answer.
    with InferenceClient(edges[2].address, timeout_s=DEADLINE_S) as client:
        meta = client.model_metadata(MODEL)
        forwarded = client.infer(MODEL, {"image": images})
    assert meta.inputs[0].datatype == "UINT8" and meta.outputs[0].shape == (-1, 10)
    assert forwarded.parameters["forwarded_by"] == "nano-2" and forwarded.parameters["degraded"] is False
    assert_float_close(forwarded.outputs["logits"], reply.outputs["logits"], "forwarded by an edge")


def _status(fn, request) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        result = fn(request, timeout=DEADLINE_S)
        if not hasattr(result, "SerializeToString"):
            list(result)
    return info.value.code(), info.value.details()


def test_bad_input_gets_precise_statuses_and_serving_goes_on(cluster, devit_bundle, digits_test, tmp_path) -> None:
    coordinator, edges, _ = cluster
    images = digits_test.x[:2]
    with InferenceClient(coordinator.address, timeout_s=DEADLINE_S) as client:
        stub = client.stub
        short = build_infer_request(MODEL, {"image": images})
        short.raw_input_contents[0] = short.raw_input_contents[0][:-1]
        cases = {
            "unknown model": (build_infer_request("nope", {"image": images}), grpc.StatusCode.NOT_FOUND, "unknown model 'nope'"),
            "datatype": (build_infer_request(MODEL, {"image": images.astype(np.float32)}), grpc.StatusCode.INVALID_ARGUMENT, "must be UINT8"),
            "shape": (build_infer_request(MODEL, {"image": images[:, :, :4]}), grpc.StatusCode.INVALID_ARGUMENT, "shape [2, 1, 4, 8]"),
            "byte length": (short, grpc.StatusCode.INVALID_ARGUMENT, "raw content of 127 bytes"),
            "oversized": (
                build_infer_request(MODEL, {"image": np.zeros((20_000, 1, 8, 8), np.uint8)}),
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                "",
            ),
        }
        for case, (request, code, message) in cases.items():
            got, details = _status(stub.ModelInfer, request)
            assert got == code, f"{case}: {got} {details}"
            assert message in details, f"{case}: {details}"
        # A deadline shorter than the fusion's margin: refused before any fan-out, saying why.
        tight = build_infer_request(MODEL, {"image": images})
        tight.parameters["deadline_ms"].double_param = 0.001
        got, details = _status(stub.ModelInfer, tight)
        assert got == grpc.StatusCode.DEADLINE_EXCEEDED and "deadline leaves" in details and "kept for fusion" in details
        # Still serving everyone, and still right.
        assert client.infer(MODEL, {"image": images}).parameters["degraded"] is False
    # The Edge service refuses what a coordinator should never send.
    with open_channel(edges[0].address) as channel:
        edge_stub = v1_grpc.EdgeStub(channel)
        held = edges[0].daemon.assignment.submodels[0]
        raw = v1.RawTensor(datatype="UINT8", shape=[1, 1, 8, 8], data=bytes(64))
        other = v1.RunSubModelRequest(model_name=MODEL, bundle=held.bundle, part="device-9", images=raw)
        assert _status(edge_stub.RunSubModel, other)[0] == grpc.StatusCode.FAILED_PRECONDITION
        floats = v1.RunSubModelRequest(model_name=MODEL, bundle=held.bundle, part=held.part, images=v1.RawTensor(datatype="FP32", shape=[1, 1, 8, 8], data=bytes(256)))
        assert _status(edge_stub.RunSubModel, floats)[0] == grpc.StatusCode.INVALID_ARGUMENT
        wrong_size = v1.RunSubModelRequest(model_name=MODEL, bundle=held.bundle, part=held.part, images=v1.RawTensor(datatype="UINT8", shape=[1, 1, 4, 4], data=bytes(16)))
        code, details = _status(edge_stub.RunSubModel, wrong_size)
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "takes images of shape [1, 8, 8]" in details
        ok = edge_stub.RunSubModel(v1.RunSubModelRequest(model_name=MODEL, bundle=held.bundle, part=held.part, images=raw), timeout=DEADLINE_S)
        assert list(ok.feature.shape) == [1, 32] and ok.device_name == "nano-0"
    # A part changed on the coordinator's disk after it was verified never reaches a device.
    copy = tmp_path / "digits-devit"
    shutil.copytree(devit_bundle.path, copy)
    tampered = start_coordinator(copy, ServerOptions(listen="127.0.0.1:0", grace_s=0.2))
    try:
        path = copy / devit_bundle.part("device-1").file
        data = bytearray(path.read_bytes())
        data[-1] ^= 0xFF
        path.write_bytes(bytes(data))
        with open_channel(tampered.address) as channel:
            stub = v1_grpc.CoordinatorStub(channel)
            code, details = _status(stub.FetchPart, v1.FetchPartRequest(bundle=devit_bundle.name, part="device-1"))
            assert code == grpc.StatusCode.DATA_LOSS and "changed on the coordinator's disk" in details
            intact = list(stub.FetchPart(v1.FetchPartRequest(bundle=devit_bundle.name, part="device-0"), timeout=DEADLINE_S))
            assert sum(len(c.data) for c in intact) == devit_bundle.part("device-0").size_bytes
    finally:
        tampered.stop()


def test_devices_decisions_and_metrics_are_visible(cluster) -> None:
    coordinator, edges, metrics_port = cluster
    with InferenceClient(coordinator.address, timeout_s=DEADLINE_S) as client:
        _wait_full(client, spread=4)  # every device answered a sub-model call, whatever ran before
        with pytest.raises(NotFound):
            client.infer("nope", {"image": np.zeros((1, 1, 8, 8), np.uint8)})  # counted under "_unknown"
    deadline = time.monotonic() + 10  # until a heartbeat (every 0.1 s) has reported that call
    with open_channel(coordinator.address) as channel:
        while True:
            listed = v1_grpc.CoordinatorStub(channel).ListDevices(v1.ListDevicesRequest(), timeout=DEADLINE_S)
            if all(d.last_report.requests_total >= 1 for d in listed.devices) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    assert sorted(d.info.name for d in listed.devices) == [f"nano-{i}" for i in range(4)]
    for d in listed.devices:
        assert d.live and d.seconds_since_heartbeat < 1.5 and d.submodel_calls >= 1
        assert d.assignment.model_name == "digits-split" and len(d.assignment.submodels) == 1 and not d.assignment.parts
        assert d.last_report.requests_total >= 1 and d.last_report.rtt_ms > 0 and d.last_report.memory_percent > 0
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read().decode()
    for i in range(4):
        assert f'coinfer_submodel_calls_total{{device="nano-{i}",model="{MODEL}",outcome="OK"}}' in text
        assert f'coinfer_device_split_point{{device="nano-{i}"}}' in text
    assert 'coinfer_requests_total{device="coordinator",model="digits-devit",outcome="OK",role="coordinator"}' in text
    # Unknown names share one label value: clients cannot blow up the number of series.
    assert 'coinfer_requests_total{device="coordinator",model="_unknown",outcome="NOT_FOUND",role="coordinator"}' in text
    assert 'model="nope"' not in text
    assert "coinfer_request_latency_seconds_bucket" in text and "coinfer_devices_live 4.0" in text


def test_a_missing_device_degrades_the_answer_until_its_sub_model_moves(cluster, digits_test, tmp_path) -> None:
    coordinator, edges, _ = cluster
    serving = coordinator.coordinator.catalog.devit[MODEL]
    images = digits_test.x[:4]
    victim = edges[1]
    lost = victim.daemon.assignment.submodels[0].index
    victim.stop()
    try:
        _degrades_until_the_sub_model_moves(coordinator, serving, images, lost)
    finally:
        # The cluster as the other tests expect it, whichever order they run in: nano-1 back, four devices in use.
        config = replace(victim.daemon.config, address="", cache_dir=tmp_path / "nano-1-again")  # a port of its own
        edges[1] = start_edge(config, ServerOptions(listen="127.0.0.1:0", grace_s=0.2))
        with InferenceClient(coordinator.address, timeout_s=DEADLINE_S) as client:
            _wait_full(client, spread=4)


def _degrades_until_the_sub_model_moves(coordinator, serving, images, lost: int) -> None:
    with InferenceClient(coordinator.address, timeout_s=DEADLINE_S) as client:
        started = time.monotonic()
        reply = client.infer(MODEL, {"image": images})
        elapsed_s = time.monotonic() - started
        p = reply.parameters
        assert p["degraded"] is True and p["missing"] == str(lost) and "nano-1" in p["missing_reason"]
        # A dead device fails at once (its port refuses), it is not waited for until the 5 s timeout.
        assert "DEADLINE_EXCEEDED" not in p["missing_reason"], p["missing_reason"]
        assert elapsed_s < 5.0, f"a dead device cost the whole timeout ({elapsed_s:.1f} s)"
        present = tuple(int(i) for i in p["submodels"].split(","))
        assert lost not in present and len(present) == 3 and "nano-1" not in p["devices"]
        assert_float_close(reply.outputs["logits"], serving.run_local(images, present), "degraded")
        # Once the device counts as gone, its sub-model moves to a live device and answers are whole again.
        full = _wait_full(client, images, timeout_s=30)
    assert "nano-1" not in full.parameters["devices"]
    assert_float_close(full.outputs["logits"], serving.run_local(images), "whole again")


def test_a_conv_stem_bundle_fans_out_to_the_in_process_answer(tmp_path, digits_test) -> None:
    """Sub-models with a convolutional stem (``coinfer teacher train --stem conv``) are served like
    any others: the edges rebuild the stem, trained batch-norm statistics included."""
    bundle = build_devit_bundle(tmp_path / "stem-devit", DeViTBundleConfig(num_devices=2, patch_size=4, stem_channels=(8, 16), epochs=1))
    coordinator = start_coordinator(
        [bundle.path], ServerOptions(listen="127.0.0.1:0", grace_s=0.2),
        CoordinatorConfig(heartbeat_interval_s=0.1, device_timeout_s=1.5, suspect_s=0.5), devit=DeViTServeConfig(timeout_s=5.0),
    )
    edges = []
    try:
        for i in range(2):
            config = EdgeConfig(name=f"stem-{i}", coordinator=coordinator.address, address="", cache_dir=tmp_path / f"edge-{i}", speed=1.0)
            edges.append(start_edge(config, ServerOptions(listen="127.0.0.1:0", grace_s=0.2)))
        images = digits_test.x[:16]
        with InferenceClient(coordinator.address, timeout_s=DEADLINE_S) as client:
            reply = _wait_full(client, images, spread=2, model="stem-devit")
        serving = coordinator.coordinator.catalog.devit["stem-devit"]
        loaded = [serving.bundle.load_module(p) for p in serving.submodel_parts]
        assert all(m.config.stem_channels == (8, 16) for m in loaded)
        assert all(m.patch_embed.stem[1].running_mean.abs().sum() > 0 for m in loaded)  # trained statistics travel
        assert_float_close(reply.outputs["logits"], serving.run_local(images), "the stem bundle's fan-out")
        assert np.isfinite(reply.outputs["logits"]).all()
    finally:
        for edge in edges:
            edge.stop()
        coordinator.stop()

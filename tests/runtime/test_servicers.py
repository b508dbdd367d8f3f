"""In-process servicer tests: the status code of every refusal, and the part download path."""

from __future__ import annotations

import hashlib
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from coinfer.core.bundle import PartSpec
from coinfer.core.codec import encode, tensor_from_raw, to_bytes
from coinfer.core.errors import IntegrityError
from coinfer.edge.daemon import EdgeConfig
from coinfer.edge.part_cache import PartCache
from coinfer.edge.serve import start_edge
from coinfer.protos import coinfer_v1_pb2 as v1
from coinfer.protos import coinfer_v1_pb2_grpc as v1_grpc
from coinfer.protos import inference_pb2 as pb
from coinfer.protos.oip import build_infer_request
from coinfer.serving.security import open_channel
from coinfer.serving.server import ServerOptions
from coinfer.serving.client import InferenceClient
from coinfer.server.coordinator import CoordinatorConfig
from coinfer.server.serve import start_coordinator
from quantised import assert_float_close

DEADLINE_S = 10.0


@pytest.fixture(scope="module")
def coordinator(skeleton_bundle):
    server = start_coordinator(
        skeleton_bundle.path, ServerOptions(listen="127.0.0.1:0", grace_s=0.2), CoordinatorConfig(heartbeat_interval_s=0.2)
    )
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def stub(coordinator):
    with open_channel(coordinator.address) as channel:
        yield v1_grpc.CoordinatorStub(channel)


def _code(fn, request) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        result = fn(request, timeout=DEADLINE_S)
        if not hasattr(result, "SerializeToString"):  # a stream: errors surface while reading
            list(result)
    return info.value.code(), info.value.details()


def _device(name: str) -> v1.RegisterRequest:
    return v1.RegisterRequest(device=v1.DeviceInfo(name=name, address="127.0.0.1:1"))


def test_register_and_heartbeat(stub, coordinator, skeleton_bundle) -> None:
    assert _code(stub.Register, v1.RegisterRequest(device=v1.DeviceInfo(address="x:1")))[0] == grpc.StatusCode.INVALID_ARGUMENT
    first = stub.Register(_device("dev-a"), timeout=DEADLINE_S)
    second = stub.Register(_device("dev-b"), timeout=DEADLINE_S)
    head, tail = skeleton_bundle.part("head"), skeleton_bundle.part("tail")
    a = first.assignment
    assert a.split_point == skeleton_bundle.metadata["split_point"] and a.codec_bits == 8
    # The head for the split point, and the tail too so that the device can answer alone.
    assert [(p.name, p.sha256, p.size_bytes) for p in a.parts] == [("head", head.sha256, head.size_bytes), ("tail", tail.sha256, tail.size_bytes)]
    assert [list(p.device_parts) for p in a.split_points] == [["head"]] and list(a.fallback_parts) == ["head", "tail"]
    assert {first.assignment.sub_channel, second.assignment.sub_channel} == {0, 1}
    assert first.heartbeat_interval_ms == 200
    code, details = _code(stub.Heartbeat, v1.HeartbeatRequest(device_id="nobody"))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "register again" in details
    beat = v1.HeartbeatRequest(device_id=first.device_id, name="dev-a", cpu_percent=12.5, queue_length=3)
    beat.temperature_c = 41.0
    assert stub.Heartbeat(beat, timeout=DEADLINE_S).assignment.generation == a.generation
    record = {r.device_id: r for r in coordinator.coordinator.devices()}[first.device_id]
    assert (record.load.cpu_percent, record.load.queue_length, record.load.temperature_c) == (12.5, 3, 41.0)


def test_fetch_part_streams_chunks_and_resumes(stub, skeleton_bundle) -> None:
    bundle, spec = skeleton_bundle.name, skeleton_bundle.part("tail")
    chunks = list(stub.FetchPart(v1.FetchPartRequest(bundle=bundle, part="tail", chunk_bytes=64 * 1024), timeout=DEADLINE_S))
    assert len(chunks) == -(-spec.size_bytes // (64 * 1024))
    assert all(c.sha256 == spec.sha256 and c.total_size_bytes == spec.size_bytes for c in chunks)
    data = b"".join(c.data for c in chunks)
    assert hashlib.sha256(data).hexdigest() == spec.sha256
    rest = list(stub.FetchPart(v1.FetchPartRequest(bundle=bundle, part="tail", offset=1000), timeout=DEADLINE_S))
    assert rest[0].offset == 1000 and b"".join(c.data for c in rest) == data[1000:]
    assert _code(stub.FetchPart, v1.FetchPartRequest(bundle=bundle, part="nope"))[0] == grpc.StatusCode.NOT_FOUND
    assert _code(stub.FetchPart, v1.FetchPartRequest(bundle="other", part="tail"))[0] == grpc.StatusCode.NOT_FOUND
    offset_past = v1.FetchPartRequest(bundle=bundle, part="tail", offset=spec.size_bytes + 1)
    assert _code(stub.FetchPart, offset_past)[0] == grpc.StatusCode.INVALID_ARGUMENT


def test_offload_runs_the_tail_and_refuses_bad_features(stub, skeleton_bundle, model_name, digits_test) -> None:
    import torch

    from coinfer.core.data import to_float

    point = skeleton_bundle.metadata["split_point"]
    head, tail = skeleton_bundle.load_module("head"), skeleton_bundle.load_module("tail")
    with torch.inference_mode():
        feature = head(to_float(digits_test.x[:4])).numpy()
        expected = tail(torch.from_numpy(feature)).numpy()
    ok = stub.Offload(v1.OffloadRequest(model_name=model_name, split_point=point, payload=to_bytes(encode(feature)), request_id="r7"), timeout=DEADLINE_S)
    assert_float_close(tensor_from_raw(ok.datatype, tuple(ok.shape), ok.logits), expected, "the tail on an FP32 feature")
    assert ok.request_id == "r7" and ok.tail_ms > 0
    cases = {
        "garbage": (v1.OffloadRequest(model_name=model_name, split_point=point, payload=b"not a tensor"), grpc.StatusCode.INVALID_ARGUMENT),
        "empty": (v1.OffloadRequest(model_name=model_name, split_point=point), grpc.StatusCode.INVALID_ARGUMENT),
        "shape": (
            v1.OffloadRequest(model_name=model_name, split_point=point, payload=to_bytes(encode(feature[:, :3]))),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        "point": (
            v1.OffloadRequest(model_name=model_name, split_point=point + 1, payload=to_bytes(encode(feature))),
            grpc.StatusCode.FAILED_PRECONDITION,
        ),
        "model": (v1.OffloadRequest(model_name="other", split_point=point, payload=to_bytes(encode(feature))), grpc.StatusCode.NOT_FOUND),
        "nan": (
            v1.OffloadRequest(model_name=model_name, split_point=point, payload=to_bytes(encode(np.where(feature > 0, np.nan, feature)))),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        "scalars": (
            v1.OffloadRequest(model_name=model_name, split_point=point, payloads=[to_bytes(encode(np.float32(1.0)))] * 2),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
    }
    for case, (request, want) in cases.items():
        code, details = _code(stub.Offload, request)
        assert code == want, f"{case}: {code} {details}"
        assert details, case


def test_coordinator_front_door_limits(coordinator, model_name) -> None:
    with InferenceClient(coordinator.address, timeout_s=DEADLINE_S) as client:
        too_many = build_infer_request(model_name, {"image": np.zeros((257, 1, 8, 8), np.uint8)})
        assert _code(client.stub.ModelInfer, too_many)[0] == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert _code(client.stub.ModelReady, pb.ModelReadyRequest(name=model_name, version="9"))[0] == grpc.StatusCode.NOT_FOUND
        assert _code(client.stub.ModelMetadata, pb.ModelMetadataRequest(name="x"))[0] == grpc.StatusCode.NOT_FOUND
        assert client.model_ready(model_name) and client.server_ready()


def _health(address: str) -> int:
    with open_channel(address) as channel:
        return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=DEADLINE_S).status


def test_edge_in_process_lifecycle(skeleton_bundle, model_name, digits_test, tmp_path) -> None:
    # The coordinator starts *after* the edge: the edge must keep retrying, then become ready.
    options = ServerOptions(listen="127.0.0.1:0", grace_s=0.2)
    coordinator = start_coordinator(skeleton_bundle.path, options, CoordinatorConfig(heartbeat_interval_s=0.2))
    address = coordinator.address
    coordinator.stop()
    edge = start_edge(EdgeConfig(name="e-1", coordinator=address, address="", cache_dir=tmp_path / "cache", rpc_timeout_s=2.0, retry_max_s=0.3), options)
    try:
        with InferenceClient(edge.address, timeout_s=DEADLINE_S) as client:
            assert client.server_live() and not client.server_ready()
            assert _health(edge.address) == health_pb2.HealthCheckResponse.NOT_SERVING
            early = build_infer_request(model_name, {"image": digits_test.x[:1]})
            assert _code(client.stub.ModelInfer, early)[0] == grpc.StatusCode.NOT_FOUND
            coordinator = start_coordinator(skeleton_bundle.path, ServerOptions(listen=address, grace_s=0.2), CoordinatorConfig(heartbeat_interval_s=0.2))
            client.wait_until_ready(model_name, timeout_s=30)
            assert _health(edge.address) == health_pb2.HealthCheckResponse.SERVING
            assert client.infer(model_name, {"image": digits_test.x[:3]}).outputs["logits"].shape == (3, 10)
            devices = coordinator.coordinator.devices()
            assert [d.info.name for d in devices] == ["e-1"] and devices[0].offloads == 1
            assert devices[0].info.address == edge.address
            # Coordinator gone: the edge answers alone with the whole model, and says why.
            coordinator.stop()
            alone = client.infer(model_name, {"image": digits_test.x[:3]})
            assert alone.parameters["fallback"] is True and "Offload" in alone.parameters["fallback_reason"]
            assert_float_close(alone.outputs["logits"], coordinator.coordinator.deployment.run_local(digits_test.x[:3]), "answered alone")
    finally:
        edge.stop()
        coordinator.stop()


class _Chunk:
    def __init__(self, offset: int, data: bytes, total: int, sha256: str) -> None:
        self.offset, self.data, self.total_size_bytes, self.sha256 = offset, data, total, sha256


def _spec(data: bytes) -> PartSpec:
    return PartSpec("head", "head.safetensors", hashlib.sha256(data).hexdigest(), len(data), "head")


def _fetcher(data: bytes, sha: str, calls: list[int], fail_after: int | None = None):
    def fetch(bundle: str, part: str, offset: int):
        calls.append(offset)
        for i, start in enumerate(range(offset, len(data), 10)):
            if fail_after is not None and i == fail_after:
                raise IntegrityError("connection dropped")  # any error mid-stream
            yield _Chunk(start, data[start : start + 10], len(data), sha)

    return fetch


def test_part_cache_refuses_a_mismatch_and_resumes(tmp_path: Path) -> None:
    data = bytes(range(256)) * 3
    spec = _spec(data)
    cache = PartCache(tmp_path)
    tampered = data[:-1] + b"\x00"
    with pytest.raises(IntegrityError, match="refused and deleted"):
        cache.ensure("b", spec, _fetcher(tampered, "", []))
    assert not any(tmp_path.rglob("*.safetensors*")), "a refused download must leave nothing behind"
    with pytest.raises(IntegrityError, match="streams sha256"):
        cache.ensure("b", spec, _fetcher(data, "0" * 64, []))
    calls: list[int] = []
    with pytest.raises(IntegrityError, match="dropped"):
        cache.ensure("b", spec, _fetcher(data, spec.sha256, calls, fail_after=5))
    path = cache.ensure("b", spec, _fetcher(data, spec.sha256, calls))
    assert calls == [0, 50] and path.read_bytes() == data  # resumed where the partial file ended
    assert cache.ensure("b", spec, _fetcher(b"", "", calls)) == path and calls == [0, 50]  # cache hit

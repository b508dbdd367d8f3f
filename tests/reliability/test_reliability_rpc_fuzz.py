"""Property-based fuzzing of both daemons' RPCs: random requests, precise answers, serving goes on.

Hypothesis builds requests field by field (names, datatypes, shapes from zero to 2**63, byte
strings of any length, typed contents with NaN and Inf, parameters of every type); each must be
answered OK with a well-formed result or refused with a precise status and a message (never
INTERNAL, UNKNOWN or a timeout), and the daemon must answer a valid request right after.
"""

from __future__ import annotations

import math
import random
import struct

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from coinfer.core.codec import DATATYPES, encode, tensor_from_raw, to_bytes
from coinfer.protos import coinfer_v1_pb2 as v1
from coinfer.protos import inference_pb2 as pb
from coinfer.protos.oip import build_infer_request
from coinfer.serving.security import open_channel
from coinfer.bench.malformed import target_from_bundles, valid_infer
from coinfer.bench.raw_calls import COORDINATOR, EDGE, OIP, MalformedCall, send

from reliability_helpers import DEVIT_MODEL, MAX_MESSAGE_BYTES, SPLIT_MODEL

DEADLINE_S = 20.0
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
PRECISE = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.RESOURCE_EXHAUSTED}

datatypes = st.one_of(st.sampled_from(["UINT8"] * 4 + list(DATATYPES) + ["BYTES", "", "uint8"]), st.text(max_size=6))
dims = st.one_of(st.integers(0, 4), st.sampled_from([1, 8]), st.integers(-(2**63), 2**63 - 1))
floats = st.floats(allow_nan=True, allow_infinity=True, width=32)


def _random_shape(draw) -> list[int]:
    return draw(st.one_of(st.tuples(st.integers(0, 3), st.just(1), st.just(8), st.just(8)).map(list), st.lists(dims, max_size=9)))


def _random_contents(draw, tensor) -> None:
    """Typed contents for ``tensor``: a random field with about the right number of random values."""
    size = math.prod(tensor.shape) if all(d >= 0 for d in tensor.shape) else -1
    count = size if 0 <= size <= 4096 else draw(st.integers(0, 64))
    count = max(0, count + draw(st.sampled_from([0, 0, 0, 1, -1])))
    field = draw(st.sampled_from(["uint_contents", "uint_contents", "int_contents", "fp32_contents", "bool_contents", "int64_contents"]))
    values = {
        "uint_contents": st.integers(0, 300), "int_contents": st.integers(-200, 200), "int64_contents": st.integers(-(2**63), 2**63 - 1),
        "fp32_contents": floats, "bool_contents": st.booleans(),
    }[field]
    getattr(tensor.contents, field).extend(draw(st.lists(values, min_size=count, max_size=count)))


FAULTS = ("model", "version", "input-name", "datatype", "shape", "dim", "raw", "raw-length", "raw-entries", "typed",
          "deadline", "outputs", "extra-input", "no-inputs")


@st.composite
def infer_requests(draw) -> pb.ModelInferRequest:
    """A valid ModelInferRequest with zero to three random faults, each field drawn at random."""
    batch = draw(st.sampled_from([1, 1, 2, 3, 0]))
    images = np.frombuffer(draw(st.binary(min_size=64 * batch, max_size=64 * batch)), np.uint8).reshape(batch, 1, 8, 8)
    request = build_infer_request(draw(st.sampled_from([SPLIT_MODEL, DEVIT_MODEL])), {"image": images}, request_id=draw(st.text(max_size=8)))
    for fault in draw(st.lists(st.sampled_from(FAULTS), max_size=3)):
        if fault == "model":
            request.model_name = draw(st.one_of(st.sampled_from(["", "nope", SPLIT_MODEL + " "]), st.text(max_size=12)))
        elif fault == "version":
            request.model_version = draw(st.sampled_from(["1", "2", "0", "latest"]))
        elif fault == "input-name" and len(request.inputs):
            request.inputs[0].name = draw(st.sampled_from(["", "x", "IMAGE"]))
        elif fault == "datatype" and len(request.inputs):
            request.inputs[0].datatype = draw(datatypes)
        elif fault == "shape" and len(request.inputs):
            del request.inputs[0].shape[:]
            request.inputs[0].shape.extend(_random_shape(draw))
        elif fault == "dim" and len(request.inputs) and len(request.inputs[0].shape):
            request.inputs[0].shape[draw(st.integers(0, len(request.inputs[0].shape) - 1))] = draw(dims)
        elif fault == "raw" and len(request.raw_input_contents):
            request.raw_input_contents[0] = draw(st.binary(max_size=300))
        elif fault == "raw-length" and len(request.raw_input_contents):
            raw = request.raw_input_contents[0]
            request.raw_input_contents[0] = raw[: draw(st.integers(0, max(len(raw) - 1, 0)))] if draw(st.booleans()) else raw + draw(st.binary(min_size=1, max_size=8))
        elif fault == "raw-entries":
            request.raw_input_contents.append(draw(st.binary(max_size=64)))
        elif fault == "typed" and len(request.inputs):
            del request.raw_input_contents[:]
            for t in request.inputs:
                _random_contents(draw, t)
        elif fault == "deadline":
            param = request.parameters["deadline_ms"]
            choice = draw(st.sampled_from(["double", "int", "string", "bool"]))
            if choice == "double":
                param.double_param = draw(st.floats())
            elif choice == "int":
                param.int64_param = draw(st.integers(-(2**63), 2**63 - 1))
            elif choice == "string":
                param.string_param = draw(st.text(max_size=5))
            else:
                param.bool_param = draw(st.booleans())
        elif fault == "outputs":
            for name in draw(st.lists(st.sampled_from(["logits", "probs", ""]), min_size=1, max_size=2)):
                request.outputs.add(name=name)
        elif fault == "extra-input":
            extra = request.inputs.add(name=draw(st.sampled_from(["image", "x", ""])), datatype=draw(datatypes), shape=_random_shape(draw))
            if len(request.raw_input_contents):
                request.raw_input_contents.append(draw(st.binary(max_size=300)))
            else:
                _random_contents(draw, extra)
        elif fault == "no-inputs":
            del request.inputs[:]
    return request


def _still_serving(channel: grpc.Channel, target, rng: random.Random) -> None:
    for model in (SPLIT_MODEL, DEVIT_MODEL):
        outcome = send(channel, valid_infer(target, model, rng), DEADLINE_S)
        assert outcome.code == grpc.StatusCode.OK, f"valid {model} request refused after a fuzzed one: {outcome}"


@pytest.fixture(scope="module")
def target(split_bundle, devit_bundle):
    return target_from_bundles(split_bundle, devit_bundle, max_message_bytes=MAX_MESSAGE_BYTES)


@pytest.fixture(scope="module")
def channels(cluster):
    opened = {role: open_channel(address) for role, address in cluster.addresses.items()}
    yield opened
    for channel in opened.values():
        channel.close()


@FUZZ
@given(request=infer_requests(), role=st.sampled_from(["coordinator", "edge-0", "edge-1"]), seed=st.integers(0, 2**16))
def test_random_model_infer_requests(request, role, seed, channels, target) -> None:
    call = MalformedCall("random", "oip", OIP + "ModelInfer", request.SerializeToString(), frozenset())
    outcome = send(channels[role], call, DEADLINE_S)
    event(outcome.code.name)
    if outcome.code == grpc.StatusCode.OK:
        reply = pb.ModelInferResponse.FromString(outcome.response)
        logits = tensor_from_raw(reply.outputs[0].datatype, tuple(reply.outputs[0].shape), reply.raw_output_contents[0])
        assert reply.outputs[0].name == "logits" and logits.shape == (request.inputs[0].shape[0], 10)
    elif outcome.code == grpc.StatusCode.DEADLINE_EXCEEDED:
        # Only the daemon's own refusal of a deadline_ms too short to work in, never gRPC's timeout (a hang).
        assert "deadline_ms" in request.parameters and "deadline leaves" in outcome.details, f"{outcome.details} for {request}"
    else:
        assert outcome.code in PRECISE and outcome.details, f"{outcome.code.name}: {outcome.details} for {request}"
    _still_serving(channels[role], target, random.Random(seed))


def _header(flags: int, dtype_code: int, shape: tuple[int, ...], bits: int = 0) -> bytes:
    return struct.pack("<2sBBBBB", b"CT", 1, flags, dtype_code, len(shape), bits) + struct.pack(f"<{len(shape)}Q", *shape)


@st.composite
def payloads(draw, target) -> list[bytes]:
    """Encoded features: random bytes, a valid payload with bytes flipped, cut or added, or a forged header."""
    point = draw(st.sampled_from(sorted(target.offload_points)))
    shape = (1, *target.offload_points[point])
    dtype = np.uint8 if point == 0 else np.float32
    out = []
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["random", "flip", "cut", "extend", "header", "valid"]))
        good = to_bytes(encode(np.zeros(shape, dtype), bits=draw(st.sampled_from([0, 8, 4, 2])) if point else 0, compress=draw(st.booleans())))
        if kind == "random":
            out.append(draw(st.binary(max_size=200)))
        elif kind == "flip":
            data = bytearray(good)
            for i in draw(st.lists(st.integers(0, len(good) - 1), min_size=1, max_size=3)):
                data[i] ^= draw(st.integers(1, 255))
            out.append(bytes(data))
        elif kind == "cut":
            out.append(good[: draw(st.integers(0, len(good) - 1))])
        elif kind == "extend":
            out.append(good + draw(st.binary(min_size=1, max_size=16)))
        elif kind == "header":
            forged = draw(st.lists(st.one_of(st.integers(0, 16), st.integers(0, 2**64 - 1)), max_size=9))
            out.append(_header(draw(st.integers(0, 3)), draw(st.integers(0, 13)), tuple(forged), draw(st.sampled_from([0, 2, 4, 8, 3]))) + draw(st.binary(max_size=64)))
        else:
            out.append(good)
    return out


@FUZZ
@given(data=st.data(), seed=st.integers(0, 2**16))
def test_random_offload_payloads(data, seed, channels, target) -> None:
    payload_list = data.draw(payloads(target))
    points = st.sampled_from(sorted(target.offload_points))
    point = data.draw(st.one_of(points, points, points, st.integers(-(2**31), 2**31 - 1)))
    request = v1.OffloadRequest(model_name=data.draw(st.sampled_from([SPLIT_MODEL, SPLIT_MODEL, "", DEVIT_MODEL])), split_point=point)
    if len(payload_list) == 1 and data.draw(st.booleans()):
        request.payload = payload_list[0]
    else:
        request.payloads.extend(payload_list)
    outcome = send(channels["coordinator"], MalformedCall("random", "coordinator", COORDINATOR + "Offload", request.SerializeToString(), frozenset()), DEADLINE_S)
    event(outcome.code.name)
    if outcome.code == grpc.StatusCode.OK:
        reply = v1.OffloadResponse.FromString(outcome.response)
        logits = tensor_from_raw(reply.datatype, tuple(reply.shape), reply.logits)
        assert logits.dtype == np.float32 and logits.shape[1:] == (10,)
    else:
        allowed = PRECISE | {grpc.StatusCode.FAILED_PRECONDITION}  # a point the model does not offload at
        assert outcome.code in allowed and outcome.details, f"{outcome.code.name}: {outcome.details}"
    _still_serving(channels["coordinator"], target, random.Random(seed))


SUBMODEL_FAULTS = ("model", "bundle", "part", "datatype", "shape", "dim", "raw", "raw-length")


@FUZZ
@given(data=st.data(), role=st.sampled_from(["edge-0", "edge-1"]))
def test_random_run_submodel_requests(data, role, cluster, channels) -> None:
    edge = cluster.edges[int(role[-1])]
    held = edge.daemon.assignment.submodels[0]
    batch = data.draw(st.sampled_from([1, 1, 2, 0]))
    images = v1.RawTensor(datatype="UINT8", shape=[batch, 1, 8, 8], data=data.draw(st.binary(min_size=64 * batch, max_size=64 * batch)))
    request = v1.RunSubModelRequest(model_name=held.model_name, bundle=held.bundle, part=held.part, images=images)
    for fault in data.draw(st.lists(st.sampled_from(SUBMODEL_FAULTS), max_size=3)):
        if fault in ("model", "bundle", "part"):
            setattr(request, fault if fault != "model" else "model_name", data.draw(st.one_of(st.sampled_from(["", "fusion", "device-9", SPLIT_MODEL]), st.text(max_size=10))))
        elif fault == "datatype":
            request.images.datatype = data.draw(datatypes)
        elif fault == "shape":
            del request.images.shape[:]
            request.images.shape.extend(_random_shape(data.draw))
        elif fault == "dim" and len(request.images.shape):
            request.images.shape[data.draw(st.integers(0, len(request.images.shape) - 1))] = data.draw(dims)
        elif fault == "raw":
            request.images.data = data.draw(st.binary(max_size=300))
        elif fault == "raw-length":
            raw = request.images.data
            request.images.data = raw[:-1] if raw and data.draw(st.booleans()) else raw + b"\0"
    outcome = send(channels[role], MalformedCall("random", "edge", EDGE + "RunSubModel", request.SerializeToString(), frozenset()), DEADLINE_S)
    event(outcome.code.name)
    if outcome.code == grpc.StatusCode.OK:
        reply = v1.RunSubModelResponse.FromString(outcome.response)
        feature = tensor_from_raw(reply.feature.datatype, tuple(reply.feature.shape), reply.feature.data)
        assert feature.dtype == np.float32 and feature.shape[0] == request.images.shape[0] and reply.device_name == edge.daemon.config.name
    else:
        allowed = PRECISE | {grpc.StatusCode.FAILED_PRECONDITION}  # a sub-model this device does not run
        assert outcome.code in allowed and outcome.details, f"{outcome.code.name}: {outcome.details}"


# The registry's RPCs go to a coordinator of their own, with a live scheduler reading what devices
# report: fuzzed registrations and heartbeats must not disturb the cluster the other tests share.


@pytest.fixture(scope="module")
def scheduled(split_bundle, devit_bundle):
    from coinfer.serving.server import ServerOptions
    from coinfer.server.coordinator import CoordinatorConfig
    from coinfer.server.scheduler import SchedulerConfig
    from coinfer.server.serve import start_coordinator

    server = start_coordinator(
        [devit_bundle.path, split_bundle.path],
        ServerOptions(listen="127.0.0.1:0", grace_s=0.2, max_message_bytes=MAX_MESSAGE_BYTES),
        CoordinatorConfig(heartbeat_interval_s=0.2, device_timeout_s=2.0),
        scheduler=SchedulerConfig(policy="random", slot_s=0.05),
    )
    with open_channel(server.address) as channel:
        yield server, channel
    server.stop()


device_fields = st.fixed_dictionaries({
    "name": st.one_of(st.just(""), st.text(min_size=1, max_size=12).map(lambda s: "fz-" + s)),
    "address": st.one_of(st.just(""), st.just("127.0.0.1:1"), st.text(max_size=20)),
    "platform": st.text(max_size=10),
    "cpu_count": st.integers(-(2**31), 2**31 - 1),
    "memory_total_bytes": st.integers(-(2**63), 2**63 - 1),
    "profile": st.text(max_size=10),
    "distance_m": st.floats(),
})
load_fields = st.fixed_dictionaries({
    "cpu_percent": st.floats(), "memory_percent": st.floats(), "queue_length": st.integers(-(2**31), 2**31 - 1),
    "assignment_generation": st.integers(0, 2**64 - 1), "rtt_ms": st.floats(), "uplink_bytes_per_s": st.floats(),
    "in_compute": st.integers(-(2**31), 2**31 - 1), "in_offload": st.integers(-(2**31), 2**31 - 1),
    "requests_total": st.integers(0, 2**64 - 1), "uplink_energy_j": st.floats(),
})


@FUZZ
@given(device=device_fields, load=load_fields, parts=st.lists(st.text(max_size=30), max_size=4), temperature=st.one_of(st.none(), st.floats()),
       known_id=st.booleans())
def test_random_registrations_and_heartbeats_leave_the_registry_and_scheduler_working(device, load, parts, temperature, known_id, scheduled) -> None:
    _, channel = scheduled
    _register_and_beat(channel, device, load, parts, temperature, known_id)


def _register_and_beat(channel, device: dict, load: dict, parts: list[str], temperature: float | None, known_id: bool) -> None:
    """Register ``device``, then heartbeat ``load`` for it (or for an unknown id): each answered as it must be."""
    stub_register = channel.unary_unary(COORDINATOR + "Register", request_serializer=lambda m: m.SerializeToString(), response_deserializer=v1.RegisterResponse.FromString)
    stub_beat = channel.unary_unary(COORDINATOR + "Heartbeat", request_serializer=lambda m: m.SerializeToString(), response_deserializer=v1.HeartbeatResponse.FromString)
    device_id = "fz-unknown"
    try:
        reply = stub_register(v1.RegisterRequest(device=v1.DeviceInfo(**device)), timeout=DEADLINE_S)
        device_id = reply.device_id
        assert device["name"] and device["address"], "an incomplete registration was accepted"
        assert reply.assignment.model_name == SPLIT_MODEL and reply.heartbeat_interval_ms > 0
    except grpc.RpcError as exc:
        assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT and exc.details()
    beat = v1.HeartbeatRequest(device_id=device_id if known_id else "fz-unknown", name=device["name"], parts_held=parts, **load)
    if temperature is not None:
        beat.temperature_c = temperature
    try:
        stub_beat(beat, timeout=DEADLINE_S)
        assert known_id and device_id != "fz-unknown"
    except grpc.RpcError as exc:
        assert exc.code() == grpc.StatusCode.FAILED_PRECONDITION and "register again" in exc.details()


def test_after_odd_registrations_the_scheduler_and_the_part_store_still_work(scheduled, split_bundle) -> None:
    """Whatever ran before it: odd devices register and report here, then the scheduler still decides every slot."""
    import time

    server, channel = scheduled
    nan, huge = float("nan"), 2**63 - 1
    for i, (distance_m, cpu_percent, temperature) in enumerate([(nan, nan, nan), (-1.0, 1e308, -273.0), (0.0, -5.0, None)]):
        device = {"name": f"fz-odd-{i}", "address": "127.0.0.1:1", "platform": "", "cpu_count": -1,
                  "memory_total_bytes": huge, "profile": "?", "distance_m": distance_m}
        load = {"cpu_percent": cpu_percent, "queue_length": -(2**31), "rtt_ms": nan, "uplink_bytes_per_s": -1.0,
                "requests_total": 2**64 - 1, "uplink_energy_j": float("inf")}
        _register_and_beat(channel, device, load, ["x", ""], temperature, known_id=i != 2)
    slots = server.scheduler.slots
    deadline = time.monotonic() + 10.0  # slots of 50 ms: three take 0.15 s on an idle machine
    while server.scheduler.slots < slots + 3:
        assert time.monotonic() < deadline and server.scheduler._thread.is_alive(), "the scheduler stopped deciding"
        time.sleep(0.05)
    assert server.scheduler._thread.is_alive()
    fetch = channel.unary_stream(COORDINATOR + "FetchPart", request_serializer=lambda m: m.SerializeToString(), response_deserializer=v1.PartChunk.FromString)
    spec = split_bundle.part("point1.encoder")
    chunks = list(fetch(v1.FetchPartRequest(bundle=split_bundle.name, part=spec.name), timeout=DEADLINE_S))
    assert sum(len(c.data) for c in chunks) == spec.size_bytes


@FUZZ
@given(bundle=st.one_of(st.sampled_from(["rel-split", "rel-devit"]), st.text(max_size=20)),
       part=st.one_of(st.sampled_from(["model", "point2.head", "fusion", "manifest.json", "../manifest.json", ""]), st.text(max_size=20)),
       offset=st.one_of(st.integers(-4, 4), st.integers(-(2**63), 2**63 - 1)),
       # Chunks of a few bytes would stream a 3 MB part in a million messages (the coordinator sets no floor on chunk_bytes).
       chunk=st.one_of(st.integers(-(2**31), 0), st.integers(16 * 1024, 2**31 - 1)))
def test_random_part_fetches(bundle, part, offset, chunk, scheduled, split_bundle) -> None:
    _, channel = scheduled
    fetch = channel.unary_stream(COORDINATOR + "FetchPart", request_serializer=lambda m: m.SerializeToString(), response_deserializer=v1.PartChunk.FromString)
    try:
        chunks = list(fetch(v1.FetchPartRequest(bundle=bundle, part=part, offset=offset, chunk_bytes=chunk), timeout=DEADLINE_S))
    except grpc.RpcError as exc:
        # RESOURCE_EXHAUSTED: a chunk size under the coordinator's cap (4 MiB) but over this server's 1 MiB message limit.
        assert exc.code() in PRECISE and exc.details(), f"{exc.code().name}: {exc.details()}"
        return
    spec = split_bundle.part(part) if bundle == split_bundle.name else None
    assert chunks and all(c.offset >= 0 for c in chunks)
    if spec is not None:
        assert offset + sum(len(c.data) for c in chunks) == spec.size_bytes
        assert all(c.sha256 == spec.sha256 for c in chunks)


def _served_methods() -> list[tuple[str, str, bool]]:
    """(role, method path, response-streaming) of every method each daemon serves."""
    out = []
    for role, services in (("coordinator", ((pb, "GRPCInferenceService"), (v1, "Coordinator"))), ("edge-0", ((pb, "GRPCInferenceService"), (v1, "Edge")))):
        for module, name in services:
            service = module.DESCRIPTOR.services_by_name[name]
            out += [(role, f"/{service.full_name}/{m.name}", m.server_streaming) for m in service.methods]
    return out


@FUZZ
@given(target=st.sampled_from(_served_methods()), payload=st.one_of(st.binary(max_size=200), st.just(b"\x0a\xff\xff\x03")))
def test_random_bytes_to_every_method(target, payload, channels) -> None:
    """Bytes that may or may not parse: gRPC refuses what does not parse, coinfer answers the rest precisely."""
    role, path, streaming = target
    outcome = send(channels[role], MalformedCall("random-bytes", "any", path, payload, frozenset(), streaming), DEADLINE_S)
    event(outcome.code.name)
    if outcome.code == grpc.StatusCode.INTERNAL:
        assert "deserializ" in outcome.details.lower(), f"{path}: coinfer answered INTERNAL: {outcome.details}"
    else:
        assert outcome.code not in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.DEADLINE_EXCEEDED), f"{path}: {outcome}"
        assert outcome.code == grpc.StatusCode.OK or outcome.details, f"{path}: {outcome.code.name} without a message"

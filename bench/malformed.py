"""A catalogue of malformed requests for every RPC of both daemons, each with the status it deserves.

Each case builds one request from a `FuzzTarget` (the models, shapes and parts a deployment
serves) and a seeded random generator, and names the status codes that count as a precise
refusal. Requests are serialised bytes sent over generic calls (`coinfer.bench.raw_calls`), so a
case can also send bytes that are not a valid message at all. The reliability tests run every
case against in-process daemons; the reliability benchmark draws ten thousand of them against
real processes.

Services: ``"oip"`` (the Open Inference Protocol front door of the coordinator and of every
edge), ``"coordinator"`` (coinfer.v1.Coordinator) and ``"edge"`` (coinfer.v1.Edge).
"""

from __future__ import annotations

import random
import struct
import zlib
from dataclasses import dataclass
from typing import Callable

import grpc
import numpy as np

from coinfer.core.bundle import Bundle
from coinfer.core.codec import encode, to_bytes
from coinfer.core.model_io import DEFAULT_MAX_BATCH, IMAGE_INPUT
from coinfer.protos import coinfer_v1_pb2 as v1
from coinfer.protos import inference_pb2 as pb
from coinfer.protos.oip import build_infer_request
from coinfer.bench.raw_calls import COORDINATOR, EDGE, OIP, Code, MalformedCall


@dataclass(frozen=True)
class FuzzTarget:
    """What the malformed requests are built from."""

    split_model: str
    """Split model served by the coordinator and every edge."""
    devit_model: str | None
    """DeViT model served by the coordinator and forwarded by edges (None = none)."""
    image_shape: tuple[int, int, int]
    """(C, H, W) of one uint8 input image."""
    offload_points: dict[int, tuple[int, ...]]
    """Split point -> shape of one image's FP32 feature the coordinator's tail takes (point 0: the image)."""
    local_point: int
    """The split point that runs everything on the device (no offload)."""
    bundle: str
    """The split bundle's name (for FetchPart)."""
    part: str
    """One of its parts."""
    part_size_bytes: int
    max_batch: int = DEFAULT_MAX_BATCH
    """Largest batch the daemons accept."""
    max_message_bytes: int = 1 << 20
    """The daemons' message size limit (oversized cases send more)."""
    submodel: tuple[str, str, str] | None = None
    """(model, bundle, part) of a DeViT sub-model held by the edge the "edge" cases are sent to."""


def target_from_bundles(split: Bundle, devit: Bundle | None = None, *, max_message_bytes: int = 1 << 20,
                        submodel_part: str | None = None) -> FuzzTarget:
    """A FuzzTarget for a coordinator serving ``split`` (coinfer.split/1) and optionally ``devit``."""
    from coinfer.core.devit_bundle import read_devit_layout
    from coinfer.core.split_point import load_split_plan
    from coinfer.server.deployment import ServingSettings

    plan = load_split_plan(split)
    points: dict[int, tuple[int, ...]] = {}
    local = max(p.index for p in plan.points)
    for p in plan.points:
        if not p.offload:
            local = p.index
        elif p.sends_image:
            points[0] = tuple(plan.input_shape)
        else:
            first = split.part(p.server_parts[0]).inputs[0]
            points[p.index] = tuple(first.shape[1:])
    devit_name, submodel = None, None
    if devit is not None:
        layout = read_devit_layout(devit)
        devit_name = layout.model_name
        submodel = (devit_name, devit.name, submodel_part or layout.submodel_parts[0])
    spec = split.manifest.parts[0]
    return FuzzTarget(
        split_model=ServingSettings.from_metadata(split).model_name,
        devit_model=devit_name,
        image_shape=tuple(plan.input_shape),  # type: ignore[arg-type]
        offload_points=points,
        local_point=local,
        bundle=split.name,
        part=spec.name,
        part_size_bytes=spec.size_bytes,
        max_message_bytes=max_message_bytes,
        submodel=submodel,
    )


CaseFn = Callable[[FuzzTarget, random.Random], tuple[bytes, frozenset]]


@dataclass(frozen=True)
class Case:
    name: str
    service: str
    method: str
    build: CaseFn
    streaming: bool = False

    def make(self, target: FuzzTarget, rng: random.Random) -> MalformedCall:
        prefix = {"oip": OIP, "coordinator": COORDINATOR, "edge": EDGE}[self.service]
        payload, expected = self.build(target, rng)
        return MalformedCall(self.name, self.service, prefix + self.method, payload, expected, self.streaming)


def _codes(*codes: grpc.StatusCode) -> frozenset:
    return frozenset(codes)


BAD_ARG, NOT_FOUND, PRECOND, TOO_BIG = (
    _codes(Code.INVALID_ARGUMENT), _codes(Code.NOT_FOUND), _codes(Code.FAILED_PRECONDITION), _codes(Code.RESOURCE_EXHAUSTED)
)


# Open Inference Protocol ----------------------------------------------------------------------


def _model(t: FuzzTarget, rng: random.Random) -> str:
    return rng.choice([m for m in (t.split_model, t.devit_model) if m])


def _images(t: FuzzTarget, rng: random.Random, batch: int | None = None) -> np.ndarray:
    n = rng.randint(1, 3) if batch is None else batch
    return np.frombuffer(rng.randbytes(n * int(np.prod(t.image_shape))), np.uint8).reshape(n, *t.image_shape)


def _valid(t: FuzzTarget, rng: random.Random) -> pb.ModelInferRequest:
    return build_infer_request(_model(t, rng), {IMAGE_INPUT: _images(t, rng)}, request_id=f"fuzz-{rng.getrandbits(32):08x}")


def _oip(mutate: Callable[[pb.ModelInferRequest, FuzzTarget, random.Random], None], expected: frozenset) -> CaseFn:
    def build(t: FuzzTarget, rng: random.Random) -> tuple[bytes, frozenset]:
        request = _valid(t, rng)
        mutate(request, t, rng)
        return request.SerializeToString(), expected

    return build


def _set(field: str, value: object) -> Callable:
    def mutate(r, t, rng) -> None:
        setattr(r, field, value(rng) if callable(value) else value)

    return mutate


def _unknown_name(rng: random.Random) -> str:
    return rng.choice(["nope", "../rel", "x" * 300, "\u00e9\u4e2d", " ", "rel-split "]) + str(rng.randint(0, 9))


def _wrong_datatype(r, t, rng) -> None:
    datatype = rng.choice(["FP32", "INT8", "FP16", "UINT16", "BYTES", "", "uint8", "FP33"])
    tensor = r.inputs[0]
    tensor.datatype = datatype
    itemsize = {"FP32": 4, "FP16": 2, "UINT16": 2}.get(datatype, 1)
    r.raw_input_contents[0] = r.raw_input_contents[0] * itemsize


def _shape(kind: str) -> Callable:
    def mutate(r, t, rng) -> None:
        shape = list(r.inputs[0].shape)
        if kind == "zero":
            shape[rng.randint(1, len(shape) - 1)] = 0
        elif kind == "negative":
            shape[rng.randrange(len(shape))] = rng.choice([-1, -2, -(2**63)])
        elif kind == "huge":
            shape[rng.randrange(len(shape))] = rng.choice([2**31, 2**40, 2**63 - 1])
        elif kind == "rank":
            shape = shape + [1] * rng.randint(1, 6) if rng.random() < 0.5 else shape[: rng.randint(0, len(shape) - 1)]
        del r.inputs[0].shape[:]
        r.inputs[0].shape.extend(shape)

    return mutate


def _bytes_off_by_one(r, t, rng) -> None:
    raw = r.raw_input_contents[0]
    r.raw_input_contents[0] = raw[:-1] if rng.random() < 0.5 else raw + b"\0"


def _raw_count(r, t, rng) -> None:
    r.raw_input_contents.append(b"\0" * rng.randint(0, 64))


def _mixed_contents(r, t, rng) -> None:
    r.inputs[0].contents.uint_contents.extend([0] * 4)


def _typed(kind: str) -> Callable:
    def mutate(r, t, rng) -> None:
        values = list(np.frombuffer(r.raw_input_contents[0], np.uint8).astype(int))
        del r.raw_input_contents[:]
        contents = r.inputs[0].contents
        if kind == "count":
            values = values[: -rng.randint(1, len(values))] if rng.random() < 0.5 else values + [0]
            contents.uint_contents.extend(values)
        elif kind == "range":
            values[rng.randrange(len(values))] = rng.choice([256, 1000, 2**32 - 1])
            contents.uint_contents.extend(values)
        elif kind == "field":  # FP32 values, some NaN or Inf, for a UINT8 input
            floats = [float(v) for v in values]
            floats[rng.randrange(len(floats))] = rng.choice([float("nan"), float("inf"), -float("inf")])
            contents.fp32_contents.extend(floats)

    return mutate


def _float_input(r, t, rng) -> None:
    n = r.inputs[0].shape[0]
    values = np.full((n, *t.image_shape), rng.choice([np.nan, np.inf, -np.inf, 0.5]), np.float32)
    r.inputs[0].datatype = "FP32"
    r.raw_input_contents[0] = values.tobytes()


def _duplicate_input(r, t, rng) -> None:
    r.inputs.add().CopyFrom(r.inputs[0])
    r.raw_input_contents.append(r.raw_input_contents[0])


def _rename_input(name: str) -> Callable:
    def mutate(r, t, rng) -> None:
        r.inputs[0].name = name

    return mutate


def _no_inputs(r, t, rng) -> None:
    del r.inputs[:]
    del r.raw_input_contents[:]


def _oversized_batch(r, t, rng) -> None:
    images = _images(t, rng, t.max_batch + rng.randint(1, 16))
    fresh = build_infer_request(r.model_name, {IMAGE_INPUT: images})
    r.CopyFrom(fresh)


def _unknown_output(r, t, rng) -> None:
    r.outputs.add(name=rng.choice(["probs", "", "logits2"]))


def _bad_deadline(r, t, rng) -> None:
    param = r.parameters["deadline_ms"]
    choice = rng.randrange(5)
    if choice == 0:
        param.double_param = rng.choice([0.0, -1.0, float("nan"), -float("inf")])
    elif choice == 1:
        param.int64_param = rng.choice([0, -1, -(2**63)])
    elif choice == 2:
        param.string_param = "100"
    elif choice == 3:
        param.bool_param = True
    else:
        param.uint64_param = 0


def _oversized_message(t: FuzzTarget, rng: random.Random) -> tuple[bytes, frozenset]:
    side = int(np.prod(t.image_shape))
    n = t.max_message_bytes // side + 1 + rng.randint(0, 8)
    request = build_infer_request(_model(t, rng), {IMAGE_INPUT: np.zeros((n, *t.image_shape), np.uint8)})
    return request.SerializeToString(), TOO_BIG


def _undecodable(t: FuzzTarget, rng: random.Random) -> tuple[bytes, frozenset]:
    # A field-1 tag announcing a string longer than the message: no protobuf parser accepts it.
    return b"\x0a\xff\xff\x03" + rng.randbytes(rng.randint(0, 16)), _codes(Code.INTERNAL)


def _metadata(kind: str) -> CaseFn:
    def build(t: FuzzTarget, rng: random.Random) -> tuple[bytes, frozenset]:
        if kind == "name":
            request = pb.ModelMetadataRequest(name=_unknown_name(rng))
        else:
            request = pb.ModelMetadataRequest(name=_model(t, rng), version=rng.choice(["2", "0", "latest"]))
        return request.SerializeToString(), NOT_FOUND

    return build


def _ready(t: FuzzTarget, rng: random.Random) -> tuple[bytes, frozenset]:
    return pb.ModelReadyRequest(name=_unknown_name(rng)).SerializeToString(), NOT_FOUND


# coinfer.v1.Coordinator -----------------------------------------------------------------------


def _register(t: FuzzTarget, rng: random.Random) -> tuple[bytes, frozenset]:
    device = v1.DeviceInfo(name="fuzz-" + str(rng.randint(0, 99)), address="127.0.0.1:1")
    if rng.random() < 0.5:
        device.name = ""
    else:
        device.address = ""
    return v1.RegisterRequest(device=device).SerializeToString(), BAD_ARG


def _register_speed(t: FuzzTarget, rng: random.Random) -> tuple[bytes, frozenset]:
    """A device reporting a speed no device has: zero, negative, not a number, absurdly fast."""
    speed = v1.DeviceSpeed(relative_speed=rng.choice([0.0, -1.0, float("nan"), float("inf"), 1e9]))
    device = v1.DeviceInfo(name="fuzz-" + str(rng.randint(0, 99)), address="127.0.0.1:1", speed=speed)
    return v1.RegisterRequest(device=device).SerializeToString(), BAD_ARG


def _calibrate(t: FuzzTarget, rng: random.Random) -> tuple[bytes, frozenset]:
    return v1.CalibrateRequest(device_names=[_unknown_name(rng)]).SerializeToString(), NOT_FOUND


def _heartbeat(t: FuzzTarget, rng: random.Random) -> tuple[bytes, frozenset]:
    if rng.random() < 0.3:
        return v1.HeartbeatRequest(cpu_percent=rng.random() * 100).SerializeToString(), BAD_ARG
    request = v1.HeartbeatRequest(device_id=_unknown_name(rng), name="ghost", cpu_percent=float("nan"), queue_length=-5)
    request.parts_held.append(f"{t.bundle}/{t.part}")
    return request.SerializeToString(), PRECOND


def _fetch(kind: str) -> CaseFn:
    def build(t: FuzzTarget, rng: random.Random) -> tuple[bytes, frozenset]:
        request = v1.FetchPartRequest(bundle=t.bundle, part=t.part)
        expected = BAD_ARG
        if kind == "bundle":
            request.bundle, expected = rng.choice(["", "..", "/", "../" + t.bundle, _unknown_name(rng)]), NOT_FOUND
        elif kind == "part":
            request.part, expected = rng.choice(["", "manifest.json", "../manifest.json", "/etc/passwd", _unknown_name(rng)]), NOT_FOUND
        elif kind == "offset":
            request.offset = rng.choice([-1, -(2**63), t.part_size_bytes + 1, 2**63 - 1])
        else:
            request.chunk_bytes = rng.choice([-1, -(2**31)])
        return request.SerializeToString(), expected

    return build


def _point(t: FuzzTarget, rng: random.Random) -> int:
    return rng.choice(sorted(t.offload_points))


def _feature(t: FuzzTarget, point: int, batch: int = 1) -> np.ndarray:
    shape = t.offload_points[point]
    if point == 0:
        return np.zeros((batch, *shape), np.uint8)
    return np.zeros((batch, *shape), np.float32)


def _offload(kind: str) -> CaseFn:
    def build(t: FuzzTarget, rng: random.Random) -> tuple[bytes, frozenset]:
        point = _point(t, rng)
        good = to_bytes(encode(_feature(t, point)))
        request = v1.OffloadRequest(model_name=t.split_model, split_point=point, request_id="fuzz")
        expected = BAD_ARG
        if kind == "empty":
            pass
        elif kind == "garbage":
            request.payloads.append(rng.choice([b"x", b"CT", b"not a tensor at all", rng.randbytes(rng.randint(1, 64))]))
        elif kind == "truncated":
            request.payloads.append(good[: rng.randint(0, len(good) - 1)])
        elif kind == "extended":
            request.payloads.append(good + b"\0" * rng.randint(1, 8))
        elif kind == "both":
            request.payload = good
            request.payloads.append(good)
        elif kind == "empty-item":
            request.payloads.extend([good, b""])
        elif kind == "model":
            request.model_name, expected = _unknown_name(rng), NOT_FOUND
            request.payloads.append(good)
        elif kind == "point":
            request.split_point, expected = rng.choice([t.local_point, -1, 99, 2**31 - 1]), PRECOND
            request.payloads.append(good)
        elif kind == "shape":
            feature = _feature(t, point)
            request.payloads.append(to_bytes(encode(feature[..., : max(1, feature.shape[-1] // 2)].copy() if feature.shape[-1] > 1 else feature.reshape(-1))))
        elif kind == "dtype":
            feature = _feature(t, point)
            other = feature.astype(np.float64 if point == 0 else np.uint8)
            request.payloads.append(to_bytes(encode(other)))
        elif kind == "mixed-images":
            other = rng.choice([p for p in t.offload_points if t.offload_points[p] != t.offload_points[point]] or [point])
            request.payloads.extend([good, to_bytes(encode(_feature(t, other)[..., :1].copy()))])
        elif kind == "batch":
            request.payloads.extend([good] * (t.max_batch + 1))
        elif kind == "huge-shape":
            request.payloads.append(_header(ndim=2, shape=(2**40, 2**20)) + b"\0" * 16)
        elif kind == "bomb":  # compressed, claiming a shape no memory holds
            request.payloads.append(_header(ndim=1, shape=(2**62,), flags=2) + zlib.compress(b"\0" * 64))
        elif kind == "scalars":
            scalar = to_bytes(encode(np.float32(1.0).reshape(())))
            request.payloads.extend([scalar, scalar])
        elif kind == "non-finite":
            point = rng.choice([p for p in t.offload_points if p != 0] or [point])
            request.split_point = point
            request.payloads.append(to_bytes(encode(np.full((1, *t.offload_points[point]), rng.choice([np.nan, np.inf, -np.inf]), np.float32))))
        return request.SerializeToString(), expected

    return build


def _header(*, ndim: int, shape: tuple[int, ...], flags: int = 0) -> bytes:
    # The codec's header (see core/codec.py): magic, version, flags, FP32, ndim, bits; then the shape.
    return struct.pack("<2sBBBBB", b"CT", 1, flags, 10, ndim, 0) + struct.pack(f"<{ndim}Q", *shape)


# coinfer.v1.Edge --------------------------------------------------------------------------------


def _run_submodel(kind: str) -> CaseFn:
    def build(t: FuzzTarget, rng: random.Random) -> tuple[bytes, frozenset]:
        model, bundle, part = t.submodel or ("none", "none", "none")
        images = _images(t, rng)
        tensor = v1.RawTensor(datatype="UINT8", shape=list(images.shape), data=images.tobytes())
        expected = BAD_ARG
        if kind == "part":
            part, expected = rng.choice(["device-99", "", "../fusion", part + "x"]), PRECOND
        elif kind == "model":
            model, expected = _unknown_name(rng), PRECOND
        elif kind == "dtype":
            tensor.datatype = rng.choice(["FP32", "INT8", "", "BYTES"])
        elif kind == "rank":
            del tensor.shape[:]
            tensor.shape.extend(rng.choice([[], [len(images)], list(images.shape) + [1]]))
        elif kind == "bytes":
            tensor.data = tensor.data[:-1] if rng.random() < 0.5 else tensor.data + b"\0"
        elif kind == "size":
            tensor.shape[-1] += rng.choice([-1, 1, 8])
            tensor.data = b"\0" * int(np.prod(tensor.shape))
        elif kind == "huge":
            tensor.shape[0] = 2**40
        elif kind == "empty":
            tensor = v1.RawTensor()
        request = v1.RunSubModelRequest(model_name=model, bundle=bundle, part=part, images=tensor, request_id="fuzz")
        return request.SerializeToString(), expected

    return build


CASES: tuple[Case, ...] = (
    Case("empty-request", "oip", "ModelInfer", lambda t, rng: (b"", NOT_FOUND)),
    Case("unknown-model", "oip", "ModelInfer", _oip(_set("model_name", _unknown_name), NOT_FOUND)),
    Case("unknown-version", "oip", "ModelInfer", _oip(_set("model_version", lambda rng: rng.choice(["2", "0", "v1"])), NOT_FOUND)),
    Case("no-inputs", "oip", "ModelInfer", _oip(_no_inputs, BAD_ARG)),
    Case("unnamed-input", "oip", "ModelInfer", _oip(_rename_input(""), BAD_ARG)),
    Case("unknown-input", "oip", "ModelInfer", _oip(_rename_input("pixels"), BAD_ARG)),
    Case("duplicate-input", "oip", "ModelInfer", _oip(_duplicate_input, BAD_ARG)),
    Case("wrong-datatype", "oip", "ModelInfer", _oip(_wrong_datatype, BAD_ARG)),
    Case("float-input-nan-inf", "oip", "ModelInfer", _oip(_float_input, BAD_ARG)),
    Case("shape-zero-dim", "oip", "ModelInfer", _oip(_shape("zero"), BAD_ARG)),
    Case("shape-negative", "oip", "ModelInfer", _oip(_shape("negative"), BAD_ARG)),
    Case("shape-huge", "oip", "ModelInfer", _oip(_shape("huge"), BAD_ARG)),
    Case("shape-rank", "oip", "ModelInfer", _oip(_shape("rank"), BAD_ARG)),
    Case("bytes-off-by-one", "oip", "ModelInfer", _oip(_bytes_off_by_one, BAD_ARG)),
    Case("raw-count", "oip", "ModelInfer", _oip(_raw_count, BAD_ARG)),
    Case("raw-and-typed", "oip", "ModelInfer", _oip(_mixed_contents, BAD_ARG)),
    Case("typed-count", "oip", "ModelInfer", _oip(_typed("count"), BAD_ARG)),
    Case("typed-range", "oip", "ModelInfer", _oip(_typed("range"), BAD_ARG)),
    Case("typed-field-nan", "oip", "ModelInfer", _oip(_typed("field"), BAD_ARG)),
    Case("oversized-batch", "oip", "ModelInfer", _oip(_oversized_batch, TOO_BIG)),
    Case("unknown-output", "oip", "ModelInfer", _oip(_unknown_output, BAD_ARG)),
    Case("bad-deadline", "oip", "ModelInfer", _oip(_bad_deadline, BAD_ARG)),
    Case("oversized-message", "oip", "ModelInfer", _oversized_message),
    Case("undecodable", "oip", "ModelInfer", _undecodable),
    Case("metadata-unknown-model", "oip", "ModelMetadata", _metadata("name")),
    Case("metadata-unknown-version", "oip", "ModelMetadata", _metadata("version")),
    Case("ready-unknown-model", "oip", "ModelReady", _ready),
    Case("register-incomplete", "coordinator", "Register", _register),
    Case("register-speed", "coordinator", "Register", _register_speed),
    Case("heartbeat-unknown", "coordinator", "Heartbeat", _heartbeat),
    Case("calibrate-unknown", "coordinator", "Calibrate", _calibrate),
    Case("fetch-bundle", "coordinator", "FetchPart", _fetch("bundle"), streaming=True),
    Case("fetch-part", "coordinator", "FetchPart", _fetch("part"), streaming=True),
    Case("fetch-offset", "coordinator", "FetchPart", _fetch("offset"), streaming=True),
    Case("fetch-chunk", "coordinator", "FetchPart", _fetch("chunk"), streaming=True),
    *(Case(f"offload-{kind}", "coordinator", "Offload", _offload(kind)) for kind in (
        "empty", "garbage", "truncated", "extended", "both", "empty-item", "model", "point", "shape", "dtype",
        "mixed-images", "batch", "huge-shape", "bomb", "scalars", "non-finite",
    )),
    *(Case(f"submodel-{kind}", "edge", "RunSubModel", _run_submodel(kind)) for kind in (
        "part", "model", "dtype", "rank", "bytes", "size", "huge", "empty",
    )),
)
CASES_BY_NAME = {case.name: case for case in CASES}


def valid_infer(t: FuzzTarget, model: str, rng: random.Random) -> MalformedCall:
    """A well-formed ModelInfer (expected OK), sent between malformed ones."""
    request = build_infer_request(model, {IMAGE_INPUT: _images(t, rng, 1)})
    return MalformedCall("valid", "oip", OIP + "ModelInfer", request.SerializeToString(), frozenset({Code.OK}))

"""The Open Inference Protocol front door, shared by the coordinator and the edge daemon.

A thin servicer: it decodes and validates the request (`oip`), asks a `ModelRepository` for the
model, calls it with plain arrays and an `InferCall` (request id, parameters, the caller's
deadline), and encodes the answer. What a model *does* (run a whole network, a head plus a
remote tail, or a fan-out to devices) lives behind the `ServedModel` protocol in each role.
Errors are raised as coinfer errors; the interceptor turns them into status codes. An optional
`RequestObserver` sees every ModelInfer's model, outcome and duration (Prometheus metrics).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Mapping, Protocol, Sequence

import numpy as np

from coinfer.core.errors import InvalidInput, NotFound, ResourceExhausted, Unavailable
from coinfer.core.version import __version__
from coinfer.protos import inference_pb2 as pb
from coinfer.protos import inference_pb2_grpc as pb_grpc
from coinfer.serving.interceptors import status_of
from coinfer.protos.oip import (
    ParameterValue,
    TensorMeta,
    check_inputs,
    check_requested_outputs,
    infer_request_from_proto,
    infer_response_to_proto,
    model_metadata_to_proto,
)

SERVICE_NAME = "inference.GRPCInferenceService"


@dataclass(frozen=True)
class InferResult:
    """What a model returns: outputs by name, plus optional response parameters (timings)."""

    outputs: Mapping[str, np.ndarray]
    parameters: Mapping[str, ParameterValue]


@dataclass(frozen=True)
class InferCall:
    """What a model needs to know about the call besides its inputs."""

    request_id: str
    parameters: Mapping[str, ParameterValue]
    """The request's OIP parameters."""
    deadline: float | None = None
    """`time.monotonic()` by which the caller wants the answer; None = the caller set none."""

    def remaining_s(self, default_s: float) -> float:
        """Seconds left before the deadline (``default_s`` when there is none), never negative."""
        if self.deadline is None:
            return default_s
        return max(0.0, self.deadline - time.monotonic())


# Request parameter a client may set to bound the work below the gRPC deadline (milliseconds).
DEADLINE_PARAMETER = "deadline_ms"

RequestObserver = Callable[[str, str, float], None]
"""observe(model_name, outcome, seconds): outcome is "OK" or the status code name."""


class ServedModel(Protocol):
    """A model behind the front door."""

    name: str
    version: str
    platform: str
    inputs: Sequence[TensorMeta]
    outputs: Sequence[TensorMeta]
    max_batch: int
    """Largest first dimension accepted; bigger requests get RESOURCE_EXHAUSTED."""

    def is_ready(self) -> bool:
        """Whether the model can answer now (a model may also define ``why_not_ready() -> str``)."""
        ...

    def infer(self, inputs: dict[str, np.ndarray], call: InferCall) -> InferResult: ...


class ModelRepository(Protocol):
    """The models a daemon serves, by name."""

    server_name: str

    def is_ready(self) -> bool:
        """Whether the server can answer inference requests now."""
        ...

    def get(self, name: str) -> ServedModel:
        """The model called ``name``; raises NotFound naming the models that exist."""
        ...


def check_version(model: ServedModel, version: str) -> None:
    if version and version != model.version:
        raise NotFound(f"model {model.name!r} has no version {version!r} (available: {model.version!r})")


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    """OIP servicer over a ModelRepository: validate, convert, call, convert back."""

    def __init__(self, repository: ModelRepository, observer: RequestObserver | None = None) -> None:
        self._repository = repository
        self._observer = observer

    def ServerLive(self, request: pb.ServerLiveRequest, context: object) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    def ServerReady(self, request: pb.ServerReadyRequest, context: object) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self._repository.is_ready())

    def ServerMetadata(self, request: pb.ServerMetadataRequest, context: object) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(name=self._repository.server_name, version=__version__, extensions=[])

    def ModelReady(self, request: pb.ModelReadyRequest, context: object) -> pb.ModelReadyResponse:
        model = self._repository.get(request.name)
        check_version(model, request.version)
        return pb.ModelReadyResponse(ready=model.is_ready())

    def ModelMetadata(self, request: pb.ModelMetadataRequest, context: object) -> pb.ModelMetadataResponse:
        model = self._repository.get(request.name)
        check_version(model, request.version)
        return model_metadata_to_proto(
            name=model.name, versions=[model.version], platform=model.platform, inputs=model.inputs, outputs=model.outputs
        )

    def ModelInfer(self, request: pb.ModelInferRequest, context: object) -> pb.ModelInferResponse:
        started = time.perf_counter()
        outcome = "INTERNAL"
        # Metrics label: the model's name once it is known to exist, so that clients sending
        # arbitrary names cannot create unbounded label values.
        label = ["_unknown"]
        try:
            response = self._model_infer(request, context, started, label)
            outcome = "OK"
            return response
        except Exception as exc:
            outcome = status_of(exc).name
            raise
        finally:
            if self._observer is not None:
                self._observer(label[0], outcome, time.perf_counter() - started)

    def _model_infer(self, request: pb.ModelInferRequest, context: object, started: float, label: list[str]) -> pb.ModelInferResponse:
        model = self._repository.get(request.model_name)
        label[0] = model.name
        check_version(model, request.model_version)
        decoded = infer_request_from_proto(request)
        arrays = check_inputs(decoded, model.inputs)
        wanted = check_requested_outputs(decoded, model.outputs)
        batch = max((a.shape[0] if a.ndim else 1) for a in arrays.values())
        if batch > model.max_batch:
            raise ResourceExhausted(f"batch of {batch} is larger than model {model.name!r} accepts ({model.max_batch})")
        if not model.is_ready():
            explain = getattr(model, "why_not_ready", None)
            reason = explain() if callable(explain) else "it is not loaded yet"
            raise Unavailable(f"model {model.name!r} cannot answer now: {reason}; retry when ModelReady says true")
        result = model.infer(arrays, InferCall(decoded.id, decoded.parameters, _deadline_of(context, decoded.parameters)))
        parameters = dict(result.parameters)
        parameters["server_ms"] = (time.perf_counter() - started) * 1e3
        return infer_response_to_proto(
            model_name=model.name,
            model_version=model.version,
            request_id=decoded.id,
            outputs={name: result.outputs[name] for name in wanted},
            parameters=parameters,
        )


def _deadline_of(context: object, parameters: Mapping[str, ParameterValue]) -> float | None:
    """The earlier of the gRPC deadline and the request's ``deadline_ms`` parameter, as monotonic time."""
    now = time.monotonic()
    deadlines = []
    remaining = context.time_remaining() if hasattr(context, "time_remaining") else None
    if remaining is not None:
        deadlines.append(now + remaining)
    if DEADLINE_PARAMETER in parameters:
        value = parameters[DEADLINE_PARAMETER]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise InvalidInput(f"parameter {DEADLINE_PARAMETER!r} must be a positive number of milliseconds, got {value!r}")
        deadlines.append(now + float(value) / 1e3)
    return min(deadlines) if deadlines else None

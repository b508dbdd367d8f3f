"""The Open Inference Protocol front door, shared by the coordinator and the edge daemon.

A thin servicer: it decodes and validates the request (`oip`), asks a `ModelRepository` for the
model, calls it with plain arrays, and encodes the answer. What a model *does* (run a whole
network, or a head plus a remote tail) lives behind the `ServedModel` protocol in each role.
Errors are raised as coinfer errors; the interceptor turns them into status codes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Mapping, Protocol, Sequence

import numpy as np

from coinfer import __version__
from coinfer.core.errors import NotFound, ResourceExhausted, Unavailable
from coinfer.protos import inference_pb2 as pb
from coinfer.protos import inference_pb2_grpc as pb_grpc
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


class ServedModel(Protocol):
    """A model behind the front door."""

    name: str
    version: str
    platform: str
    inputs: Sequence[TensorMeta]
    outputs: Sequence[TensorMeta]
    max_batch: int
    """Largest first dimension accepted; bigger requests get RESOURCE_EXHAUSTED."""

    def is_ready(self) -> bool: ...

    def infer(self, inputs: dict[str, np.ndarray], request_id: str) -> InferResult: ...


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

    def __init__(self, repository: ModelRepository) -> None:
        self._repository = repository

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
        model = self._repository.get(request.model_name)
        check_version(model, request.model_version)
        decoded = infer_request_from_proto(request)
        arrays = check_inputs(decoded, model.inputs)
        wanted = check_requested_outputs(decoded, model.outputs)
        batch = max((a.shape[0] if a.ndim else 1) for a in arrays.values())
        if batch > model.max_batch:
            raise ResourceExhausted(f"batch of {batch} is larger than model {model.name!r} accepts ({model.max_batch})")
        if not model.is_ready():
            raise Unavailable(f"model {model.name!r} is not loaded yet; retry when ModelReady says true")
        result = model.infer(arrays, decoded.id)
        parameters = dict(result.parameters)
        parameters["server_ms"] = (time.perf_counter() - started) * 1e3
        return infer_response_to_proto(
            model_name=model.name,
            model_version=model.version,
            request_id=decoded.id,
            outputs={name: result.outputs[name] for name in wanted},
            parameters=parameters,
        )

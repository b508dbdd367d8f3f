"""A small Open Inference Protocol client for coinfer's daemons (demo, tests, scripts).

Every call carries a deadline. Failures raise the coinfer error their status code stands for
(NOT_FOUND -> NotFound, INVALID_ARGUMENT -> InvalidInput, ...), with the server's message.
Any KServe/Triton client works against the same daemons; this one only avoids the dependency.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence, TypeVar

import grpc
import numpy as np

from coinfer.core.errors import NotFound, Unavailable
from coinfer.protos import inference_pb2 as pb
from coinfer.protos import inference_pb2_grpc as pb_grpc
from coinfer.serving.interceptors import error_from_rpc
from coinfer.protos.oip import (
    ParameterValue,
    TensorMeta,
    build_infer_request,
    infer_response_outputs,
    parameters_from_proto,
)
from coinfer.serving.security import ClientSecurity, open_channel

T = TypeVar("T")


@dataclass(frozen=True)
class ModelMetadata:
    name: str
    versions: tuple[str, ...]
    platform: str
    inputs: tuple[TensorMeta, ...]
    outputs: tuple[TensorMeta, ...]


@dataclass(frozen=True)
class InferReply:
    """Outputs by name plus the response parameters (the daemons put timings there)."""

    outputs: dict[str, np.ndarray]
    parameters: dict[str, ParameterValue]
    id: str


class InferenceClient:
    """OIP calls to one daemon, each with a ``timeout_s`` deadline."""

    def __init__(self, target: str, security: ClientSecurity | None = None, *, timeout_s: float = 10.0) -> None:
        self.target = target
        self.timeout_s = timeout_s
        self._channel = open_channel(target, security)
        self.stub = pb_grpc.GRPCInferenceServiceStub(self._channel)
        """The raw stub, for callers that want gRPC status codes themselves."""

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> InferenceClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, what: str, fn: Callable[..., T], request: object) -> T:
        try:
            return fn(request, timeout=self.timeout_s)
        except grpc.RpcError as exc:
            raise error_from_rpc(exc, f"{what} on {self.target}") from exc

    def server_live(self) -> bool:
        return self._call("ServerLive", self.stub.ServerLive, pb.ServerLiveRequest()).live

    def server_ready(self) -> bool:
        return self._call("ServerReady", self.stub.ServerReady, pb.ServerReadyRequest()).ready

    def model_ready(self, name: str, version: str = "") -> bool:
        return self._call("ModelReady", self.stub.ModelReady, pb.ModelReadyRequest(name=name, version=version)).ready

    def model_metadata(self, name: str, version: str = "") -> ModelMetadata:
        reply = self._call("ModelMetadata", self.stub.ModelMetadata, pb.ModelMetadataRequest(name=name, version=version))

        def metas(items: Sequence[pb.ModelMetadataResponse.TensorMetadata]) -> tuple[TensorMeta, ...]:
            return tuple(TensorMeta(t.name, t.datatype, tuple(t.shape)) for t in items)

        return ModelMetadata(reply.name, tuple(reply.versions), reply.platform, metas(reply.inputs), metas(reply.outputs))

    def infer(
        self, model_name: str, inputs: Mapping[str, np.ndarray], *, request_id: str = "", outputs: Sequence[str] = ()
    ) -> InferReply:
        request = build_infer_request(model_name, inputs, request_id=request_id, outputs=outputs)
        reply = self._call("ModelInfer", self.stub.ModelInfer, request)
        return InferReply(infer_response_outputs(reply), parameters_from_proto(reply.parameters), reply.id)

    def wait_until_ready(self, model_name: str, timeout_s: float = 60.0, poll_s: float = 0.2) -> None:
        """Poll ModelReady until true; raises Unavailable naming the last answer after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        last = "no answer yet"
        while time.monotonic() < deadline:
            try:
                if self.model_ready(model_name):
                    return
                last = "ModelReady is false"
            except (NotFound, Unavailable) as exc:  # not registered / not listening yet
                last = str(exc)
            time.sleep(poll_s)
        raise Unavailable(f"model {model_name!r} on {self.target} not ready after {timeout_s:.0f} s ({last})")

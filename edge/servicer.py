"""The edge daemon's front doors: its OIP model repository, and the Edge service for the coordinator.

The OIP repository serves the assigned split model (head here, tail on the coordinator) and
forwards the DeViT models the coordinator serves (the fan-out starts there). Both come from
the current assignment, so before the first one is loaded the repository knows no model
(NOT_FOUND for every name) and reports itself not ready; ServerLive still answers.
"""

from __future__ import annotations

import time

import numpy as np

from coinfer.core.codec import tensor_from_raw, tensor_to_raw
from coinfer.core.errors import InvalidInput, NotFound, Unavailable
from coinfer.core.model_io import DEFAULT_MAX_BATCH
from coinfer.edge.daemon import EdgeDaemon
from coinfer.protos import coinfer_v1_pb2 as v1
from coinfer.protos import coinfer_v1_pb2_grpc as v1_grpc
from coinfer.protos.oip import TensorMeta, build_infer_request, infer_response_outputs, parameters_from_proto
from coinfer.serving.oip_service import InferCall, InferResult
from coinfer.protos.v1 import ModelInfo

EDGE_SERVICE_NAME = "coinfer.v1.Edge"


def _metas(specs) -> tuple[TensorMeta, ...]:
    return tuple(TensorMeta(t.name, t.datatype, tuple(t.shape)) for t in specs)


class EdgeSplitModel:
    """The assigned split model: head here, tail on the coordinator."""

    version = "1"
    platform = "coinfer_split_edge"

    def __init__(self, daemon: EdgeDaemon, max_batch: int = DEFAULT_MAX_BATCH) -> None:
        self._daemon = daemon
        self.max_batch = max_batch

    def _assignment(self):
        assignment = self._daemon.assignment
        if assignment is None:
            raise Unavailable("no model loaded yet")
        return assignment

    @property
    def name(self) -> str:
        return self._assignment().model_name

    @property
    def inputs(self) -> tuple[TensorMeta, ...]:
        return _metas(self._assignment().model_inputs)

    @property
    def outputs(self) -> tuple[TensorMeta, ...]:
        return _metas(self._assignment().model_outputs)

    def is_ready(self) -> bool:
        return self._daemon.is_ready()

    def infer(self, inputs: dict, call: InferCall) -> InferResult:
        (images,) = inputs.values()
        logits, parameters = self._daemon.infer(images, call)
        return InferResult({self.outputs[0].name: logits}, parameters)


class ForwardedModel:
    """A model the coordinator serves (DeViT), reached through this device's front door."""

    version = "1"

    def __init__(self, daemon: EdgeDaemon, info: ModelInfo, max_batch: int = DEFAULT_MAX_BATCH) -> None:
        self._daemon = daemon
        self.name = info.name
        self.platform = info.platform
        self.inputs = _metas(info.inputs)
        self.outputs = _metas(info.outputs)
        self.max_batch = max_batch

    def is_ready(self) -> bool:
        return True

    def infer(self, inputs: dict, call: InferCall) -> InferResult:
        request = build_infer_request(self.name, inputs, request_id=call.request_id)
        for key, value in call.parameters.items():
            # Pass the caller's parameters on (e.g. deadline_ms), typed as they came.
            param = request.parameters[key]
            if isinstance(value, bool):
                param.bool_param = value
            elif isinstance(value, int):
                param.int64_param = value
            elif isinstance(value, float):
                param.double_param = value
            else:
                param.string_param = str(value)
        started = time.perf_counter()
        reply = self._daemon.client.model_infer(request, call.remaining_s(self._daemon.config.rpc_timeout_s))
        parameters = parameters_from_proto(reply.parameters)
        parameters["forwarded_by"] = self._daemon.config.name
        parameters["forward_ms"] = (time.perf_counter() - started) * 1e3
        parameters.pop("server_ms", None)  # the coordinator's; this daemon adds its own
        return InferResult(infer_response_outputs(reply), parameters)


class EdgeModels:
    """OIP model repository of an edge daemon: the assigned split model and the forwarded models."""

    server_name = EdgeDaemon.server_name

    def __init__(self, daemon: EdgeDaemon, max_batch: int = DEFAULT_MAX_BATCH) -> None:
        self._daemon = daemon
        self._split = EdgeSplitModel(daemon, max_batch)
        self._max_batch = max_batch
        self._forwarded: dict[str, ForwardedModel] = {}

    def is_ready(self) -> bool:
        return self._daemon.is_ready()

    def get(self, name: str):
        assignment = self._daemon.assignment
        if assignment is None:
            raise NotFound(f"unknown model {name!r}: this device has no model loaded yet")
        if assignment.model_name and name == assignment.model_name:
            return self._split
        for info in assignment.forwarded_models:
            if info.name == name:
                model = self._forwarded.get(name)
                if model is None or model.inputs != _metas(info.inputs):
                    model = self._forwarded[name] = ForwardedModel(self._daemon, info, self._max_batch)
                return model
        served = [n for n in [assignment.model_name, *(m.name for m in assignment.forwarded_models)] if n]
        raise NotFound(f"unknown model {name!r}; this device serves {', '.join(repr(n) for n in served) or 'nothing yet'}")


class EdgeServicer(v1_grpc.EdgeServicer):
    """coinfer.v1.Edge: the coordinator's calls into this device."""

    def __init__(self, daemon: EdgeDaemon) -> None:
        self._daemon = daemon

    def RunSubModel(self, request: v1.RunSubModelRequest, context: object) -> v1.RunSubModelResponse:
        t = request.images
        if t.datatype != "UINT8" or len(t.shape) != 4:
            raise InvalidInput(f"sub-model input must be UINT8 images (B, C, H, W), got {t.datatype} with shape {list(t.shape)}")
        images = tensor_from_raw(t.datatype, tuple(t.shape), t.data)
        feature, compute_ms = self._daemon.run_submodel(request.model_name, request.bundle, request.part, np.ascontiguousarray(images))
        datatype, shape, raw = tensor_to_raw(feature)
        return v1.RunSubModelResponse(
            feature=v1.RawTensor(datatype=datatype, shape=shape, data=raw),
            compute_ms=compute_ms,
            request_id=request.request_id,
            device_name=self._daemon.config.name,
        )

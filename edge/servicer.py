"""The edge daemon behind the shared OIP front door: its model repository and served model.

The model's name, inputs and outputs come from the current assignment, so before the first
assignment is loaded the repository knows no model (NOT_FOUND for every name) and reports
itself not ready; ServerLive still answers.
"""

from __future__ import annotations

from coinfer.core.errors import NotFound, Unavailable
from coinfer.edge.daemon import EdgeDaemon
from coinfer.protos.oip import TensorMeta
from coinfer.protos.oip_service import InferResult

DEFAULT_MAX_BATCH = 256


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
        return tuple(TensorMeta(t.name, t.datatype, tuple(t.shape)) for t in self._assignment().model_inputs)

    @property
    def outputs(self) -> tuple[TensorMeta, ...]:
        return tuple(TensorMeta(t.name, t.datatype, tuple(t.shape)) for t in self._assignment().model_outputs)

    def is_ready(self) -> bool:
        return self._daemon.is_ready()

    def infer(self, inputs: dict, request_id: str) -> InferResult:
        (images,) = inputs.values()
        logits, t = self._daemon.infer(images, request_id)
        return InferResult(
            {self.outputs[0].name: logits},
            {
                "head_ms": t.head_ms,
                "encode_ms": t.encode_ms,
                "offload_ms": t.offload_ms,
                "tail_ms": t.tail_ms,
                "payload_bytes": t.payload_bytes,
            },
        )


class EdgeModels:
    """OIP model repository of an edge daemon: the one assigned model, once loaded."""

    server_name = EdgeDaemon.server_name

    def __init__(self, daemon: EdgeDaemon, max_batch: int = DEFAULT_MAX_BATCH) -> None:
        self._daemon = daemon
        self._model = EdgeSplitModel(daemon, max_batch)

    def is_ready(self) -> bool:
        return self._daemon.is_ready()

    def get(self, name: str) -> EdgeSplitModel:
        assignment = self._daemon.assignment
        if assignment is None:
            raise NotFound(f"unknown model {name!r}: this device has no model loaded yet")
        if name != assignment.model_name:
            raise NotFound(f"unknown model {name!r}; this device serves {assignment.model_name!r}")
        return self._model

"""The edge daemon's client of the coordinator: every call with a deadline, domain errors out.

One channel carries coinfer.v1.Coordinator (register, heartbeat, parts, offloads) and the
coordinator's OIP front door (requests for DeViT models the device forwards). A failed call
raises the coinfer error its status stands for (`protos.interceptors.error_from_rpc`), so the
daemon's logic never handles grpc.RpcError itself.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Iterator, Sequence

import grpc
import numpy as np

from coinfer.core.codec import tensor_from_raw
from coinfer.protos import coinfer_v1_pb2 as v1
from coinfer.protos import coinfer_v1_pb2_grpc as v1_grpc
from coinfer.protos import inference_pb2 as pb
from coinfer.protos import inference_pb2_grpc as pb_grpc
from coinfer.serving.interceptors import error_from_rpc
from coinfer.serving.security import ClientSecurity, open_channel
from coinfer.protos.v1 import (
    Assignment,
    DeviceInfo,
    LoadReport,
    assignment_from_proto,
    device_info_to_proto,
    load_report_to_proto,
)


@dataclass(frozen=True)
class HeartbeatReply:
    """What the coordinator answered to a heartbeat."""

    assignment: Assignment
    interval_s: float
    """When to send the next one."""
    rtt_ms: float
    """Round trip of this heartbeat."""
    calibrate: bool
    """The coordinator asks the device to measure its speed again."""


class CoordinatorClient:
    """Calls to one coordinator; `timeout_s` bounds each unary call, `fetch_timeout_s` a download."""

    def __init__(
        self,
        target: str,
        security: ClientSecurity | None = None,
        *,
        timeout_s: float = 10.0,
        fetch_timeout_s: float = 300.0,
    ) -> None:
        self.target = target
        self.timeout_s = timeout_s
        self.fetch_timeout_s = fetch_timeout_s
        self._channel = open_channel(target, security)
        self._stub = v1_grpc.CoordinatorStub(self._channel)
        self._oip = pb_grpc.GRPCInferenceServiceStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> CoordinatorClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def register(self, info: DeviceInfo) -> tuple[str, Assignment, float]:
        """(device id, first assignment, heartbeat interval in seconds)."""
        try:
            reply = self._stub.Register(v1.RegisterRequest(device=device_info_to_proto(info)), timeout=self.timeout_s)
        except grpc.RpcError as exc:
            raise error_from_rpc(exc, f"Register with the coordinator at {self.target}") from exc
        return reply.device_id, assignment_from_proto(reply.assignment), reply.heartbeat_interval_ms / 1e3

    def heartbeat(self, device_id: str, name: str, report: LoadReport) -> HeartbeatReply:
        """The coordinator's answer; FailedPrecondition = register again."""
        started = time.perf_counter()
        try:
            reply = self._stub.Heartbeat(load_report_to_proto(device_id, name, report), timeout=self.timeout_s)
        except grpc.RpcError as exc:
            raise error_from_rpc(exc, f"Heartbeat to the coordinator at {self.target}") from exc
        rtt_ms = (time.perf_counter() - started) * 1e3
        return HeartbeatReply(assignment_from_proto(reply.assignment), reply.heartbeat_interval_ms / 1e3, rtt_ms, reply.calibrate)

    def fetch_part(self, bundle: str, part: str, offset: int = 0) -> Iterator[v1.PartChunk]:
        """The chunks of one part file from ``offset``; the whole stream shares one deadline."""
        request = v1.FetchPartRequest(bundle=bundle, part=part, offset=offset)
        try:
            yield from self._stub.FetchPart(request, timeout=self.fetch_timeout_s)
        except grpc.RpcError as exc:
            raise error_from_rpc(exc, f"FetchPart {bundle}/{part} from {self.target}") from exc

    def offload(
        self,
        model_name: str,
        split_point: int,
        payloads: Sequence[bytes],
        *,
        per_image: bool = False,
        request_id: str = "",
        device_id: str = "",
        timeout_s: float | None = None,
    ) -> tuple[np.ndarray, float]:
        """(logits, milliseconds the tail took on the coordinator); one payload per image when ``per_image``."""
        request = v1.OffloadRequest(model_name=model_name, split_point=split_point, request_id=request_id, device_id=device_id)
        if per_image:
            request.payloads.extend(payloads)
        else:
            (request.payload,) = payloads
        try:
            reply = self._stub.Offload(request, timeout=self.timeout_s if timeout_s is None else timeout_s)
        except grpc.RpcError as exc:
            raise error_from_rpc(exc, f"Offload to the coordinator at {self.target}") from exc
        return tensor_from_raw(reply.datatype, tuple(reply.shape), reply.logits), reply.tail_ms

    def model_infer(self, request: pb.ModelInferRequest, timeout_s: float) -> pb.ModelInferResponse:
        """A ModelInfer on the coordinator's front door (a forwarded request)."""
        try:
            return self._oip.ModelInfer(request, timeout=timeout_s)
        except grpc.RpcError as exc:
            raise error_from_rpc(exc, f"ModelInfer {request.model_name!r} forwarded to the coordinator at {self.target}") from exc

"""Thin gRPC servicer of coinfer.v1.Coordinator: wire -> domain -> `Coordinator` -> wire.

No logic lives here beyond field checks; errors are raised as coinfer errors and mapped to
status codes by the shared interceptor.
"""

from __future__ import annotations

from typing import Iterator

from coinfer.core.codec import tensor_to_raw
from coinfer.core.errors import InvalidInput
from coinfer.protos import coinfer_v1_pb2 as v1
from coinfer.protos import coinfer_v1_pb2_grpc as v1_grpc
from coinfer.protos.v1 import assignment_to_proto, device_info_from_proto, device_info_to_proto, load_report_from_proto, load_report_to_proto
from coinfer.server.coordinator import Coordinator

SERVICE_NAME = "coinfer.v1.Coordinator"


class CoordinatorServicer(v1_grpc.CoordinatorServicer):
    """coinfer.v1.Coordinator over a `Coordinator`."""

    def __init__(self, coordinator: Coordinator) -> None:
        self._coordinator = coordinator

    def _interval_ms(self) -> int:
        return int(self._coordinator.heartbeat_interval_s * 1e3)

    def Register(self, request: v1.RegisterRequest, context: object) -> v1.RegisterResponse:
        record, assignment = self._coordinator.register(device_info_from_proto(request.device))
        return v1.RegisterResponse(
            device_id=record.device_id, assignment=assignment_to_proto(assignment), heartbeat_interval_ms=self._interval_ms()
        )

    def Heartbeat(self, request: v1.HeartbeatRequest, context: object) -> v1.HeartbeatResponse:
        if not request.device_id:
            raise InvalidInput("heartbeat without a device_id; register first")
        record, assignment = self._coordinator.heartbeat(request.device_id, load_report_from_proto(request))
        return v1.HeartbeatResponse(
            assignment=assignment_to_proto(assignment), heartbeat_interval_ms=self._interval_ms(), calibrate=record.calibration == "asked"
        )

    def FetchPart(self, request: v1.FetchPartRequest, context: object) -> Iterator[v1.PartChunk]:
        chunks = self._coordinator.iter_part(request.bundle, request.part, request.offset, request.chunk_bytes)
        for chunk in chunks:
            yield v1.PartChunk(
                bundle=request.bundle,
                part=request.part,
                offset=chunk.offset,
                data=chunk.data,
                total_size_bytes=chunk.total_size_bytes,
                sha256=chunk.sha256,
            )

    def Offload(self, request: v1.OffloadRequest, context: object) -> v1.OffloadResponse:
        if request.payload and request.payloads:
            raise InvalidInput("an offload carries either one payload or one payload per image, not both")
        payloads = list(request.payloads) if request.payloads else ([request.payload] if request.payload else [])
        if not payloads or not all(payloads):
            raise InvalidInput("offload request carries no payload (or an empty one)")
        logits, tail_ms = self._coordinator.offload(request.model_name, request.split_point, payloads, request.device_id)
        datatype, shape, raw = tensor_to_raw(logits)
        return v1.OffloadResponse(logits=raw, shape=shape, datatype=datatype, tail_ms=tail_ms, request_id=request.request_id)

    def ListDevices(self, request: v1.ListDevicesRequest, context: object) -> v1.ListDevicesResponse:
        coordinator = self._coordinator
        registry = coordinator.registry
        out = v1.ListDevicesResponse()
        for record in registry.snapshot(include_stale=request.include_stale):
            status = out.devices.add(
                device_id=record.device_id,
                info=device_info_to_proto(record.info),
                assignment=assignment_to_proto(coordinator.assignment_for(record), with_parts=False),
                seconds_since_heartbeat=registry.seconds_since_heartbeat(record),
                live=registry.is_live(record),
                offloads=record.offloads,
                submodel_calls=record.submodel_calls,
                submodel_failures=record.submodel_failures,
                effective_speed=coordinator.effective_speed(record),
                expected_compute_ms=coordinator.expected_compute_ms(record),
                calibration_pending=bool(record.calibration),
            )
            if record.load is not None:
                status.last_report.CopyFrom(load_report_to_proto(record.device_id, record.info.name, record.load))
        for placement in coordinator.placements.values():
            out.models.add(
                model_name=placement.model_name,
                policy=placement.policy,
                critical_path_ms=placement.critical_path_ms,
                optimal_critical_path_ms=placement.optimal_critical_path_ms,
                sized_for_speeds=list(placement.sized_for_speeds),
                fleet_matches=not placement.mismatch,
                mismatch=placement.mismatch,
            )
        return out

    def Calibrate(self, request: v1.CalibrateRequest, context: object) -> v1.CalibrateResponse:
        return v1.CalibrateResponse(device_names=self._coordinator.calibrate(list(request.device_names)))

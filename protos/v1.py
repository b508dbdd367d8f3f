"""coinfer.v1 messages <-> domain values, shared by the coordinator and the edge daemon.

The domain side is plain frozen dataclasses (and the core's `PartSpec`/`TensorSpec` for parts),
so neither role's logic touches generated classes, and both read the wire the same way.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from coinfer.core.bundle import PartSpec, TensorSpec
from coinfer.core.errors import InvalidInput
from coinfer.protos import coinfer_v1_pb2 as v1


@dataclass(frozen=True)
class DeviceInfo:
    """What a device says about itself when it registers."""

    name: str
    address: str
    """host:port of the device's OIP front door."""
    platform: str = ""
    cpu_count: int = 0
    memory_total_bytes: int = 0
    profile: str = ""


@dataclass(frozen=True)
class LoadReport:
    """One heartbeat's worth of device state."""

    cpu_percent: float
    memory_percent: float
    temperature_c: float | None
    queue_length: int
    assignment_generation: int
    parts_held: tuple[str, ...]
    """Verified parts on the device, as "bundle/part"."""


@dataclass(frozen=True)
class Assignment:
    """What a device should run now (see coinfer_v1.proto for each field)."""

    generation: int
    model_name: str
    bundle: str
    split_point: int
    split_point_name: str
    sub_channel: int
    power_w: float
    parts: tuple[PartSpec, ...]
    codec_bits: int
    codec_compress: bool
    model_inputs: tuple[TensorSpec, ...]
    model_outputs: tuple[TensorSpec, ...]


def _tensor_spec_to_proto(spec: TensorSpec) -> v1.TensorSpec:
    return v1.TensorSpec(name=spec.name, datatype=spec.datatype, shape=list(spec.shape))


def _tensor_spec_from_proto(msg: v1.TensorSpec) -> TensorSpec:
    return TensorSpec(msg.name, msg.datatype, tuple(msg.shape))


def part_ref_to_proto(bundle: str, spec: PartSpec) -> v1.PartRef:
    return v1.PartRef(
        bundle=bundle,
        name=spec.name,
        sha256=spec.sha256,
        size_bytes=spec.size_bytes,
        role=spec.role,
        config_json=json.dumps(spec.config, sort_keys=True),
        inputs=[_tensor_spec_to_proto(t) for t in spec.inputs],
        outputs=[_tensor_spec_to_proto(t) for t in spec.outputs],
    )


def part_ref_from_proto(msg: v1.PartRef) -> PartSpec:
    """A PartSpec from the wire; the file name is the device's choice (`<name>.safetensors`)."""
    try:
        config = json.loads(msg.config_json) if msg.config_json else {}
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"part {msg.name!r}: config_json is not valid JSON ({exc})") from exc
    if not isinstance(config, dict):
        raise InvalidInput(f"part {msg.name!r}: config_json must be a JSON object")
    return PartSpec(
        name=msg.name,
        file=f"{msg.name}.safetensors",
        sha256=msg.sha256,
        size_bytes=msg.size_bytes,
        role=msg.role,
        config=config,
        inputs=tuple(_tensor_spec_from_proto(t) for t in msg.inputs),
        outputs=tuple(_tensor_spec_from_proto(t) for t in msg.outputs),
    )


def assignment_to_proto(a: Assignment) -> v1.Assignment:
    return v1.Assignment(
        generation=a.generation,
        model_name=a.model_name,
        bundle=a.bundle,
        split_point=a.split_point,
        split_point_name=a.split_point_name,
        sub_channel=a.sub_channel,
        power_w=a.power_w,
        parts=[part_ref_to_proto(a.bundle, p) for p in a.parts],
        codec_bits=a.codec_bits,
        codec_compress=a.codec_compress,
        model_inputs=[_tensor_spec_to_proto(t) for t in a.model_inputs],
        model_outputs=[_tensor_spec_to_proto(t) for t in a.model_outputs],
    )


def assignment_from_proto(msg: v1.Assignment) -> Assignment:
    return Assignment(
        generation=msg.generation,
        model_name=msg.model_name,
        bundle=msg.bundle,
        split_point=msg.split_point,
        split_point_name=msg.split_point_name,
        sub_channel=msg.sub_channel,
        power_w=msg.power_w,
        parts=tuple(part_ref_from_proto(p) for p in msg.parts),
        codec_bits=msg.codec_bits,
        codec_compress=msg.codec_compress,
        model_inputs=tuple(_tensor_spec_from_proto(t) for t in msg.model_inputs),
        model_outputs=tuple(_tensor_spec_from_proto(t) for t in msg.model_outputs),
    )


def device_info_to_proto(info: DeviceInfo) -> v1.DeviceInfo:
    return v1.DeviceInfo(
        name=info.name,
        address=info.address,
        platform=info.platform,
        cpu_count=info.cpu_count,
        memory_total_bytes=info.memory_total_bytes,
        profile=info.profile,
    )


def device_info_from_proto(msg: v1.DeviceInfo) -> DeviceInfo:
    return DeviceInfo(
        name=msg.name,
        address=msg.address,
        platform=msg.platform,
        cpu_count=msg.cpu_count,
        memory_total_bytes=msg.memory_total_bytes,
        profile=msg.profile,
    )


def load_report_to_proto(device_id: str, name: str, report: LoadReport) -> v1.HeartbeatRequest:
    msg = v1.HeartbeatRequest(
        device_id=device_id,
        name=name,
        cpu_percent=report.cpu_percent,
        memory_percent=report.memory_percent,
        queue_length=report.queue_length,
        assignment_generation=report.assignment_generation,
        parts_held=list(report.parts_held),
    )
    if report.temperature_c is not None:
        msg.temperature_c = report.temperature_c
    return msg


def load_report_from_proto(msg: v1.HeartbeatRequest) -> LoadReport:
    return LoadReport(
        cpu_percent=msg.cpu_percent,
        memory_percent=msg.memory_percent,
        temperature_c=msg.temperature_c if msg.HasField("temperature_c") else None,
        queue_length=msg.queue_length,
        assignment_generation=msg.assignment_generation,
        parts_held=tuple(msg.parts_held),
    )

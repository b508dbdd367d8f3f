"""coinfer.v1 messages <-> domain values, shared by the coordinator and the edge daemon.

The domain side is plain frozen dataclasses (and the core's `PartSpec`/`TensorSpec` for parts
and `PointPlan` for split points, which devices receive without its server parts), so neither
role's logic touches generated classes, and both read the wire the same way.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

from coinfer.core.bundle import PartSpec, TensorSpec
from coinfer.core.errors import InvalidInput, NotFound
from coinfer.core.split_point import PointPlan
from coinfer.protos import coinfer_v1_pb2 as v1


MAX_RELATIVE_SPEED = 1000.0
"""Fastest speed a device may report (1000 x the reference); anything above is taken for a bug."""


@dataclass(frozen=True)
class DeviceSpeed:
    """How fast a device computes, relative to the reference workload (docs/runtime.md)."""

    relative_speed: float
    """1.0 = as fast as the reference machine; 0.5 = half as fast."""
    source: str = "calibrated"
    """"calibrated" (measured by the daemon) or "configured" (given by its owner)."""
    reference: str = ""
    """Name and version of the reference workload."""
    calibration_ms: float = 0.0
    """Wall time the calibration ran (0 when configured)."""
    cpu_model: str = ""
    threads: int = 0
    """Threads the daemon computes with (the calibration ran in as many)."""


def check_speed(speed: DeviceSpeed, who: str) -> DeviceSpeed:
    """The speed unchanged, or InvalidInput naming what is wrong with it (zero, negative, NaN, absurd)."""
    value = speed.relative_speed
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise InvalidInput(f"{who}: a relative speed of {value!r} is not a finite number > 0")
    if value > MAX_RELATIVE_SPEED:
        raise InvalidInput(
            f"{who}: a relative speed of {value:g} is more than {MAX_RELATIVE_SPEED:g} times the reference; "
            "refused as a measurement error"
        )
    if speed.threads < 0:
        raise InvalidInput(f"{who}: {speed.threads} threads")
    return speed


@dataclass(frozen=True)
class SubModelTiming:
    """A device's moving estimate of one DeViT sub-model's compute time, from real requests."""

    model_name: str
    index: int
    compute_ms: float
    """Moving average of one call's compute time."""
    calls: int
    """Calls behind it (since the device's sub-models last changed)."""
    images_per_call: float = 1.0


@dataclass(frozen=True)
class DeviceInfo:
    """What a device says about itself when it registers."""

    name: str
    address: str
    """host:port of the device's OIP front door (and of its Edge service)."""
    platform: str = ""
    cpu_count: int = 0
    memory_total_bytes: int = 0
    profile: str = ""
    distance_m: float = 0.0
    """Configured distance to the edge server for the scheduler; 0 = unknown."""
    speed: DeviceSpeed | None = None
    """How fast it computes; None = it did not say."""


@dataclass(frozen=True)
class LoadReport:
    """One heartbeat's worth of device state."""

    cpu_percent: float
    memory_percent: float
    temperature_c: float | None
    queue_length: int
    """Requests waiting or running on the device."""
    assignment_generation: int
    parts_held: tuple[str, ...]
    """Verified, loaded parts on the device, as "bundle/part"."""
    rtt_ms: float = 0.0
    """Round trip of the previous heartbeat (0 = none yet)."""
    uplink_bytes_per_s: float = 0.0
    """Uplink throughput measured on recent offloads (0 = none yet)."""
    in_compute: int = 0
    """Requests computing on the device now."""
    in_offload: int = 0
    """Requests waiting on an offload now."""
    requests_total: int = 0
    """Requests completed since the daemon started."""
    uplink_energy_j: float = 0.0
    """Transmit power x upload time summed over every offload so far."""
    speed: DeviceSpeed | None = None
    """The device's current speed (None = not reported)."""
    submodel_timings: tuple[SubModelTiming, ...] = ()
    """Moving estimates of the DeViT sub-models' compute times on the device."""


# Compression setting of a point's latent: False, True, or None (only when it helps), as the codec takes it.
_COMPRESSION_TO_PROTO = {False: v1.COMPRESSION_OFF, True: v1.COMPRESSION_ON, None: v1.COMPRESSION_AUTO}
_COMPRESSION_FROM_PROTO = {value: key for key, value in _COMPRESSION_TO_PROTO.items()}


@dataclass(frozen=True)
class SubModelRef:
    """A DeViT sub-model a device runs for the coordinator."""

    model_name: str
    bundle: str
    part: str
    index: int
    """Position of the sub-model in the fusion head's device order."""
    sized_for_speed: float = 1.0
    """Relative device speed the bundle sized the sub-model for."""
    replica: bool = False
    """A copy on a spare device, called when the primary holder cannot answer."""

    @property
    def key(self) -> tuple[str, int]:
        """(model name, index): the sub-model, whichever device holds it."""
        return (self.model_name, self.index)


@dataclass(frozen=True)
class ModelInfo:
    """OIP metadata of a model."""

    name: str
    platform: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]


@dataclass(frozen=True)
class PartRef:
    """A part file a device must hold: which bundle it comes from, and its manifest entry."""

    bundle: str
    spec: PartSpec

    @property
    def key(self) -> str:
        """"bundle/part", as heartbeats list held parts."""
        return f"{self.bundle}/{self.spec.name}"


@dataclass(frozen=True)
class Assignment:
    """What a device should run now (see coinfer_v1.proto for each field)."""

    generation: int
    model_name: str
    """The split model served on the device's front door ("" = none)."""
    bundle: str
    """The split model's bundle."""
    split_point: int
    split_point_name: str
    sub_channel: int
    power_w: float
    parts: tuple[PartRef, ...]
    codec_bits: int
    codec_compress: bool
    model_inputs: tuple[TensorSpec, ...]
    model_outputs: tuple[TensorSpec, ...]
    split_points: tuple[PointPlan, ...] = ()
    codec_per_image: bool = False
    fallback_parts: tuple[str, ...] = ()
    submodels: tuple[SubModelRef, ...] = ()
    forwarded_models: tuple[ModelInfo, ...] = ()

    def point_plan(self, index: int | None = None) -> PointPlan:
        """The plan of split point ``index`` (default: the assigned one)."""
        index = self.split_point if index is None else index
        for plan in self.split_points:
            if plan.index == index:
                return plan
        valid = ", ".join(str(p.index) for p in self.split_points) or "none"
        raise NotFound(f"assignment {self.generation} has no split point {index} (points: {valid})")

    def part(self, bundle: str, name: str) -> PartRef:
        for ref in self.parts:
            if ref.bundle == bundle and ref.spec.name == name:
                return ref
        raise NotFound(f"assignment {self.generation} holds no part {bundle}/{name}")


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


def _point_to_proto(plan: PointPlan) -> v1.SplitPointPlan:
    return v1.SplitPointPlan(
        index=plan.index,
        name=plan.name,
        device_parts=list(plan.device_parts),
        offload=plan.offload,
        codec_bits=plan.codec_bits,
        codec_compress=_COMPRESSION_TO_PROTO[plan.codec_compress],
    )


def _point_from_proto(msg: v1.SplitPointPlan) -> PointPlan:
    return PointPlan(
        index=msg.index,
        name=msg.name,
        device_parts=tuple(msg.device_parts),
        offload=msg.offload,
        codec_bits=msg.codec_bits,
        codec_compress=_COMPRESSION_FROM_PROTO.get(msg.codec_compress, False),
    )


def model_info_to_proto(info: ModelInfo) -> v1.ModelInfo:
    return v1.ModelInfo(
        name=info.name,
        platform=info.platform,
        inputs=[_tensor_spec_to_proto(t) for t in info.inputs],
        outputs=[_tensor_spec_to_proto(t) for t in info.outputs],
    )


def model_info_from_proto(msg: v1.ModelInfo) -> ModelInfo:
    return ModelInfo(
        name=msg.name,
        platform=msg.platform,
        inputs=tuple(_tensor_spec_from_proto(t) for t in msg.inputs),
        outputs=tuple(_tensor_spec_from_proto(t) for t in msg.outputs),
    )


def assignment_to_proto(a: Assignment, with_parts: bool = True) -> v1.Assignment:
    return v1.Assignment(
        generation=a.generation,
        model_name=a.model_name,
        bundle=a.bundle,
        split_point=a.split_point,
        split_point_name=a.split_point_name,
        sub_channel=a.sub_channel,
        power_w=a.power_w,
        parts=[part_ref_to_proto(p.bundle, p.spec) for p in a.parts] if with_parts else [],
        codec_bits=a.codec_bits,
        codec_compress=a.codec_compress,
        model_inputs=[_tensor_spec_to_proto(t) for t in a.model_inputs],
        model_outputs=[_tensor_spec_to_proto(t) for t in a.model_outputs],
        split_points=[_point_to_proto(p) for p in a.split_points],
        codec_per_image=a.codec_per_image,
        fallback_parts=list(a.fallback_parts),
        submodels=[
            v1.SubModelRef(
                model_name=s.model_name, bundle=s.bundle, part=s.part, index=s.index,
                sized_for_speed=s.sized_for_speed, replica=s.replica,
            )
            for s in a.submodels
        ],
        forwarded_models=[model_info_to_proto(m) for m in a.forwarded_models],
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
        parts=tuple(PartRef(p.bundle, part_ref_from_proto(p)) for p in msg.parts),
        codec_bits=msg.codec_bits,
        codec_compress=msg.codec_compress,
        model_inputs=tuple(_tensor_spec_from_proto(t) for t in msg.model_inputs),
        model_outputs=tuple(_tensor_spec_from_proto(t) for t in msg.model_outputs),
        split_points=tuple(_point_from_proto(p) for p in msg.split_points),
        codec_per_image=msg.codec_per_image,
        fallback_parts=tuple(msg.fallback_parts),
        submodels=tuple(
            SubModelRef(s.model_name, s.bundle, s.part, s.index, s.sized_for_speed or 1.0, s.replica) for s in msg.submodels
        ),
        forwarded_models=tuple(model_info_from_proto(m) for m in msg.forwarded_models),
    )


def device_speed_to_proto(speed: DeviceSpeed) -> v1.DeviceSpeed:
    return v1.DeviceSpeed(
        relative_speed=speed.relative_speed,
        source=speed.source,
        reference=speed.reference,
        calibration_ms=speed.calibration_ms,
        cpu_model=speed.cpu_model,
        threads=speed.threads,
    )


def device_speed_from_proto(msg: v1.DeviceSpeed) -> DeviceSpeed:
    """The speed as sent; :func:`check_speed` decides whether it is believable."""
    return DeviceSpeed(
        relative_speed=msg.relative_speed,
        source=msg.source,
        reference=msg.reference,
        calibration_ms=msg.calibration_ms,
        cpu_model=msg.cpu_model,
        threads=msg.threads,
    )


def device_info_to_proto(info: DeviceInfo) -> v1.DeviceInfo:
    msg = v1.DeviceInfo(
        name=info.name,
        address=info.address,
        platform=info.platform,
        cpu_count=info.cpu_count,
        memory_total_bytes=info.memory_total_bytes,
        profile=info.profile,
        distance_m=info.distance_m,
    )
    if info.speed is not None:
        msg.speed.CopyFrom(device_speed_to_proto(info.speed))
    return msg


def device_info_from_proto(msg: v1.DeviceInfo) -> DeviceInfo:
    return DeviceInfo(
        name=msg.name,
        address=msg.address,
        platform=msg.platform,
        cpu_count=msg.cpu_count,
        memory_total_bytes=msg.memory_total_bytes,
        profile=msg.profile,
        distance_m=msg.distance_m,
        speed=device_speed_from_proto(msg.speed) if msg.HasField("speed") else None,
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
        rtt_ms=report.rtt_ms,
        uplink_bytes_per_s=report.uplink_bytes_per_s,
        in_compute=report.in_compute,
        in_offload=report.in_offload,
        requests_total=report.requests_total,
        uplink_energy_j=report.uplink_energy_j,
        submodel_timings=[
            v1.SubModelTiming(
                model_name=t.model_name, index=t.index, compute_ms=t.compute_ms, calls=t.calls, images_per_call=t.images_per_call
            )
            for t in report.submodel_timings
        ],
    )
    if report.temperature_c is not None:
        msg.temperature_c = report.temperature_c
    if report.speed is not None:
        msg.speed.CopyFrom(device_speed_to_proto(report.speed))
    return msg


def load_report_from_proto(msg: v1.HeartbeatRequest) -> LoadReport:
    return LoadReport(
        cpu_percent=msg.cpu_percent,
        memory_percent=msg.memory_percent,
        temperature_c=msg.temperature_c if msg.HasField("temperature_c") else None,
        queue_length=msg.queue_length,
        assignment_generation=msg.assignment_generation,
        parts_held=tuple(msg.parts_held),
        rtt_ms=msg.rtt_ms,
        uplink_bytes_per_s=msg.uplink_bytes_per_s,
        in_compute=msg.in_compute,
        in_offload=msg.in_offload,
        requests_total=msg.requests_total,
        uplink_energy_j=msg.uplink_energy_j,
        speed=device_speed_from_proto(msg.speed) if msg.HasField("speed") else None,
        submodel_timings=tuple(
            SubModelTiming(t.model_name, t.index, t.compute_ms, t.calls, t.images_per_call) for t in msg.submodel_timings
        ),
    )

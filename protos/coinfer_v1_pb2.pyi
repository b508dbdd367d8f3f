from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Compression(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    COMPRESSION_OFF: _ClassVar[Compression]
    COMPRESSION_ON: _ClassVar[Compression]
    COMPRESSION_AUTO: _ClassVar[Compression]
COMPRESSION_OFF: Compression
COMPRESSION_ON: Compression
COMPRESSION_AUTO: Compression

class TensorSpec(_message.Message):
    __slots__ = ("name", "datatype", "shape")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DATATYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    name: str
    datatype: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, name: _Optional[str] = ..., datatype: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ...) -> None: ...

class DeviceInfo(_message.Message):
    __slots__ = ("name", "address", "platform", "cpu_count", "memory_total_bytes", "profile", "distance_m", "speed")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    PLATFORM_FIELD_NUMBER: _ClassVar[int]
    CPU_COUNT_FIELD_NUMBER: _ClassVar[int]
    MEMORY_TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    DISTANCE_M_FIELD_NUMBER: _ClassVar[int]
    SPEED_FIELD_NUMBER: _ClassVar[int]
    name: str
    address: str
    platform: str
    cpu_count: int
    memory_total_bytes: int
    profile: str
    distance_m: float
    speed: DeviceSpeed
    def __init__(self, name: _Optional[str] = ..., address: _Optional[str] = ..., platform: _Optional[str] = ..., cpu_count: _Optional[int] = ..., memory_total_bytes: _Optional[int] = ..., profile: _Optional[str] = ..., distance_m: _Optional[float] = ..., speed: _Optional[_Union[DeviceSpeed, _Mapping]] = ...) -> None: ...

class DeviceSpeed(_message.Message):
    __slots__ = ("relative_speed", "source", "reference", "calibration_ms", "cpu_model", "threads")
    RELATIVE_SPEED_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    CALIBRATION_MS_FIELD_NUMBER: _ClassVar[int]
    CPU_MODEL_FIELD_NUMBER: _ClassVar[int]
    THREADS_FIELD_NUMBER: _ClassVar[int]
    relative_speed: float
    source: str
    reference: str
    calibration_ms: float
    cpu_model: str
    threads: int
    def __init__(self, relative_speed: _Optional[float] = ..., source: _Optional[str] = ..., reference: _Optional[str] = ..., calibration_ms: _Optional[float] = ..., cpu_model: _Optional[str] = ..., threads: _Optional[int] = ...) -> None: ...

class SubModelTiming(_message.Message):
    __slots__ = ("model_name", "index", "compute_ms", "calls", "images_per_call")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_MS_FIELD_NUMBER: _ClassVar[int]
    CALLS_FIELD_NUMBER: _ClassVar[int]
    IMAGES_PER_CALL_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    index: int
    compute_ms: float
    calls: int
    images_per_call: float
    def __init__(self, model_name: _Optional[str] = ..., index: _Optional[int] = ..., compute_ms: _Optional[float] = ..., calls: _Optional[int] = ..., images_per_call: _Optional[float] = ...) -> None: ...

class PartRef(_message.Message):
    __slots__ = ("bundle", "name", "sha256", "size_bytes", "role", "config_json", "inputs", "outputs")
    BUNDLE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    CONFIG_JSON_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    bundle: str
    name: str
    sha256: str
    size_bytes: int
    role: str
    config_json: str
    inputs: _containers.RepeatedCompositeFieldContainer[TensorSpec]
    outputs: _containers.RepeatedCompositeFieldContainer[TensorSpec]
    def __init__(self, bundle: _Optional[str] = ..., name: _Optional[str] = ..., sha256: _Optional[str] = ..., size_bytes: _Optional[int] = ..., role: _Optional[str] = ..., config_json: _Optional[str] = ..., inputs: _Optional[_Iterable[_Union[TensorSpec, _Mapping]]] = ..., outputs: _Optional[_Iterable[_Union[TensorSpec, _Mapping]]] = ...) -> None: ...

class Assignment(_message.Message):
    __slots__ = ("generation", "model_name", "bundle", "split_point", "split_point_name", "sub_channel", "power_w", "parts", "codec_bits", "codec_compress", "model_inputs", "model_outputs", "split_points", "codec_per_image", "fallback_parts", "submodels", "forwarded_models")
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_FIELD_NUMBER: _ClassVar[int]
    SPLIT_POINT_FIELD_NUMBER: _ClassVar[int]
    SPLIT_POINT_NAME_FIELD_NUMBER: _ClassVar[int]
    SUB_CHANNEL_FIELD_NUMBER: _ClassVar[int]
    POWER_W_FIELD_NUMBER: _ClassVar[int]
    PARTS_FIELD_NUMBER: _ClassVar[int]
    CODEC_BITS_FIELD_NUMBER: _ClassVar[int]
    CODEC_COMPRESS_FIELD_NUMBER: _ClassVar[int]
    MODEL_INPUTS_FIELD_NUMBER: _ClassVar[int]
    MODEL_OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    SPLIT_POINTS_FIELD_NUMBER: _ClassVar[int]
    CODEC_PER_IMAGE_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_PARTS_FIELD_NUMBER: _ClassVar[int]
    SUBMODELS_FIELD_NUMBER: _ClassVar[int]
    FORWARDED_MODELS_FIELD_NUMBER: _ClassVar[int]
    generation: int
    model_name: str
    bundle: str
    split_point: int
    split_point_name: str
    sub_channel: int
    power_w: float
    parts: _containers.RepeatedCompositeFieldContainer[PartRef]
    codec_bits: int
    codec_compress: bool
    model_inputs: _containers.RepeatedCompositeFieldContainer[TensorSpec]
    model_outputs: _containers.RepeatedCompositeFieldContainer[TensorSpec]
    split_points: _containers.RepeatedCompositeFieldContainer[SplitPointPlan]
    codec_per_image: bool
    fallback_parts: _containers.RepeatedScalarFieldContainer[str]
    submodels: _containers.RepeatedCompositeFieldContainer[SubModelRef]
    forwarded_models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    def __init__(self, generation: _Optional[int] = ..., model_name: _Optional[str] = ..., bundle: _Optional[str] = ..., split_point: _Optional[int] = ..., split_point_name: _Optional[str] = ..., sub_channel: _Optional[int] = ..., power_w: _Optional[float] = ..., parts: _Optional[_Iterable[_Union[PartRef, _Mapping]]] = ..., codec_bits: _Optional[int] = ..., codec_compress: _Optional[bool] = ..., model_inputs: _Optional[_Iterable[_Union[TensorSpec, _Mapping]]] = ..., model_outputs: _Optional[_Iterable[_Union[TensorSpec, _Mapping]]] = ..., split_points: _Optional[_Iterable[_Union[SplitPointPlan, _Mapping]]] = ..., codec_per_image: _Optional[bool] = ..., fallback_parts: _Optional[_Iterable[str]] = ..., submodels: _Optional[_Iterable[_Union[SubModelRef, _Mapping]]] = ..., forwarded_models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ...) -> None: ...

class SplitPointPlan(_message.Message):
    __slots__ = ("index", "name", "device_parts", "offload", "codec_bits", "codec_compress")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DEVICE_PARTS_FIELD_NUMBER: _ClassVar[int]
    OFFLOAD_FIELD_NUMBER: _ClassVar[int]
    CODEC_BITS_FIELD_NUMBER: _ClassVar[int]
    CODEC_COMPRESS_FIELD_NUMBER: _ClassVar[int]
    index: int
    name: str
    device_parts: _containers.RepeatedScalarFieldContainer[str]
    offload: bool
    codec_bits: int
    codec_compress: Compression
    def __init__(self, index: _Optional[int] = ..., name: _Optional[str] = ..., device_parts: _Optional[_Iterable[str]] = ..., offload: _Optional[bool] = ..., codec_bits: _Optional[int] = ..., codec_compress: _Optional[_Union[Compression, str]] = ...) -> None: ...

class SubModelRef(_message.Message):
    __slots__ = ("model_name", "bundle", "part", "index", "sized_for_speed", "replica")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_FIELD_NUMBER: _ClassVar[int]
    PART_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    SIZED_FOR_SPEED_FIELD_NUMBER: _ClassVar[int]
    REPLICA_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    bundle: str
    part: str
    index: int
    sized_for_speed: float
    replica: bool
    def __init__(self, model_name: _Optional[str] = ..., bundle: _Optional[str] = ..., part: _Optional[str] = ..., index: _Optional[int] = ..., sized_for_speed: _Optional[float] = ..., replica: _Optional[bool] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("name", "platform", "inputs", "outputs")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PLATFORM_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    name: str
    platform: str
    inputs: _containers.RepeatedCompositeFieldContainer[TensorSpec]
    outputs: _containers.RepeatedCompositeFieldContainer[TensorSpec]
    def __init__(self, name: _Optional[str] = ..., platform: _Optional[str] = ..., inputs: _Optional[_Iterable[_Union[TensorSpec, _Mapping]]] = ..., outputs: _Optional[_Iterable[_Union[TensorSpec, _Mapping]]] = ...) -> None: ...

class RegisterRequest(_message.Message):
    __slots__ = ("device",)
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    device: DeviceInfo
    def __init__(self, device: _Optional[_Union[DeviceInfo, _Mapping]] = ...) -> None: ...

class RegisterResponse(_message.Message):
    __slots__ = ("device_id", "assignment", "heartbeat_interval_ms")
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    ASSIGNMENT_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    assignment: Assignment
    heartbeat_interval_ms: int
    def __init__(self, device_id: _Optional[str] = ..., assignment: _Optional[_Union[Assignment, _Mapping]] = ..., heartbeat_interval_ms: _Optional[int] = ...) -> None: ...

class HeartbeatRequest(_message.Message):
    __slots__ = ("device_id", "name", "cpu_percent", "memory_percent", "temperature_c", "queue_length", "assignment_generation", "parts_held", "rtt_ms", "uplink_bytes_per_s", "in_compute", "in_offload", "requests_total", "uplink_energy_j", "speed", "submodel_timings")
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    CPU_PERCENT_FIELD_NUMBER: _ClassVar[int]
    MEMORY_PERCENT_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_C_FIELD_NUMBER: _ClassVar[int]
    QUEUE_LENGTH_FIELD_NUMBER: _ClassVar[int]
    ASSIGNMENT_GENERATION_FIELD_NUMBER: _ClassVar[int]
    PARTS_HELD_FIELD_NUMBER: _ClassVar[int]
    RTT_MS_FIELD_NUMBER: _ClassVar[int]
    UPLINK_BYTES_PER_S_FIELD_NUMBER: _ClassVar[int]
    IN_COMPUTE_FIELD_NUMBER: _ClassVar[int]
    IN_OFFLOAD_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    UPLINK_ENERGY_J_FIELD_NUMBER: _ClassVar[int]
    SPEED_FIELD_NUMBER: _ClassVar[int]
    SUBMODEL_TIMINGS_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    name: str
    cpu_percent: float
    memory_percent: float
    temperature_c: float
    queue_length: int
    assignment_generation: int
    parts_held: _containers.RepeatedScalarFieldContainer[str]
    rtt_ms: float
    uplink_bytes_per_s: float
    in_compute: int
    in_offload: int
    requests_total: int
    uplink_energy_j: float
    speed: DeviceSpeed
    submodel_timings: _containers.RepeatedCompositeFieldContainer[SubModelTiming]
    def __init__(self, device_id: _Optional[str] = ..., name: _Optional[str] = ..., cpu_percent: _Optional[float] = ..., memory_percent: _Optional[float] = ..., temperature_c: _Optional[float] = ..., queue_length: _Optional[int] = ..., assignment_generation: _Optional[int] = ..., parts_held: _Optional[_Iterable[str]] = ..., rtt_ms: _Optional[float] = ..., uplink_bytes_per_s: _Optional[float] = ..., in_compute: _Optional[int] = ..., in_offload: _Optional[int] = ..., requests_total: _Optional[int] = ..., uplink_energy_j: _Optional[float] = ..., speed: _Optional[_Union[DeviceSpeed, _Mapping]] = ..., submodel_timings: _Optional[_Iterable[_Union[SubModelTiming, _Mapping]]] = ...) -> None: ...

class HeartbeatResponse(_message.Message):
    __slots__ = ("assignment", "heartbeat_interval_ms", "calibrate")
    ASSIGNMENT_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    CALIBRATE_FIELD_NUMBER: _ClassVar[int]
    assignment: Assignment
    heartbeat_interval_ms: int
    calibrate: bool
    def __init__(self, assignment: _Optional[_Union[Assignment, _Mapping]] = ..., heartbeat_interval_ms: _Optional[int] = ..., calibrate: _Optional[bool] = ...) -> None: ...

class FetchPartRequest(_message.Message):
    __slots__ = ("bundle", "part", "offset", "chunk_bytes")
    BUNDLE_FIELD_NUMBER: _ClassVar[int]
    PART_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    CHUNK_BYTES_FIELD_NUMBER: _ClassVar[int]
    bundle: str
    part: str
    offset: int
    chunk_bytes: int
    def __init__(self, bundle: _Optional[str] = ..., part: _Optional[str] = ..., offset: _Optional[int] = ..., chunk_bytes: _Optional[int] = ...) -> None: ...

class PartChunk(_message.Message):
    __slots__ = ("bundle", "part", "offset", "data", "total_size_bytes", "sha256")
    BUNDLE_FIELD_NUMBER: _ClassVar[int]
    PART_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    bundle: str
    part: str
    offset: int
    data: bytes
    total_size_bytes: int
    sha256: str
    def __init__(self, bundle: _Optional[str] = ..., part: _Optional[str] = ..., offset: _Optional[int] = ..., data: _Optional[bytes] = ..., total_size_bytes: _Optional[int] = ..., sha256: _Optional[str] = ...) -> None: ...

class OffloadRequest(_message.Message):
    __slots__ = ("model_name", "split_point", "payload", "request_id", "device_id", "payloads")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    SPLIT_POINT_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    PAYLOADS_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    split_point: int
    payload: bytes
    request_id: str
    device_id: str
    payloads: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, model_name: _Optional[str] = ..., split_point: _Optional[int] = ..., payload: _Optional[bytes] = ..., request_id: _Optional[str] = ..., device_id: _Optional[str] = ..., payloads: _Optional[_Iterable[bytes]] = ...) -> None: ...

class OffloadResponse(_message.Message):
    __slots__ = ("logits", "shape", "datatype", "tail_ms", "request_id")
    LOGITS_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DATATYPE_FIELD_NUMBER: _ClassVar[int]
    TAIL_MS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    logits: bytes
    shape: _containers.RepeatedScalarFieldContainer[int]
    datatype: str
    tail_ms: float
    request_id: str
    def __init__(self, logits: _Optional[bytes] = ..., shape: _Optional[_Iterable[int]] = ..., datatype: _Optional[str] = ..., tail_ms: _Optional[float] = ..., request_id: _Optional[str] = ...) -> None: ...

class ListDevicesRequest(_message.Message):
    __slots__ = ("include_stale",)
    INCLUDE_STALE_FIELD_NUMBER: _ClassVar[int]
    include_stale: bool
    def __init__(self, include_stale: _Optional[bool] = ...) -> None: ...

class ListDevicesResponse(_message.Message):
    __slots__ = ("devices", "models")
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    devices: _containers.RepeatedCompositeFieldContainer[DeviceStatus]
    models: _containers.RepeatedCompositeFieldContainer[ModelPlacement]
    def __init__(self, devices: _Optional[_Iterable[_Union[DeviceStatus, _Mapping]]] = ..., models: _Optional[_Iterable[_Union[ModelPlacement, _Mapping]]] = ...) -> None: ...

class ModelPlacement(_message.Message):
    __slots__ = ("model_name", "policy", "critical_path_ms", "optimal_critical_path_ms", "sized_for_speeds", "fleet_matches", "mismatch")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    CRITICAL_PATH_MS_FIELD_NUMBER: _ClassVar[int]
    OPTIMAL_CRITICAL_PATH_MS_FIELD_NUMBER: _ClassVar[int]
    SIZED_FOR_SPEEDS_FIELD_NUMBER: _ClassVar[int]
    FLEET_MATCHES_FIELD_NUMBER: _ClassVar[int]
    MISMATCH_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    policy: str
    critical_path_ms: float
    optimal_critical_path_ms: float
    sized_for_speeds: _containers.RepeatedScalarFieldContainer[float]
    fleet_matches: bool
    mismatch: str
    def __init__(self, model_name: _Optional[str] = ..., policy: _Optional[str] = ..., critical_path_ms: _Optional[float] = ..., optimal_critical_path_ms: _Optional[float] = ..., sized_for_speeds: _Optional[_Iterable[float]] = ..., fleet_matches: _Optional[bool] = ..., mismatch: _Optional[str] = ...) -> None: ...

class CalibrateRequest(_message.Message):
    __slots__ = ("device_names",)
    DEVICE_NAMES_FIELD_NUMBER: _ClassVar[int]
    device_names: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, device_names: _Optional[_Iterable[str]] = ...) -> None: ...

class CalibrateResponse(_message.Message):
    __slots__ = ("device_names",)
    DEVICE_NAMES_FIELD_NUMBER: _ClassVar[int]
    device_names: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, device_names: _Optional[_Iterable[str]] = ...) -> None: ...

class DeviceStatus(_message.Message):
    __slots__ = ("device_id", "info", "assignment", "last_report", "seconds_since_heartbeat", "live", "offloads", "submodel_calls", "submodel_failures", "effective_speed", "expected_compute_ms", "calibration_pending")
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    INFO_FIELD_NUMBER: _ClassVar[int]
    ASSIGNMENT_FIELD_NUMBER: _ClassVar[int]
    LAST_REPORT_FIELD_NUMBER: _ClassVar[int]
    SECONDS_SINCE_HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    LIVE_FIELD_NUMBER: _ClassVar[int]
    OFFLOADS_FIELD_NUMBER: _ClassVar[int]
    SUBMODEL_CALLS_FIELD_NUMBER: _ClassVar[int]
    SUBMODEL_FAILURES_FIELD_NUMBER: _ClassVar[int]
    EFFECTIVE_SPEED_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_COMPUTE_MS_FIELD_NUMBER: _ClassVar[int]
    CALIBRATION_PENDING_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    info: DeviceInfo
    assignment: Assignment
    last_report: HeartbeatRequest
    seconds_since_heartbeat: float
    live: bool
    offloads: int
    submodel_calls: int
    submodel_failures: int
    effective_speed: float
    expected_compute_ms: float
    calibration_pending: bool
    def __init__(self, device_id: _Optional[str] = ..., info: _Optional[_Union[DeviceInfo, _Mapping]] = ..., assignment: _Optional[_Union[Assignment, _Mapping]] = ..., last_report: _Optional[_Union[HeartbeatRequest, _Mapping]] = ..., seconds_since_heartbeat: _Optional[float] = ..., live: _Optional[bool] = ..., offloads: _Optional[int] = ..., submodel_calls: _Optional[int] = ..., submodel_failures: _Optional[int] = ..., effective_speed: _Optional[float] = ..., expected_compute_ms: _Optional[float] = ..., calibration_pending: _Optional[bool] = ...) -> None: ...

class RawTensor(_message.Message):
    __slots__ = ("datatype", "shape", "data")
    DATATYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    datatype: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    data: bytes
    def __init__(self, datatype: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ..., data: _Optional[bytes] = ...) -> None: ...

class RunSubModelRequest(_message.Message):
    __slots__ = ("model_name", "bundle", "part", "images", "request_id")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_FIELD_NUMBER: _ClassVar[int]
    PART_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    bundle: str
    part: str
    images: RawTensor
    request_id: str
    def __init__(self, model_name: _Optional[str] = ..., bundle: _Optional[str] = ..., part: _Optional[str] = ..., images: _Optional[_Union[RawTensor, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class RunSubModelResponse(_message.Message):
    __slots__ = ("feature", "compute_ms", "request_id", "device_name")
    FEATURE_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_MS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    DEVICE_NAME_FIELD_NUMBER: _ClassVar[int]
    feature: RawTensor
    compute_ms: float
    request_id: str
    device_name: str
    def __init__(self, feature: _Optional[_Union[RawTensor, _Mapping]] = ..., compute_ms: _Optional[float] = ..., request_id: _Optional[str] = ..., device_name: _Optional[str] = ...) -> None: ...

from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

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
    __slots__ = ("name", "address", "platform", "cpu_count", "memory_total_bytes", "profile")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    PLATFORM_FIELD_NUMBER: _ClassVar[int]
    CPU_COUNT_FIELD_NUMBER: _ClassVar[int]
    MEMORY_TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    name: str
    address: str
    platform: str
    cpu_count: int
    memory_total_bytes: int
    profile: str
    def __init__(self, name: _Optional[str] = ..., address: _Optional[str] = ..., platform: _Optional[str] = ..., cpu_count: _Optional[int] = ..., memory_total_bytes: _Optional[int] = ..., profile: _Optional[str] = ...) -> None: ...

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
    __slots__ = ("generation", "model_name", "bundle", "split_point", "split_point_name", "sub_channel", "power_w", "parts", "codec_bits", "codec_compress", "model_inputs", "model_outputs")
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
    def __init__(self, generation: _Optional[int] = ..., model_name: _Optional[str] = ..., bundle: _Optional[str] = ..., split_point: _Optional[int] = ..., split_point_name: _Optional[str] = ..., sub_channel: _Optional[int] = ..., power_w: _Optional[float] = ..., parts: _Optional[_Iterable[_Union[PartRef, _Mapping]]] = ..., codec_bits: _Optional[int] = ..., codec_compress: _Optional[bool] = ..., model_inputs: _Optional[_Iterable[_Union[TensorSpec, _Mapping]]] = ..., model_outputs: _Optional[_Iterable[_Union[TensorSpec, _Mapping]]] = ...) -> None: ...

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
    __slots__ = ("device_id", "name", "cpu_percent", "memory_percent", "temperature_c", "queue_length", "assignment_generation", "parts_held")
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    CPU_PERCENT_FIELD_NUMBER: _ClassVar[int]
    MEMORY_PERCENT_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_C_FIELD_NUMBER: _ClassVar[int]
    QUEUE_LENGTH_FIELD_NUMBER: _ClassVar[int]
    ASSIGNMENT_GENERATION_FIELD_NUMBER: _ClassVar[int]
    PARTS_HELD_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    name: str
    cpu_percent: float
    memory_percent: float
    temperature_c: float
    queue_length: int
    assignment_generation: int
    parts_held: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, device_id: _Optional[str] = ..., name: _Optional[str] = ..., cpu_percent: _Optional[float] = ..., memory_percent: _Optional[float] = ..., temperature_c: _Optional[float] = ..., queue_length: _Optional[int] = ..., assignment_generation: _Optional[int] = ..., parts_held: _Optional[_Iterable[str]] = ...) -> None: ...

class HeartbeatResponse(_message.Message):
    __slots__ = ("assignment", "heartbeat_interval_ms")
    ASSIGNMENT_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    assignment: Assignment
    heartbeat_interval_ms: int
    def __init__(self, assignment: _Optional[_Union[Assignment, _Mapping]] = ..., heartbeat_interval_ms: _Optional[int] = ...) -> None: ...

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
    __slots__ = ("model_name", "split_point", "payload", "request_id", "device_id")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    SPLIT_POINT_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    split_point: int
    payload: bytes
    request_id: str
    device_id: str
    def __init__(self, model_name: _Optional[str] = ..., split_point: _Optional[int] = ..., payload: _Optional[bytes] = ..., request_id: _Optional[str] = ..., device_id: _Optional[str] = ...) -> None: ...

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

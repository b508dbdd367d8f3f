"""Tensor codec: tensors to bytes and back, for the wire and for payload accounting.

Two layers:
- raw tensors as the Open Inference Protocol carries them: little-endian, row-major bytes plus
  a datatype name ("FP32", "UINT8", ...) and a shape (`tensor_from_raw`, `tensor_to_raw`);
- encoded features for offloading: optional uniform min-max quantisation to 8, 4 or 2 bits with
  a scale and an integer zero point (real = scale * (code - zero_point)), sub-byte codes packed,
  and an optional zlib stage. `to_bytes` gives the exact message body that crosses the network,
  so payload sizes are counted, never estimated.

Every length is checked against the shape before anything is allocated: bad bytes raise
`InvalidInput`, never crash.
"""

from __future__ import annotations

import math
import struct
import zlib
from dataclasses import dataclass

import numpy as np

from coinfer.core.errors import InvalidInput

# Open Inference Protocol datatype names and their little-endian numpy types.
DATATYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype("bool"),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}
_DATATYPE_BY_KIND = {(dt.kind, dt.itemsize): name for name, dt in DATATYPES.items()}
_DATATYPE_CODES = {name: i for i, name in enumerate(DATATYPES)}
_DATATYPE_NAMES = list(DATATYPES)

MAX_NDIM = 8
MAX_DIM = 2**31 - 1
# Largest tensor a compressed payload may inflate to; far above any feature coinfer sends.
MAX_INFLATED_BYTES = 1 << 30
QUANT_BITS = (8, 4, 2)
# Header of an encoded tensor: magic, version, flags, datatype code, ndim, bits.
_MAGIC = b"CT"
_VERSION = 1
_HEADER = struct.Struct("<2sBBBBB")
_QUANT = struct.Struct("<fi")
_FLAG_QUANTISED = 1
_FLAG_ZLIB = 2


def datatype_of(array: np.ndarray) -> str:
    """The OIP datatype name of a numpy array's dtype."""
    name = _DATATYPE_BY_KIND.get((array.dtype.kind, array.dtype.itemsize))
    if name is None:
        raise InvalidInput(f"dtype {array.dtype} has no Open Inference Protocol datatype")
    return name


def _check_shape(shape: object) -> tuple[int, ...]:
    try:
        dims = tuple(int(d) for d in shape)  # type: ignore[union-attr]
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"shape must be a list of integers, got {shape!r}") from exc
    if len(dims) > MAX_NDIM:
        raise InvalidInput(f"shape has {len(dims)} dimensions, at most {MAX_NDIM} are allowed")
    if any(d < 0 for d in dims):
        raise InvalidInput(f"shape {list(dims)} has a negative dimension")
    if any(d > MAX_DIM for d in dims):
        raise InvalidInput(f"shape {list(dims)} has a dimension above {MAX_DIM}")
    return dims


def num_elements(shape: tuple[int, ...]) -> int:
    return math.prod(shape)


def tensor_from_raw(datatype: str, shape: object, raw: bytes) -> np.ndarray:
    """Decode one OIP raw tensor; the byte length must match datatype and shape exactly."""
    if datatype not in DATATYPES:
        raise InvalidInput(f"unsupported datatype {datatype!r}; expected one of {', '.join(DATATYPES)}")
    dims = _check_shape(shape)
    dtype = DATATYPES[datatype]
    expected = num_elements(dims) * dtype.itemsize
    if len(raw) != expected:
        raise InvalidInput(
            f"raw content of {len(raw)} bytes does not match datatype {datatype} and shape {list(dims)} "
            f"({expected} bytes expected)"
        )
    return np.frombuffer(raw, dtype=dtype).reshape(dims).copy()


def tensor_to_raw(array: np.ndarray) -> tuple[str, tuple[int, ...], bytes]:
    """Encode an array as (datatype, shape, little-endian row-major bytes)."""
    array = np.asarray(array)
    datatype = datatype_of(array)
    data = np.ascontiguousarray(array, dtype=DATATYPES[datatype]).tobytes()
    return datatype, tuple(array.shape), data


@dataclass(frozen=True)
class EncodedTensor:
    """A tensor as it travels: stored values plus what is needed to restore them."""

    datatype: str
    """Datatype of the original tensor; quantised tensors decode to FP32."""
    shape: tuple[int, ...]
    """Shape of the original tensor."""
    data: bytes
    """Stored values: raw little-endian bytes, or packed quantisation codes."""
    bits: int = 0
    """Bits per quantisation code; 0 means not quantised."""
    scale: float = 1.0
    """Quantisation step: real = scale * (code - zero_point)."""
    zero_point: int = 0
    """Code that represents real zero."""
    compressed: bool = False
    """Whether `data` went through zlib."""

    @property
    def quantised(self) -> bool:
        return self.bits > 0


def _pack_codes(codes: np.ndarray, bits: int) -> bytes:
    if bits == 8:
        return codes.astype(np.uint8).tobytes()
    per_byte = 8 // bits
    padded = np.zeros(-(-codes.size // per_byte) * per_byte, dtype=np.uint8)
    padded[: codes.size] = codes
    groups = padded.reshape(-1, per_byte)
    packed = np.zeros(groups.shape[0], dtype=np.uint8)
    for slot in range(per_byte):
        packed |= groups[:, slot] << (slot * bits)
    return packed.tobytes()


def _unpack_codes(data: bytes, bits: int, count: int) -> np.ndarray:
    packed = np.frombuffer(data, dtype=np.uint8)
    if bits == 8:
        return packed[:count]
    per_byte = 8 // bits
    mask = (1 << bits) - 1
    codes = np.stack([(packed >> (slot * bits)) & mask for slot in range(per_byte)], axis=1)
    return codes.reshape(-1)[:count]


def _packed_length(bits: int, count: int) -> int:
    return -(-count * bits // 8)


def encode(array: np.ndarray, bits: int = 0, compress: bool | None = False) -> EncodedTensor:
    """Encode an array, optionally quantised to `bits` (8, 4 or 2) and zlib-compressed.

    ``compress=None`` keeps the zlib stage only when it makes the payload smaller.
    """
    if hasattr(array, "detach"):  # a torch tensor passed straight in
        array = array.detach().cpu().numpy()
    array = np.asarray(array)
    if bits == 0:
        datatype, shape, data = tensor_to_raw(array)
        enc = EncodedTensor(datatype=datatype, shape=shape, data=data)
    else:
        if bits not in QUANT_BITS:
            raise InvalidInput(f"quantisation bits must be one of {QUANT_BITS}, got {bits}")
        values = np.asarray(array, dtype=np.float32)
        if not np.all(np.isfinite(values)):
            raise InvalidInput("cannot quantise a tensor that holds NaN or Inf")
        levels = (1 << bits) - 1
        lo = float(values.min(initial=0.0))
        hi = float(values.max(initial=0.0))
        # The range always holds zero, so zero is exactly representable (zero padding stays zero).
        lo, hi = min(lo, 0.0), max(hi, 0.0)
        scale = (hi - lo) / levels if hi > lo else 1.0
        # The wire holds a float32 scale: a range of a few subnormals must not round it to zero.
        scale = max(scale, float(np.finfo(np.float32).smallest_subnormal))
        zero_point = int(round(-lo / scale))
        codes = np.clip(np.rint(values / scale) + zero_point, 0, levels).astype(np.uint8)
        enc = EncodedTensor(
            datatype="FP32",
            shape=tuple(values.shape),
            data=_pack_codes(codes.reshape(-1), bits),
            bits=bits,
            scale=float(np.float32(scale)),
            zero_point=zero_point,
        )
    if compress is False:
        return enc
    packed = zlib.compress(enc.data, 6)
    if compress is None and len(packed) >= len(enc.data):
        return enc
    return EncodedTensor(enc.datatype, enc.shape, packed, enc.bits, enc.scale, enc.zero_point, compressed=True)


def decode(enc: EncodedTensor) -> np.ndarray:
    """Restore an array from an EncodedTensor (FP32 when it was quantised)."""
    data = enc.data
    if enc.compressed:
        data = _bounded_decompress(data, _stored_length(enc))
    if not enc.quantised:
        return tensor_from_raw(enc.datatype, enc.shape, data)
    count = num_elements(enc.shape)
    if len(data) != _packed_length(enc.bits, count):
        raise InvalidInput(
            f"{len(data)} bytes of {enc.bits}-bit codes do not match shape {list(enc.shape)} "
            f"({_packed_length(enc.bits, count)} bytes expected)"
        )
    codes = _unpack_codes(data, enc.bits, count).astype(np.float32)
    return (np.float32(enc.scale) * (codes - np.float32(enc.zero_point))).reshape(enc.shape)


def _stored_length(enc: EncodedTensor) -> int:
    count = num_elements(enc.shape)
    if enc.quantised:
        return _packed_length(enc.bits, count)
    if enc.datatype not in DATATYPES:
        raise InvalidInput(f"unsupported datatype {enc.datatype!r}")
    return count * DATATYPES[enc.datatype].itemsize


def _bounded_decompress(data: bytes, expected: int) -> bytes:
    # Never inflate more than the shape allows: a small bomb cannot exhaust memory.
    if expected > MAX_INFLATED_BYTES:
        raise InvalidInput(f"compressed payload claims {expected} bytes, above the {MAX_INFLATED_BYTES}-byte limit")
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(data, expected + 1)
    except zlib.error as exc:
        raise InvalidInput(f"compressed payload is corrupt ({exc})") from exc
    if len(out) != expected or inflater.unconsumed_tail:
        raise InvalidInput(f"compressed payload inflates to the wrong size ({expected} bytes expected)")
    return out


def to_bytes(enc: EncodedTensor) -> bytes:
    """Serialise an EncodedTensor: the exact payload that crosses the network."""
    flags = (_FLAG_QUANTISED if enc.quantised else 0) | (_FLAG_ZLIB if enc.compressed else 0)
    parts = [
        _HEADER.pack(_MAGIC, _VERSION, flags, _DATATYPE_CODES[enc.datatype], len(enc.shape), enc.bits),
        struct.pack(f"<{len(enc.shape)}Q", *enc.shape),
    ]
    if enc.quantised:
        parts.append(_QUANT.pack(enc.scale, enc.zero_point))
    parts.append(enc.data)
    return b"".join(parts)


def from_bytes(payload: bytes) -> EncodedTensor:
    """Parse a payload made by `to_bytes`; anything malformed raises InvalidInput."""
    if len(payload) < _HEADER.size:
        raise InvalidInput(f"payload of {len(payload)} bytes is shorter than the {_HEADER.size}-byte header")
    magic, version, flags, dtype_code, ndim, bits = _HEADER.unpack_from(payload)
    if magic != _MAGIC:
        raise InvalidInput("payload is not an encoded tensor (bad magic bytes)")
    if version != _VERSION:
        raise InvalidInput(f"encoded tensor version {version} is not supported (expected {_VERSION})")
    if flags & ~(_FLAG_QUANTISED | _FLAG_ZLIB):
        raise InvalidInput(f"unknown flags {flags:#x} in encoded tensor")
    if dtype_code >= len(_DATATYPE_NAMES):
        raise InvalidInput(f"unknown datatype code {dtype_code}")
    if ndim > MAX_NDIM:
        raise InvalidInput(f"encoded tensor has {ndim} dimensions, at most {MAX_NDIM} are allowed")
    quantised = bool(flags & _FLAG_QUANTISED)
    if quantised != (bits > 0) or (quantised and bits not in QUANT_BITS):
        raise InvalidInput(f"inconsistent quantisation: flags {flags:#x}, bits {bits}")
    offset = _HEADER.size
    if len(payload) < offset + 8 * ndim:
        raise InvalidInput("payload is truncated inside its shape")
    shape = _check_shape(struct.unpack_from(f"<{ndim}Q", payload, offset))
    offset += 8 * ndim
    scale, zero_point = 1.0, 0
    if quantised:
        if len(payload) < offset + _QUANT.size:
            raise InvalidInput("payload is truncated inside its quantisation parameters")
        scale, zero_point = _QUANT.unpack_from(payload, offset)
        offset += _QUANT.size
        if not math.isfinite(scale) or scale <= 0:
            raise InvalidInput(f"quantisation scale must be a positive finite number, got {scale}")
    enc = EncodedTensor(
        datatype=_DATATYPE_NAMES[dtype_code],
        shape=tuple(shape),
        data=payload[offset:],
        bits=bits,
        scale=scale,
        zero_point=zero_point,
        compressed=bool(flags & _FLAG_ZLIB),
    )
    expected = _stored_length(enc)
    if not enc.compressed and len(enc.data) != expected:
        raise InvalidInput(
            f"payload carries {len(enc.data)} data bytes, shape {list(enc.shape)} needs {expected}"
        )
    return enc


def quantisation_error_bound(enc: EncodedTensor) -> float:
    """Largest absolute error `decode` can make for values inside the quantised range."""
    return enc.scale / 2 if enc.quantised else 0.0

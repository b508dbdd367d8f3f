import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from coinfer.core import codec
from coinfer.core.errors import InvalidInput


@pytest.mark.parametrize("datatype", sorted(codec.DATATYPES))
def test_raw_round_trip_every_datatype(datatype):
    rng = np.random.default_rng(0)
    arr = (rng.random((2, 3, 4)) * 100).astype(codec.DATATYPES[datatype])
    name, shape, raw = codec.tensor_to_raw(arr)
    assert name == datatype and shape == (2, 3, 4)
    np.testing.assert_array_equal(codec.tensor_from_raw(name, shape, raw), arr)


def test_raw_is_little_endian_row_major():
    arr = np.array([[1, 2], [3, 256]], dtype=np.int32)
    _, _, raw = codec.tensor_to_raw(arr)
    assert raw == b"".join(int(v).to_bytes(4, "little") for v in [1, 2, 3, 256])


@pytest.mark.parametrize("delta", [-1, 1])
def test_byte_length_off_by_one_is_refused(delta):
    raw = np.zeros((2, 3), np.float32).tobytes()
    bad = raw[:delta] if delta < 0 else raw + b"\0"
    with pytest.raises(InvalidInput, match="does not match"):
        codec.tensor_from_raw("FP32", [2, 3], bad)


@pytest.mark.parametrize(
    "datatype,shape,match",
    [("FP8", [1], "unsupported datatype"), ("FP32", [-1, 2], "negative"), ("FP32", ["a"], "integers"),
     ("FP32", [1] * 9, "dimensions"), ("FP32", [2**40, 2**40], "above"), ("FP32", [0, 2**40], "above")],
)
def test_bad_datatype_or_shape_is_refused(datatype, shape, match):
    with pytest.raises(InvalidInput, match=match):
        codec.tensor_from_raw(datatype, shape, b"")


@pytest.mark.parametrize("bits", [8, 4, 2])
def test_quantisation_error_is_within_half_a_step(bits):
    rng = np.random.default_rng(bits)
    arr = rng.normal(size=(3, 17, 5)).astype(np.float32) * 4 + 1
    enc = codec.encode(arr, bits=bits)
    out = codec.decode(codec.from_bytes(codec.to_bytes(enc)))
    assert out.shape == arr.shape and out.dtype == np.float32
    step = (max(arr.max(), 0) - min(arr.min(), 0)) / ((1 << bits) - 1)
    assert np.abs(out - arr).max() <= step / 2 * (1 + 1e-4)
    assert codec.quantisation_error_bound(enc) == pytest.approx(step / 2, rel=1e-5)
    # Sub-byte codes are packed: the payload shrinks with the bit width.
    assert len(enc.data) == -(-arr.size * bits // 8)


def test_quantised_zero_stays_exact():
    arr = np.array([0.0, 0.0, 1.5, 3.0, -0.7], np.float32)
    out = codec.decode(codec.encode(arr, bits=8))
    assert out[0] == 0.0 and out[1] == 0.0


def test_quantising_non_finite_values_is_refused():
    with pytest.raises(InvalidInput, match="NaN or Inf"):
        codec.encode(np.array([1.0, np.nan], np.float32), bits=8)
    with pytest.raises(InvalidInput, match="bits"):
        codec.encode(np.ones(3, np.float32), bits=3)


def test_zlib_stage_only_when_it_pays():
    sparse = np.zeros((64, 64), np.float32)
    sparse[0, 0] = 1
    assert codec.encode(sparse, compress=None).compressed
    noise = np.random.default_rng(1).integers(0, 255, size=4096, dtype=np.uint8)
    assert not codec.encode(noise, compress=None).compressed
    enc = codec.encode(sparse, bits=8, compress=True)
    np.testing.assert_allclose(codec.decode(codec.from_bytes(codec.to_bytes(enc))), sparse, atol=enc.scale / 2 + 1e-7)


def test_zip_bomb_is_refused():
    enc = codec.encode(np.zeros(1 << 20, np.float32), compress=True)
    liar = codec.EncodedTensor("FP32", (16,), enc.data, compressed=True)
    with pytest.raises(InvalidInput, match="wrong size"):
        codec.decode(liar)


def test_torch_tensor_with_grad_is_accepted():
    torch = pytest.importorskip("torch")
    t = torch.ones(2, 3, requires_grad=True)
    np.testing.assert_array_equal(codec.decode(codec.encode(t)), np.ones((2, 3), np.float32))


@pytest.mark.parametrize(
    "payload",
    [b"", b"XX\x01\x00\x0a\x01\x00", b"CT\x09\x00\x0a\x01\x00" + b"\0" * 8, b"CT\x01\x00\x0a\x01\x00" + b"\x02" + b"\0" * 7 + b"\0" * 3,
     b"CT\x01\x01\x0a\x01\x08" + b"\x01" + b"\0" * 7 + b"\0\0\0\0\0\0\0\0" + b"\x01"],
)
def test_malformed_payloads_raise_invalid_input(payload):
    with pytest.raises(InvalidInput):
        codec.decode(codec.from_bytes(payload))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_random_payloads_never_crash(payload):
    try:
        codec.decode(codec.from_bytes(payload))
    except InvalidInput:
        pass


@pytest.mark.parametrize("bits", [8, 4, 2])
def test_a_subnormal_range_keeps_a_positive_scale_on_the_wire(bits):
    # hypothesis found it: 1e-45 / 255 rounds to a float32 scale of 0, which decode rightly refuses.
    arr = np.array([1e-45, 0.0], np.float32)
    enc = codec.encode(arr, bits=bits, compress=False)
    out = codec.decode(codec.from_bytes(codec.to_bytes(enc)))
    assert enc.scale > 0 and np.abs(out - arr).max() <= 1e-44


@settings(max_examples=60, deadline=None)
@given(hnp.arrays(np.float32, hnp.array_shapes(max_dims=4, max_side=6), elements=st.floats(-1e3, 1e3, width=32)),
       st.sampled_from([0, 8, 4, 2]), st.sampled_from([False, True, None]))
def test_encode_decode_round_trip_property(arr, bits, compress):
    enc = codec.encode(arr, bits=bits, compress=compress)
    out = codec.decode(codec.from_bytes(codec.to_bytes(enc)))
    assert out.shape == arr.shape
    if bits == 0:
        np.testing.assert_array_equal(out, arr)
    else:
        assert np.abs(out - arr).max(initial=0) <= enc.scale / 2 * (1 + 1e-3) + 1e-6

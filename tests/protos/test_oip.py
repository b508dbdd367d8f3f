"""Open Inference Protocol conversion: what a malformed request is told, and round trips."""

from __future__ import annotations

import numpy as np
import pytest

from coinfer.core.errors import InvalidInput
from coinfer.protos import inference_pb2 as pb
from coinfer.protos.oip import (
    TensorMeta,
    build_infer_request,
    check_inputs,
    check_requested_outputs,
    infer_request_from_proto,
    infer_response_outputs,
    infer_response_to_proto,
    model_metadata_to_proto,
)

IMAGE = TensorMeta("image", "UINT8", (-1, 1, 8, 8))
LOGITS = TensorMeta("logits", "FP32", (-1, 10))


def _images(n: int = 3) -> np.ndarray:
    return np.arange(n * 64, dtype=np.uint8).reshape(n, 1, 8, 8)


def test_request_round_trip_keeps_values_order_and_id() -> None:
    x = _images()
    extra = np.linspace(0, 1, 6, dtype=np.float32).reshape(2, 3)
    proto = build_infer_request("m", {"image": x, "extra": extra}, request_id="r1", outputs=["logits"])
    proto.parameters["priority"].int64_param = 3
    req = infer_request_from_proto(pb.ModelInferRequest.FromString(proto.SerializeToString()))
    assert list(req.inputs) == ["image", "extra"]
    np.testing.assert_array_equal(req.inputs["image"], x)
    np.testing.assert_array_equal(req.inputs["extra"], extra)
    assert (req.model_name, req.id, req.requested_outputs) == ("m", "r1", ("logits",))
    assert req.parameters == {"priority": 3}


def test_typed_contents_are_accepted_and_range_checked() -> None:
    proto = pb.ModelInferRequest(model_name="m")
    t = proto.inputs.add(name="image", datatype="UINT8", shape=[1, 1, 2, 2])
    t.contents.uint_contents.extend([0, 1, 2, 255])
    req = infer_request_from_proto(proto)
    assert req.inputs["image"].dtype == np.uint8
    assert req.inputs["image"].ravel().tolist() == [0, 1, 2, 255]
    t.contents.uint_contents[3] = 256
    with pytest.raises(InvalidInput, match="does not fit datatype UINT8"):
        infer_request_from_proto(proto)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda r: r.inputs[0].__setattr__("datatype", "FP17"), "unsupported datatype 'FP17'"),
        (lambda r: r.raw_input_contents.__setitem__(0, r.raw_input_contents[0][:-1]), "does not match datatype UINT8"),
        (lambda r: r.raw_input_contents.append(b"x"), "2 raw_input_contents entries for 1 inputs"),
        (lambda r: r.inputs[0].shape.__setitem__(0, -2), "negative dimension"),
        (lambda r: r.__setattr__("model_name", ""), "model_name is empty"),
    ],
)
def test_malformed_requests_raise_invalid_input_naming_the_problem(mutate, message) -> None:
    proto = build_infer_request("m", {"image": _images(1)})
    mutate(proto)
    with pytest.raises(InvalidInput, match=message):
        infer_request_from_proto(proto)


def test_duplicate_input_names_are_refused() -> None:
    proto = build_infer_request("m", {"image": _images(1)})
    proto.inputs.add(name="image", datatype="UINT8", shape=[1, 1, 8, 8])
    proto.raw_input_contents.append(_images(1).tobytes())
    with pytest.raises(InvalidInput, match="appears twice"):
        infer_request_from_proto(proto)


def test_check_inputs_against_declared_metadata() -> None:
    ok = infer_request_from_proto(build_infer_request("m", {"image": _images(5)}))
    assert check_inputs(ok, [IMAGE])["image"].shape == (5, 1, 8, 8)  # -1 takes any batch
    wrong_type = infer_request_from_proto(build_infer_request("m", {"image": _images(1).astype(np.float32)}))
    with pytest.raises(InvalidInput, match="must be UINT8 with shape \\[-1, 1, 8, 8\\].*got FP32"):
        check_inputs(wrong_type, [IMAGE])
    wrong_shape = infer_request_from_proto(build_infer_request("m", {"image": np.zeros((1, 1, 7, 8), np.uint8)}))
    with pytest.raises(InvalidInput, match="got UINT8 with shape \\[1, 1, 7, 8\\]"):
        check_inputs(wrong_shape, [IMAGE])
    wrong_name = infer_request_from_proto(build_infer_request("m", {"pixels": _images(1)}))
    with pytest.raises(InvalidInput, match="has no input 'pixels'"):
        check_inputs(wrong_name, [IMAGE])


def test_requested_outputs_default_to_all_and_unknown_ones_are_refused() -> None:
    req = infer_request_from_proto(build_infer_request("m", {"image": _images(1)}))
    assert check_requested_outputs(req, [LOGITS]) == ("logits",)
    bad = infer_request_from_proto(build_infer_request("m", {"image": _images(1)}, outputs=["probs"]))
    with pytest.raises(InvalidInput, match="has no output 'probs'"):
        check_requested_outputs(bad, [LOGITS])


def test_response_round_trip_and_metadata() -> None:
    logits = np.random.default_rng(0).standard_normal((3, 10)).astype(np.float32)
    resp = infer_response_to_proto(
        model_name="m", model_version="1", request_id="r", outputs={"logits": logits}, parameters={"tail_ms": 1.5}
    )
    assert resp.outputs[0].datatype == "FP32" and list(resp.outputs[0].shape) == [3, 10]
    assert resp.parameters["tail_ms"].double_param == 1.5
    np.testing.assert_array_equal(infer_response_outputs(resp)["logits"], logits)
    meta = model_metadata_to_proto(name="m", versions=["1"], platform="coinfer_split", inputs=[IMAGE], outputs=[LOGITS])
    assert list(meta.inputs[0].shape) == [-1, 1, 8, 8] and meta.outputs[0].name == "logits"

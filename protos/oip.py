"""Open Inference Protocol messages <-> domain values (numpy arrays and tensor metadata).

The servicers of both daemons go through here, so every front door validates a request the same
way: datatypes, shapes and byte lengths are checked by the core codec (`tensor_from_raw`) and
against the model's declared inputs, and every problem is an `InvalidInput` naming the input,
what was sent and what was expected. Nothing here knows about a particular model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

import numpy as np

from coinfer.core.bundle import TensorSpec
from coinfer.core.codec import DATATYPES, datatype_of, tensor_from_raw, tensor_to_raw
from coinfer.core.errors import InvalidInput
from coinfer.protos import inference_pb2 as pb

ParameterValue = bool | int | float | str


TensorMeta = TensorSpec
"""Declared name, OIP datatype and shape of a model input or output (-1 = any size): the core's
`TensorSpec`, under the name the servicers use."""


@dataclass(frozen=True)
class InferRequest:
    """A decoded ModelInferRequest: arrays by input name, in request order."""

    model_name: str
    model_version: str
    id: str
    inputs: dict[str, np.ndarray]
    requested_outputs: tuple[str, ...] = ()
    """Output names the client asked for; empty = every output."""
    parameters: dict[str, ParameterValue] = field(default_factory=dict)


# Typed `InferTensorContents` field that carries each datatype (the non-raw input form).
_CONTENTS_FIELD: dict[str, str] = {
    "BOOL": "bool_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
}


def parameters_from_proto(params: Mapping[str, pb.InferParameter]) -> dict[str, ParameterValue]:
    """Plain Python values of an OIP parameter map (unset parameters are dropped)."""
    out: dict[str, ParameterValue] = {}
    for key, param in params.items():
        which = param.WhichOneof("parameter_choice")
        if which is not None:
            out[key] = getattr(param, which)
    return out


def _parameter_to_proto(value: ParameterValue) -> pb.InferParameter:
    # bool before int: bool is an int in Python.
    if isinstance(value, bool):
        return pb.InferParameter(bool_param=value)
    if isinstance(value, int):
        return pb.InferParameter(int64_param=value)
    if isinstance(value, float):
        return pb.InferParameter(double_param=value)
    if isinstance(value, str):
        return pb.InferParameter(string_param=value)
    raise InvalidInput(f"parameter value {value!r} is not a bool, int, float or str")


def _input_from_contents(
    tensor: pb.ModelInferRequest.InferInputTensor | pb.ModelInferResponse.InferOutputTensor,
) -> np.ndarray:
    field_name = _CONTENTS_FIELD.get(tensor.datatype)
    if field_name is None:
        raise InvalidInput(
            f"input {tensor.name!r}: datatype {tensor.datatype!r} cannot be sent as typed contents; "
            f"expected one of {', '.join(_CONTENTS_FIELD)}"
        )
    values = getattr(tensor.contents, field_name)
    dtype = DATATYPES[tensor.datatype]
    expected = int(np.prod(tensor.shape)) if len(tensor.shape) else 1
    if len(values) != expected:
        raise InvalidInput(
            f"input {tensor.name!r}: {len(values)} values in {field_name} do not match shape "
            f"{list(tensor.shape)} ({expected} expected)"
        )
    array = np.asarray(values)
    # Range-check before narrowing (e.g. 300 in uint_contents for UINT8) so nothing wraps silently.
    if dtype.kind in "iu" and array.size and (array.min() < np.iinfo(dtype).min or array.max() > np.iinfo(dtype).max):
        raise InvalidInput(f"input {tensor.name!r}: a value does not fit datatype {tensor.datatype}")
    return tensor_from_raw(tensor.datatype, tuple(tensor.shape), array.astype(dtype).tobytes())


def infer_request_from_proto(request: pb.ModelInferRequest) -> InferRequest:
    """Decode a ModelInferRequest; raises InvalidInput on any malformed input."""
    if not request.model_name:
        raise InvalidInput("model_name is empty")
    if not request.inputs:
        raise InvalidInput("the request has no inputs")
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise InvalidInput(
            f"{len(raw)} raw_input_contents entries for {len(request.inputs)} inputs; "
            "send one entry per input, in input order"
        )
    inputs: dict[str, np.ndarray] = {}
    for i, tensor in enumerate(request.inputs):
        if not tensor.name:
            raise InvalidInput(f"input #{i} has no name")
        if tensor.name in inputs:
            raise InvalidInput(f"input {tensor.name!r} appears twice")
        try:
            if raw:
                if tensor.HasField("contents"):
                    raise InvalidInput("raw_input_contents and typed contents cannot be mixed")
                inputs[tensor.name] = tensor_from_raw(tensor.datatype, tuple(tensor.shape), raw[i])
            else:
                inputs[tensor.name] = _input_from_contents(tensor)
        except InvalidInput as exc:
            message = str(exc)
            raise InvalidInput(message if message.startswith("input ") else f"input {tensor.name!r}: {message}") from exc
    return InferRequest(
        model_name=request.model_name,
        model_version=request.model_version,
        id=request.id,
        inputs=inputs,
        requested_outputs=tuple(o.name for o in request.outputs),
        parameters=parameters_from_proto(request.parameters),
    )


def check_inputs(request: InferRequest, declared: Sequence[TensorMeta]) -> dict[str, np.ndarray]:
    """The request's arrays, checked against a model's declared inputs (names, types, shapes)."""
    wanted = {meta.name: meta for meta in declared}
    unknown = [name for name in request.inputs if name not in wanted]
    if unknown:
        raise InvalidInput(
            f"model {request.model_name!r} has no input {unknown[0]!r}; its inputs are {sorted(wanted)}"
        )
    missing = [name for name in wanted if name not in request.inputs]
    if missing:
        raise InvalidInput(f"model {request.model_name!r} needs input {missing[0]!r}, which the request lacks")
    for name, array in request.inputs.items():
        meta = wanted[name]
        datatype = datatype_of(array)
        if not meta.accepts(datatype, array.shape):
            raise InvalidInput(
                f"input {name!r} of model {request.model_name!r} must be {meta.datatype} with shape "
                f"{list(meta.shape)} (-1 = any), got {datatype} with shape {list(array.shape)}"
            )
    return dict(request.inputs)


def check_requested_outputs(request: InferRequest, declared: Sequence[TensorMeta]) -> tuple[str, ...]:
    """Names of the outputs to return: those requested, or all declared ones."""
    names = tuple(meta.name for meta in declared)
    for name in request.requested_outputs:
        if name not in names:
            raise InvalidInput(f"model {request.model_name!r} has no output {name!r}; its outputs are {list(names)}")
    return request.requested_outputs or names


def infer_response_to_proto(
    *,
    model_name: str,
    model_version: str,
    request_id: str,
    outputs: Mapping[str, np.ndarray],
    parameters: Mapping[str, ParameterValue] | None = None,
) -> pb.ModelInferResponse:
    """A ModelInferResponse carrying ``outputs`` as raw_output_contents, in mapping order."""
    response = pb.ModelInferResponse(model_name=model_name, model_version=model_version, id=request_id)
    for key, value in (parameters or {}).items():
        response.parameters[key].CopyFrom(_parameter_to_proto(value))
    for name, array in outputs.items():
        datatype, shape, raw = tensor_to_raw(array)
        response.outputs.add(name=name, datatype=datatype, shape=shape)
        response.raw_output_contents.append(raw)
    return response


def _tensor_meta_to_proto(meta: TensorMeta) -> pb.ModelMetadataResponse.TensorMetadata:
    return pb.ModelMetadataResponse.TensorMetadata(name=meta.name, datatype=meta.datatype, shape=meta.shape)


def model_metadata_to_proto(
    *,
    name: str,
    versions: Iterable[str],
    platform: str,
    inputs: Sequence[TensorMeta],
    outputs: Sequence[TensorMeta],
) -> pb.ModelMetadataResponse:
    """A ModelMetadataResponse for one model."""
    return pb.ModelMetadataResponse(
        name=name,
        versions=list(versions),
        platform=platform,
        inputs=[_tensor_meta_to_proto(m) for m in inputs],
        outputs=[_tensor_meta_to_proto(m) for m in outputs],
    )


# Client side: the same conversions the other way round, for coinfer's own client helpers.


def build_infer_request(
    model_name: str,
    inputs: Mapping[str, np.ndarray],
    *,
    request_id: str = "",
    model_version: str = "",
    outputs: Sequence[str] = (),
) -> pb.ModelInferRequest:
    """A ModelInferRequest sending ``inputs`` as raw_input_contents."""
    request = pb.ModelInferRequest(model_name=model_name, model_version=model_version, id=request_id)
    for name, array in inputs.items():
        datatype, shape, raw = tensor_to_raw(array)
        request.inputs.add(name=name, datatype=datatype, shape=shape)
        request.raw_input_contents.append(raw)
    for name in outputs:
        request.outputs.add(name=name)
    return request


def infer_response_outputs(response: pb.ModelInferResponse) -> dict[str, np.ndarray]:
    """The arrays of a ModelInferResponse by output name (raw or typed contents)."""
    raw = response.raw_output_contents
    if raw and len(raw) != len(response.outputs):
        raise InvalidInput(f"{len(raw)} raw_output_contents entries for {len(response.outputs)} outputs")
    out: dict[str, np.ndarray] = {}
    for i, tensor in enumerate(response.outputs):
        if raw:
            out[tensor.name] = tensor_from_raw(tensor.datatype, tuple(tensor.shape), raw[i])
        else:
            out[tensor.name] = _input_from_contents(tensor)  # same typed-contents layout
    return out

"""Our inference.proto is wire-identical to Triton's grpc_service.proto on what we serve.

tritonclient registers the same `inference.*` symbols in the default descriptor pool, so the two
cannot be imported in one process: Triton's side is described by a child interpreter.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest
from google.protobuf import descriptor as _descriptor

# find_spec, not importorskip: importing tritonclient.grpc here would poison the descriptor pool.
if importlib.util.find_spec("tritonclient") is None:
    pytest.skip("needs tritonclient[grpc] (the test extra)", allow_module_level=True)

from coinfer.protos import inference_pb2

_DESCRIBE = r"""
import json
from tritonclient.grpc import service_pb2
from google.protobuf import descriptor
def walk(m, out):
    out[m.full_name] = {f.name: [f.number, f.type, f.is_repeated,
        f.message_type.full_name if f.message_type else "",
        f.containing_oneof.name if f.containing_oneof else ""] for f in m.fields}
    for n in m.nested_types:
        walk(n, out)
out = {}
for m in service_pb2.DESCRIPTOR.message_types_by_name.values():
    walk(m, out)
svc = service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
methods = {m.name: [m.input_type.full_name, m.output_type.full_name] for m in svc.methods}
print(json.dumps({"messages": out, "methods": methods, "service": svc.full_name}))
"""


def _walk(m: _descriptor.Descriptor, out: dict) -> None:
    out[m.full_name] = {
        f.name: [
            f.number,
            f.type,
            f.is_repeated,
            f.message_type.full_name if f.message_type else "",
            f.containing_oneof.name if f.containing_oneof else "",
        ]
        for f in m.fields
    }
    for n in m.nested_types:
        _walk(n, out)


def test_every_message_and_method_we_define_matches_triton() -> None:
    proc = subprocess.run([sys.executable, "-c", _DESCRIBE], capture_output=True, text=True, timeout=60, check=True)
    triton = json.loads(proc.stdout)
    ours: dict = {}
    for m in inference_pb2.DESCRIPTOR.message_types_by_name.values():
        _walk(m, ours)
    assert len(ours) >= 14
    for name, fields in ours.items():
        assert name in triton["messages"], f"{name} is not a Triton message"
        # Lists come back from JSON; compare like with like.
        assert {k: list(v) for k, v in fields.items()} == triton["messages"][name], name
    svc = inference_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    assert svc.full_name == triton["service"]
    for m in svc.methods:
        assert [m.input_type.full_name, m.output_type.full_name] == triton["methods"][m.name], m.name
    assert {m.name for m in svc.methods} == {
        "ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata", "ModelInfer"
    }

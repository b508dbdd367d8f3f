"""The shared server plumbing: status mapping, generic INTERNAL, token auth, health, reflection."""

from __future__ import annotations

import logging
from typing import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from coinfer.core import errors
from coinfer.core.errors import FailedPrecondition, InvalidInput
from coinfer.protos import coinfer_v1_pb2 as v1
from coinfer.protos import coinfer_v1_pb2_grpc as v1_grpc
from coinfer.protos import inference_pb2 as pb
from coinfer.protos import inference_pb2_grpc as pb_grpc
from coinfer.serving.security import ClientSecurity, ServerSecurity, open_channel
from coinfer.serving.server import ServerOptions, ServiceBinding, split_host_port, start_server

DEADLINE_S = 5.0
RAISES = {
    "invalid": errors.InvalidInput("bad shape [1, 2]"),
    "missing": errors.NotFound("no model 'x'"),
    "tampered": errors.IntegrityError("sha256 mismatch"),
    "gone": errors.Unavailable("tail unreachable"),
    "early": errors.FailedPrecondition("part not loaded yet"),
    "huge": errors.ResourceExhausted("batch too large"),
    "bug": KeyError("/secret/path/internal-detail"),
}


class _Oip(pb_grpc.GRPCInferenceServiceServicer):
    def ServerLive(self, request, context):
        return pb.ServerLiveResponse(live=True)

    def ModelInfer(self, request, context):
        raise RAISES[request.model_name]


class _Coordinator(v1_grpc.CoordinatorServicer):
    def FetchPart(self, request, context) -> Iterator[v1.PartChunk]:
        yield v1.PartChunk(part=request.part, offset=0, data=b"abc")
        raise errors.IntegrityError("part changed while streaming")


def _bindings():
    return [
        ServiceBinding("inference.GRPCInferenceService", pb_grpc.add_GRPCInferenceServiceServicer_to_server, _Oip()),
        ServiceBinding("coinfer.v1.Coordinator", v1_grpc.add_CoordinatorServicer_to_server, _Coordinator()),
    ]


@pytest.fixture
def server():
    running = start_server(_bindings(), ServerOptions(listen="127.0.0.1:0", grace_s=0.5))
    try:
        yield running
    finally:
        running.stop()


@pytest.mark.parametrize(
    ("model", "code"),
    [
        ("invalid", grpc.StatusCode.INVALID_ARGUMENT),
        ("missing", grpc.StatusCode.NOT_FOUND),
        ("tampered", grpc.StatusCode.DATA_LOSS),
        ("gone", grpc.StatusCode.UNAVAILABLE),
        ("early", grpc.StatusCode.FAILED_PRECONDITION),
        ("huge", grpc.StatusCode.RESOURCE_EXHAUSTED),
    ],
)
def test_domain_errors_become_their_status_code_with_the_message(server, model, code) -> None:
    with open_channel(server.address) as channel:
        with pytest.raises(grpc.RpcError) as info:
            pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(pb.ModelInferRequest(model_name=model), timeout=DEADLINE_S)
    assert info.value.code() == code
    assert info.value.details() == str(RAISES[model])


def test_unknown_errors_are_internal_generic_and_logged(server, caplog) -> None:
    with caplog.at_level(logging.ERROR, logger="coinfer.serving.interceptors"):
        with open_channel(server.address) as channel:
            with pytest.raises(grpc.RpcError) as info:
                pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(pb.ModelInferRequest(model_name="bug"), timeout=DEADLINE_S)
    assert info.value.code() == grpc.StatusCode.INTERNAL
    assert "secret" not in info.value.details() and "internal server error (ref " in info.value.details()
    ref = info.value.details().split("ref ")[1].split(")")[0]
    assert any(ref in r.getMessage() and r.exc_info for r in caplog.records)


def test_errors_in_the_middle_of_a_stream_are_mapped(server) -> None:
    with open_channel(server.address) as channel:
        stream = v1_grpc.CoordinatorStub(channel).FetchPart(v1.FetchPartRequest(part="head"), timeout=DEADLINE_S)
        first = next(stream)
        assert first.data == b"abc"
        with pytest.raises(grpc.RpcError) as info:
            next(stream)
    assert info.value.code() == grpc.StatusCode.DATA_LOSS


def test_unimplemented_methods_stay_unimplemented(server) -> None:
    with open_channel(server.address) as channel:
        with pytest.raises(grpc.RpcError) as info:
            pb_grpc.GRPCInferenceServiceStub(channel).ServerReady(pb.ServerReadyRequest(), timeout=DEADLINE_S)
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_health_and_reflection_are_served_and_stop_reports_not_serving(server) -> None:
    with open_channel(server.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "inference.GRPCInferenceService", "coinfer.v1.Coordinator"):
            assert health.Check(health_pb2.HealthCheckRequest(service=service), timeout=DEADLINE_S).status == health_pb2.HealthCheckResponse.SERVING
        server.set_serving(False)
        assert health.Check(health_pb2.HealthCheckRequest(), timeout=DEADLINE_S).status == health_pb2.HealthCheckResponse.NOT_SERVING
        reflect = reflection_pb2_grpc.ServerReflectionStub(channel)
        answers = list(reflect.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=DEADLINE_S))
        names = {s.name for s in answers[0].list_services_response.service}
        assert {"inference.GRPCInferenceService", "coinfer.v1.Coordinator", "grpc.health.v1.Health"} <= names
    server.stop()
    server.stop()  # idempotent
    assert server.stopped


def test_bearer_token_is_required_except_for_health() -> None:
    running = start_server(_bindings(), ServerOptions(security=ServerSecurity(token="s3cret"), grace_s=0.1))
    try:
        with open_channel(running.address) as anonymous:
            with pytest.raises(grpc.RpcError) as info:
                pb_grpc.GRPCInferenceServiceStub(anonymous).ServerLive(pb.ServerLiveRequest(), timeout=DEADLINE_S)
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
            health_pb2_grpc.HealthStub(anonymous).Check(health_pb2.HealthCheckRequest(), timeout=DEADLINE_S)
        with open_channel(running.address, ClientSecurity(token="wrong")) as wrong:
            with pytest.raises(grpc.RpcError) as info:
                pb_grpc.GRPCInferenceServiceStub(wrong).ServerLive(pb.ServerLiveRequest(), timeout=DEADLINE_S)
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with open_channel(running.address, ClientSecurity(token="s3cret")) as good:
            assert pb_grpc.GRPCInferenceServiceStub(good).ServerLive(pb.ServerLiveRequest(), timeout=DEADLINE_S).live
    finally:
        running.stop()


def test_plaintext_on_a_public_address_is_refused_and_listen_is_validated() -> None:
    with pytest.raises(FailedPrecondition, match="plaintext"):
        start_server(_bindings(), ServerOptions(listen="0.0.0.0:0"))
    for bad in ("8001", "host:http", "h:70000"):
        with pytest.raises(InvalidInput):
            split_host_port(bad)
    assert split_host_port("[::1]:5") == ("::1", 5)


def test_tls_options_validate_their_files(tmp_path) -> None:
    with pytest.raises(InvalidInput, match="both a certificate file and a key file"):
        ServerSecurity(cert_file=tmp_path / "c.pem").credentials()
    with pytest.raises(errors.NotFound, match="does not exist"):
        ServerSecurity(cert_file=tmp_path / "c.pem", key_file=tmp_path / "k.pem").credentials()
    with pytest.raises(InvalidInput, match="needs TLS"):
        ClientSecurity(cert_file=tmp_path / "c.pem", key_file=tmp_path / "k.pem").credentials()

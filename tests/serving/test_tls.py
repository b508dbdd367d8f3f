"""TLS and mutual TLS really work end to end (certificates made on the fly)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import grpc
import pytest

from coinfer.protos import inference_pb2 as pb
from coinfer.protos import inference_pb2_grpc as pb_grpc
from coinfer.serving.security import ClientSecurity, ServerSecurity, open_channel
from coinfer.serving.server import ServerOptions, ServiceBinding, start_server

x509 = pytest.importorskip("cryptography.x509")
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402


def _issue(tmp: Path, stem: str, common_name: str, issuer=None, ca: bool = False):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    signer_cert, signer_key = issuer if issuer else (None, key)
    now = dt.datetime.now(dt.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(signer_cert.subject if signer_cert else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
    cert = builder.sign(signer_key, hashes.SHA256())
    (tmp / f"{stem}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp / f"{stem}.key").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert, key


class _Live(pb_grpc.GRPCInferenceServiceServicer):
    def ServerLive(self, request, context):
        return pb.ServerLiveResponse(live=True)


def test_mutual_tls_accepts_a_signed_client_and_refuses_an_anonymous_one(tmp_path: Path) -> None:
    ca = _issue(tmp_path, "ca", "coinfer-test-ca", ca=True)
    _issue(tmp_path, "server", "localhost", issuer=ca)
    _issue(tmp_path, "client", "edge-1", issuer=ca)
    security = ServerSecurity(
        cert_file=tmp_path / "server.pem", key_file=tmp_path / "server.key", client_ca_file=tmp_path / "ca.pem"
    )
    binding = ServiceBinding("inference.GRPCInferenceService", pb_grpc.add_GRPCInferenceServiceServicer_to_server, _Live())
    running = start_server([binding], ServerOptions(listen="localhost:0", security=security, grace_s=0.1))
    target = f"localhost:{running.port}"
    try:
        good = ClientSecurity(ca_file=tmp_path / "ca.pem", cert_file=tmp_path / "client.pem", key_file=tmp_path / "client.key")
        with open_channel(target, good) as channel:
            assert pb_grpc.GRPCInferenceServiceStub(channel).ServerLive(pb.ServerLiveRequest(), timeout=5).live
        with open_channel(target, ClientSecurity(ca_file=tmp_path / "ca.pem")) as channel:
            with pytest.raises(grpc.RpcError) as info:
                pb_grpc.GRPCInferenceServiceStub(channel).ServerLive(pb.ServerLiveRequest(), timeout=5)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        running.stop()

"""Mutual TLS and a bearer token on every hop of the runtime, with certificates from `coinfer certs init`."""

from __future__ import annotations

import ssl
import stat
import urllib.request

import grpc
import pytest

from coinfer.cli import main
from coinfer.core.errors import FailedPrecondition
from coinfer.edge.daemon import EdgeConfig
from coinfer.edge.serve import start_edge
from coinfer.protos import inference_pb2 as pb
from coinfer.serving.security import ClientSecurity, ServerSecurity
from coinfer.serving.server import ServerOptions
from coinfer.serving.certs import init_certs
from coinfer.serving.client import InferenceClient
from coinfer.server.coordinator import CoordinatorConfig
from coinfer.server.serve import start_coordinator
from quantised import assert_float_close

DEADLINE_S = 20.0
TOKEN = "s3cret-token"


def test_certs_init_writes_a_ca_and_both_certificates(tmp_path, capsys) -> None:
    assert main(["certs", "init", str(tmp_path / "c"), "--host", "nano-1.local", "--host", "10.1.2.3"]) == 0
    assert "wrote a CA" in capsys.readouterr().out
    files = sorted(p.name for p in (tmp_path / "c").iterdir())
    assert files == ["ca.key", "ca.pem", "client.key", "client.pem", "server.key", "server.pem"]
    assert stat.S_IMODE((tmp_path / "c" / "server.key").stat().st_mode) == 0o600
    from cryptography import x509

    server = x509.load_pem_x509_certificate((tmp_path / "c" / "server.pem").read_bytes())
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"localhost", "nano-1.local"} <= set(names.get_values_for_type(x509.DNSName))
    assert "10.1.2.3" in {str(ip) for ip in names.get_values_for_type(x509.IPAddress)}
    # Refuses to overwrite by accident (exit status 2, the coinfer error on stderr).
    assert main(["certs", "init", str(tmp_path / "c")]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_every_hop_runs_over_mutual_tls_with_a_token(devit_bundle, split_bundle, digits_test, tmp_path, free_port) -> None:
    certs = init_certs(tmp_path / "certs")
    server_security = ServerSecurity(certs.server_cert, certs.server_key, client_ca_file=certs.ca_cert, token=TOKEN)
    # Daemons present their own certificate when they call each other.
    peer = ClientSecurity(ca_file=certs.ca_cert, cert_file=certs.server_cert, key_file=certs.server_key, token=TOKEN)
    options = ServerOptions(listen="localhost:0", grace_s=0.2, security=server_security)
    metrics_port = free_port()
    coordinator = start_coordinator(
        [devit_bundle.path, split_bundle.path], options, CoordinatorConfig(heartbeat_interval_s=0.1), edge_security=peer, metrics_port=metrics_port
    )
    edges = [
        # Told equally fast: what each edge measured on shared cores would decide where sub-models go.
        start_edge(EdgeConfig(name=f"tls-{i}", coordinator=coordinator.address, address="", cache_dir=tmp_path / f"cache-{i}", security=peer,
                              speed=1.0), options)
        for i in range(2)
    ]
    user = ClientSecurity(ca_file=certs.ca_cert, cert_file=certs.client_cert, key_file=certs.client_key, token=TOKEN)
    images = digits_test.x[:3]
    try:
        with InferenceClient(coordinator.address, user, timeout_s=DEADLINE_S) as client:
            client.wait_until_ready("digits-devit", timeout_s=60)
            import time

            deadline = time.monotonic() + 60
            while (reply := client.infer("digits-devit", {"image": images})).parameters["degraded"]:
                assert time.monotonic() < deadline
                time.sleep(0.1)
            # Two devices, two sub-models each: the fan-out crossed mutual TLS to both.
            assert sorted(set(reply.parameters["devices"].split(","))) == ["tls-0", "tls-1"]
            assert_float_close(reply.outputs["logits"], coordinator.coordinator.catalog.devit["digits-devit"].run_local(images), "across mutual TLS")
        with InferenceClient(edges[0].address, user, timeout_s=DEADLINE_S) as client:
            client.wait_until_ready("digits-split", timeout_s=60)
            assert client.infer("digits-split", {"image": images}).parameters["offloaded"] in (True, False)
        # No client certificate: the handshake fails. Right certificate, no token: UNAUTHENTICATED.
        for security, code in (
            (ClientSecurity(ca_file=certs.ca_cert, token=TOKEN), grpc.StatusCode.UNAVAILABLE),
            (ClientSecurity(ca_file=certs.ca_cert, cert_file=certs.client_cert, key_file=certs.client_key), grpc.StatusCode.UNAUTHENTICATED),
        ):
            for address in (coordinator.address, edges[1].address):
                with InferenceClient(address, security, timeout_s=5) as client:
                    with pytest.raises(grpc.RpcError) as info:
                        client.stub.ServerLive(pb.ServerLiveRequest(), timeout=5)
                    assert info.value.code() == code, address
        # The metrics endpoint speaks TLS too, and wants a client certificate.
        context = ssl.create_default_context(cafile=str(certs.ca_cert))
        context.load_cert_chain(str(certs.client_cert), str(certs.client_key))
        text = urllib.request.urlopen(f"https://localhost:{metrics_port}/metrics", context=context, timeout=10).read().decode()
        assert "coinfer_submodel_calls_total" in text
        with pytest.raises(Exception):
            urllib.request.urlopen(f"https://localhost:{metrics_port}/metrics", context=ssl.create_default_context(cafile=str(certs.ca_cert)), timeout=10).read()
    finally:
        for edge in edges:
            edge.stop()
        coordinator.stop()


def test_a_plaintext_daemon_on_a_public_address_refuses_to_start(split_bundle, tmp_path, capsys) -> None:
    with pytest.raises(FailedPrecondition, match="--insecure"):
        start_coordinator(split_bundle.path, ServerOptions(listen="0.0.0.0:0"))
    status = main(["edge", "--listen", "0.0.0.0:0", "--coordinator", "127.0.0.1:1", "--name", "x", "--cache-dir", str(tmp_path)])
    assert status == 2 and "refusing to listen in plaintext" in capsys.readouterr().err

"""Recovery after a coordinator restart: edges keep answering meanwhile and re-register by themselves.

The benchmark measures the same thing with real processes and longer outages (see
`coinfer.bench.reliability`); here the outage is short so the test stays quick.
"""

from __future__ import annotations

import socket
import time

import grpc
import pytest

from coinfer.serving.security import open_channel

from reliability_helpers import SPLIT_MODEL

DEADLINE_S = 20.0
REREGISTER_WITHIN_S = 30.0
"""Edges retry with a backoff of at most 5 s (EdgeConfig.retry_max_s) and come back within 1-2 s
here; the benchmark holds that time to its target, this test only that they come back by themselves."""


def test_edges_answer_alone_during_a_coordinator_outage_and_re_register_after_it(split_bundle, images, tmp_path) -> None:
    from coinfer.edge.daemon import EdgeConfig
    from coinfer.edge.serve import start_edge
    from coinfer.serving.server import ServerOptions
    from coinfer.serving.client import InferenceClient
    from coinfer.server.coordinator import CoordinatorConfig
    from coinfer.server.serve import start_coordinator

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    options = ServerOptions(listen=f"127.0.0.1:{port}", grace_s=0.1)
    config = CoordinatorConfig(heartbeat_interval_s=0.2)
    coordinator = start_coordinator(split_bundle.path, options, config)
    edges = [start_edge(EdgeConfig(name=f"rec-{i}", coordinator=coordinator.address, address="", cache_dir=tmp_path / f"c{i}"),
                        ServerOptions(listen="127.0.0.1:0", grace_s=0.1)) for i in range(2)]
    clients = [InferenceClient(e.address, timeout_s=DEADLINE_S) for e in edges]
    try:
        for client in clients:
            client.wait_until_ready(SPLIT_MODEL, timeout_s=60)
            assert client.infer(SPLIT_MODEL, {"image": images}).parameters["offloaded"] is True
        coordinator.stop(0)
        for client in clients:  # the coordinator is gone: each device answers alone, and says so
            reply = client.infer(SPLIT_MODEL, {"image": images})
            assert reply.parameters["fallback"] is True and reply.outputs["logits"].shape == (len(images), 10)
        time.sleep(1.0)
        coordinator = start_coordinator(split_bundle.path, options, config)
        started = time.monotonic()
        while {d.info.name for d in coordinator.coordinator.devices()} != {"rec-0", "rec-1"}:
            assert time.monotonic() - started < REREGISTER_WITHIN_S, "edges did not re-register"
            time.sleep(0.05)
        for client in clients:  # offloading again (the fallback hold is 1 s)
            deadline = time.monotonic() + 10
            while not client.infer(SPLIT_MODEL, {"image": images}).parameters.get("offloaded"):
                assert time.monotonic() < deadline, "the edge never offloaded to the new coordinator"
                time.sleep(0.1)
    finally:
        for client in clients:
            client.close()
        for edge in edges:
            edge.stop()
        coordinator.stop()


def test_channels_retry_a_lost_peer_within_a_second_or_two(monkeypatch) -> None:
    captured: list[dict] = []
    real = grpc.insecure_channel

    def capture(target, options=None, *args, **kwargs):
        captured.append(dict(options or ()))
        return real(target, options, *args, **kwargs)

    monkeypatch.setattr(grpc, "insecure_channel", capture)
    open_channel("127.0.0.1:1").close()
    assert captured and captured[0].get("grpc.max_reconnect_backoff_ms", 120_000) <= 2_000

"""Prometheus metrics of a daemon, served over HTTP on their own port.

Each daemon owns a `DaemonMetrics` with a private `CollectorRegistry` (so several daemons can
live in one process, as in tests) holding the front door's request counter and latency
histogram per model and device; each role registers its own metrics on the same registry.
`serve_metrics` exposes it on a separate port, with the daemon's TLS certificate when it has
one (and client certificates when the daemon requires them). Port 0 means no metrics endpoint.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from coinfer.core.errors import FailedPrecondition, InvalidInput
from coinfer.serving.oip_service import RequestObserver
from coinfer.serving.security import ServerSecurity
from coinfer.serving.server import is_loopback

log = logging.getLogger(__name__)

LATENCY_BUCKETS_S = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
"""Histogram buckets from half a millisecond (loopback hops) to ten seconds (a stalled device)."""


class DaemonMetrics:
    """The registry of one daemon and its front door's request metrics."""

    def __init__(self, role: str) -> None:
        self.role = role
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "coinfer_requests",
            "ModelInfer calls answered by this daemon's front door, by model, device and outcome (status code name)",
            ["role", "model", "device", "outcome"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "coinfer_request_latency_seconds",
            "Time from receiving a ModelInfer to answering it, by model and device",
            ["role", "model", "device"],
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )

    def observer(self, device: str) -> RequestObserver:
        """A front-door observer labelling every request with ``device`` (this daemon's device name)."""

        def observe(model: str, outcome: str, seconds: float) -> None:
            self.requests.labels(self.role, model, device, outcome).inc()
            self.latency.labels(self.role, model, device).observe(seconds)

        return observe

    def text(self) -> str:
        """The exposition text, as a scrape would see it."""
        return generate_latest(self.registry).decode()


@dataclass
class MetricsServer:
    """A running metrics endpoint; `stop` is idempotent."""

    server: Any
    thread: Any
    address: str

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


def serve_metrics(metrics: DaemonMetrics, host: str, port: int, security: ServerSecurity | None = None, allow_plaintext_remote: bool = False) -> MetricsServer | None:
    """Serve ``metrics`` on host:port over HTTP(S); None when ``port`` is 0 (disabled)."""
    from prometheus_client import start_http_server

    if port == 0:
        return None
    if not 0 < port <= 65535:
        raise InvalidInput(f"--metrics-port must be 0 (off) or a port number, got {port}")
    security = security or ServerSecurity()
    if not security.tls and not is_loopback(host) and not allow_plaintext_remote:
        raise FailedPrecondition(
            f"refusing to serve metrics in plaintext on non-loopback address {host!r}: give a TLS certificate or --insecure"
        )
    kwargs: dict[str, Any] = {}
    if security.tls:
        kwargs = {"certfile": str(security.cert_file), "keyfile": str(security.key_file)}
        if security.client_ca_file is not None:
            kwargs.update(client_cafile=str(security.client_ca_file), client_auth_required=True)
    try:
        server, thread = start_http_server(port, addr=host, registry=metrics.registry, **kwargs)
    except OSError as exc:
        raise FailedPrecondition(f"cannot serve metrics on {host}:{port}: {exc}") from exc
    address = f"{host}:{server.server_port}"
    log.info("metrics on %s://%s/metrics", "https" if security.tls else "http", address)
    return MetricsServer(server, thread, address)

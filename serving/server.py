"""Build, run and stop a daemon's gRPC server the same way for every role.

`start_server` adds the given services plus standard health checking (grpc.health.v1.Health)
and server reflection, installs the error-mapping (and, with a token, the auth) interceptor,
sets message size limits, and binds — loopback by default; plaintext on a non-loopback address
is refused unless asked for explicitly. `run_until_signal` blocks until SIGTERM/SIGINT, then
reports NOT_SERVING, runs the role's own shutdown and drains in-flight calls for a grace period.
"""

from __future__ import annotations

import ipaddress
import logging
import signal
import threading
from concurrent import futures
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, Callable, Sequence

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from coinfer.core.errors import FailedPrecondition, InvalidInput
from coinfer.serving.interceptors import ErrorInterceptor, TokenAuthInterceptor
from coinfer.serving.security import DEFAULT_MAX_MESSAGE_BYTES, ServerSecurity

log = logging.getLogger(__name__)

OVERALL = ""
"""Health service name that stands for the whole server."""


@dataclass(frozen=True)
class ServiceBinding:
    """One gRPC service to serve: its full name, the generated add-function and the servicer."""

    name: str
    add_to_server: Callable[[Any, grpc.Server], None]
    servicer: Any


@dataclass(frozen=True)
class ServerOptions:
    """How a daemon listens."""

    listen: str = "127.0.0.1:0"
    """host:port to bind; port 0 picks a free port (see RunningServer.port)."""
    max_workers: int = 8
    """Threads serving calls concurrently."""
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    """Largest message received or sent; bigger ones get RESOURCE_EXHAUSTED from gRPC."""
    security: ServerSecurity = field(default_factory=ServerSecurity)
    """TLS / mTLS / bearer token."""
    allow_plaintext_remote: bool = False
    """Allow a plaintext port on a non-loopback address (trusted networks only)."""
    grace_s: float = 5.0
    """Seconds in-flight calls get to finish on stop."""


def split_host_port(listen: str) -> tuple[str, int]:
    """Parse "host:port" (IPv6 as "[::1]:port"); raises InvalidInput on anything else."""
    host, sep, port = listen.rpartition(":")
    if not sep or not host:
        raise InvalidInput(f"listen address {listen!r} must be host:port, e.g. 127.0.0.1:8001")
    try:
        port_number = int(port)
    except ValueError as exc:
        raise InvalidInput(f"port {port!r} in {listen!r} is not a number") from exc
    if not 0 <= port_number <= 65535:
        raise InvalidInput(f"port {port_number} in {listen!r} is out of range")
    return host.strip("[]"), port_number


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class RunningServer:
    """A started gRPC server with its health status; stop it exactly once (stop is idempotent)."""

    def __init__(
        self,
        server: grpc.Server,
        health_servicer: health.HealthServicer,
        host: str,
        port: int,
        grace_s: float,
        services: Sequence[str],
        executor: futures.ThreadPoolExecutor | None = None,
    ) -> None:
        self.server = server
        self.executor = executor
        """The threads serving calls; stop() ends them."""
        self.health = health_servicer
        self.host = host
        self.port = port
        self.grace_s = grace_s
        self.services = tuple(services)
        self._stopped = threading.Event()
        self._stop_lock = threading.Lock()

    @property
    def address(self) -> str:
        """host:port clients dial (IPv6 hosts in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def set_serving(self, serving: bool, service: str = OVERALL) -> None:
        """Report ``service`` (default: the whole server) as SERVING or NOT_SERVING."""
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        self.health.set(service, status)

    def stop(self, grace_s: float | None = None) -> None:
        """Report NOT_SERVING, refuse new calls and give in-flight ones ``grace_s`` to finish."""
        with self._stop_lock:
            if self._stopped.is_set():
                return
            self._stopped.set()
        self.health.enter_graceful_shutdown()
        self.server.stop(self.grace_s if grace_s is None else grace_s).wait()
        if self.executor is not None:
            # gRPC leaves its thread pool to its owner: idle workers end now, busy ones after their call.
            self.executor.shutdown(wait=False, cancel_futures=True)
        log.info("server on %s stopped", self.address)

    @property
    def stopped(self) -> bool:
        return self._stopped.is_set()

    def wait(self, timeout_s: float | None = None) -> bool:
        """Block until the server stops; True when it did within ``timeout_s``."""
        # wait_for_termination returns True when it timed out.
        return not self.server.wait_for_termination(timeout_s)


class DaemonHandle:
    """What `coinfer.serve` and `coinfer.start_edge` return: a daemon running in this process.

    A subclass holds ``running`` (its gRPC server) and says in `shutdown_helpers` what else it
    started (heartbeats, channels, metrics), which stops before the server drains.
    """

    running: RunningServer

    @property
    def address(self) -> str:
        """The address the daemon is bound to (host:port)."""
        return self.running.address

    def shutdown_helpers(self) -> None:
        raise NotImplementedError

    def stop(self, grace_s: float | None = None) -> None:
        """Report not serving, stop the helpers, then drain the server for ``grace_s``."""
        self.running.set_serving(False)
        self.shutdown_helpers()
        self.running.stop(grace_s)
        self.after_drain()

    def after_drain(self) -> None:
        """What must outlive the drain (in-flight requests still use it) and close after it."""


def start_server(bindings: Sequence[ServiceBinding], options: ServerOptions, *, serving: bool = True) -> RunningServer:
    """Start a server with ``bindings`` + health + reflection; health starts as ``serving``."""
    host, port = split_host_port(options.listen)
    credentials = options.security.credentials()
    if credentials is None and not is_loopback(host) and not options.allow_plaintext_remote:
        raise FailedPrecondition(
            f"refusing to listen in plaintext on non-loopback address {host!r}: give a TLS certificate "
            "and key, or allow plaintext explicitly (--insecure) on a trusted network"
        )
    interceptors: list[grpc.ServerInterceptor] = []
    if options.security.token:
        interceptors.append(TokenAuthInterceptor(options.security.token))
    interceptors.append(ErrorInterceptor())
    executor = futures.ThreadPoolExecutor(max_workers=options.max_workers, thread_name_prefix="grpc-call")
    server = grpc.server(
        executor,
        interceptors=interceptors,
        options=[
            ("grpc.max_send_message_length", options.max_message_bytes),
            ("grpc.max_receive_message_length", options.max_message_bytes),
            # Two daemons must never share a port by accident.
            ("grpc.so_reuseport", 0),
        ],
    )
    for binding in bindings:
        binding.add_to_server(binding.servicer, server)
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = [b.name for b in bindings]
    reflection.enable_server_reflection([*names, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
    bind = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        bound = server.add_secure_port(bind, credentials) if credentials else server.add_insecure_port(bind)
    except RuntimeError as exc:  # grpc raises when the port cannot be bound
        raise FailedPrecondition(f"cannot listen on {bind}: {exc}") from exc
    if bound == 0:
        raise FailedPrecondition(f"cannot listen on {bind} (address in use or not available)")
    server.start()
    running = RunningServer(server, health_servicer, host, bound, options.grace_s, names, executor)
    for name in (OVERALL, *names):
        running.set_serving(serving, name)
    log.info("serving %s on %s (%s)", ", ".join(names), running.address, "TLS" if credentials else "plaintext")
    return running


def run_until_signal(running: RunningServer, on_stop: Callable[[], None] | None = None) -> int:
    """Serve until SIGTERM or SIGINT (or until the server stops), then shut down cleanly.

    Must be called from the main thread (Python delivers signals there). ``on_stop`` runs first
    (e.g. stop heartbeats), then the server drains. Returns the process exit status (0).
    """
    stop = threading.Event()

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s, stopping", signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        # Short waits so signals are handled promptly and an external stop() is noticed.
        while not stop.wait(0.2) and not running.stopped:
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    running.set_serving(False)
    if on_stop is not None:
        on_stop()
    running.stop()
    return 0

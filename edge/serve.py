"""Start the edge daemon: its front door first (OIP + the Edge service), then registration.

The front door answers at once (ServerLive true); health and ServerReady turn SERVING/true
when the assigned parts are loaded, which is what callers wait for.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

from coinfer.core.errors import InvalidInput
from coinfer.edge.calibration import DEFAULT_SECONDS
from coinfer.edge.daemon import EdgeConfig, EdgeDaemon
from coinfer.edge.metrics import EdgeMetrics
from coinfer.edge.servicer import EDGE_SERVICE_NAME, EdgeModels, EdgeServicer
from coinfer.protos import coinfer_v1_pb2_grpc as v1_grpc
from coinfer.protos import inference_pb2_grpc as pb_grpc
from coinfer.serving import oip_service
from coinfer.serving.metrics import MetricsServer, serve_metrics
from coinfer.serving.oip_service import InferenceServicer
from coinfer.serving.security import ClientSecurity
from coinfer.serving.server import DaemonHandle, RunningServer, ServerOptions, ServiceBinding, split_host_port, start_server


@dataclass
class EdgeServer(DaemonHandle):
    """A running edge daemon: its gRPC server, its logic and its metrics endpoint."""

    running: RunningServer
    daemon: EdgeDaemon
    metrics_server: MetricsServer | None = None

    def shutdown_helpers(self) -> None:
        """Stop heartbeats, the coordinator channel and the metrics endpoint."""
        self.daemon.stop()
        if self.metrics_server is not None:
            self.metrics_server.stop()


def start_edge(config: EdgeConfig, options: ServerOptions, metrics_port: int = 0) -> EdgeServer:
    """Bind the front door, then start registering; ``config.address`` defaults to the bound one."""
    holder: dict[str, RunningServer] = {}

    def on_ready(ready: bool) -> None:
        running = holder.get("running")
        if running is not None and not running.stopped:
            running.set_serving(ready)
            running.set_serving(ready, oip_service.SERVICE_NAME)

    # The servicer needs the daemon and the daemon needs the bound address: build the daemon
    # with a placeholder address, bind, then fill the address in before it registers.
    metrics = EdgeMetrics()
    daemon = EdgeDaemon(config, on_ready=on_ready, metrics=metrics)
    bindings = [
        ServiceBinding(
            oip_service.SERVICE_NAME,
            pb_grpc.add_GRPCInferenceServiceServicer_to_server,
            InferenceServicer(EdgeModels(daemon), metrics.observer(config.name)),
        ),
        ServiceBinding(EDGE_SERVICE_NAME, v1_grpc.add_EdgeServicer_to_server, EdgeServicer(daemon)),
    ]
    host, _ = split_host_port(options.listen)
    metrics_server = serve_metrics(metrics, host, metrics_port, options.security, options.allow_plaintext_remote)
    try:
        running = start_server(bindings, options, serving=False)
    except Exception:
        daemon.client.close()
        if metrics_server is not None:
            metrics_server.stop()
        raise
    holder["running"] = running
    running.set_serving(True, EDGE_SERVICE_NAME)
    if not config.address:
        daemon.config = replace(config, address=running.address)
    daemon.start()
    return EdgeServer(running, daemon, metrics_server)


def default_cache_dir(name: str) -> Path:
    """Where device ``name`` keeps its parts unless told: $XDG_CACHE_HOME (or ~/.cache)/coinfer/edge/NAME."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "coinfer" / "edge" / name


def serve_edge(
    coordinator: str,
    name: str,
    listen: str | ServerOptions = "127.0.0.1:0",
    *,
    advertise: str = "",
    cache_dir: str | Path | None = None,
    security: ClientSecurity | None = None,
    rpc_timeout_s: float = 10.0,
    distance_m: float = 0.0,
    speed: float | None = None,
    calibration_s: float = DEFAULT_SECONDS,
    metrics_port: int = 0,
) -> EdgeServer:
    """Start a device daemon in this process: it serves at once and registers with ``coordinator``.

    What ``coinfer edge`` runs, and ``coinfer.start_edge`` in the Python API (not
    ``coinfer.edge``: that name is this package's). ``listen`` is a host:port (port 0 picks a
    free one: read ``handle.address``) or whole `ServerOptions`; ``advertise`` is the address
    the coordinator should call (default the bound one); parts are kept in ``cache_dir``
    (default `default_cache_dir`); ``security`` is how to reach a TLS coordinator (and the
    bearer token). ``speed`` is the device's relative speed when it is known (None: measured by a
    reference workload of ``calibration_s`` seconds at start). The daemon turns ready once its
    parts are loaded. ``handle.stop()`` stops it.
    """
    if rpc_timeout_s <= 0:  # the messages name the command's flags
        raise InvalidInput(f"--rpc-timeout-s must be positive, got {rpc_timeout_s}")
    if distance_m < 0:
        raise InvalidInput(f"--distance-m must not be negative, got {distance_m}")
    if speed is not None:
        from coinfer.protos.v1 import DeviceSpeed, check_speed

        check_speed(DeviceSpeed(speed, source="configured"), "--speed")
    if not 0.05 <= calibration_s <= 60:
        raise InvalidInput(f"--calibration-s must be between 0.05 and 60, got {calibration_s}")
    config = EdgeConfig(
        name=name,
        coordinator=coordinator,
        address=advertise,
        cache_dir=Path(cache_dir) if cache_dir is not None else default_cache_dir(name),
        security=security or ClientSecurity(),
        rpc_timeout_s=rpc_timeout_s,
        distance_m=distance_m,
        speed=speed,
        calibration_s=calibration_s,
    )
    options = ServerOptions(listen=listen) if isinstance(listen, str) else listen
    return start_edge(config, options, metrics_port=metrics_port)

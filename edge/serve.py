"""Start the edge daemon: its front door first (OIP + the Edge service), then registration.

The front door answers at once (ServerLive true); health and ServerReady turn SERVING/true
when the assigned parts are loaded, which is what callers wait for.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from coinfer.edge.daemon import EdgeConfig, EdgeDaemon
from coinfer.edge.metrics import EdgeMetrics
from coinfer.edge.servicer import EDGE_SERVICE_NAME, EdgeModels, EdgeServicer
from coinfer.protos import coinfer_v1_pb2_grpc as v1_grpc
from coinfer.protos import inference_pb2_grpc as pb_grpc
from coinfer.serving import oip_service
from coinfer.serving.metrics import MetricsServer, serve_metrics
from coinfer.serving.oip_service import InferenceServicer
from coinfer.serving.server import RunningServer, ServerOptions, ServiceBinding, split_host_port, start_server


@dataclass
class EdgeServer:
    """A running edge daemon: its gRPC server, its logic and its metrics endpoint."""

    running: RunningServer
    daemon: EdgeDaemon
    metrics_server: MetricsServer | None = None

    @property
    def address(self) -> str:
        return self.running.address

    def shutdown_helpers(self) -> None:
        """Stop heartbeats, the coordinator channel and the metrics endpoint."""
        self.daemon.stop()
        if self.metrics_server is not None:
            self.metrics_server.stop()

    def stop(self, grace_s: float | None = None) -> None:
        self.running.set_serving(False)
        self.shutdown_helpers()
        self.running.stop(grace_s)


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

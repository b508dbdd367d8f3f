"""Start the edge daemon: its OIP front door first, then registration and part download.

The front door answers at once (ServerLive true); health and ServerReady turn SERVING/true
when the assigned parts are loaded, which is what callers wait for.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from coinfer.edge.daemon import EdgeConfig, EdgeDaemon
from coinfer.edge.servicer import EdgeModels
from coinfer.protos import inference_pb2_grpc as pb_grpc
from coinfer.protos import oip_service
from coinfer.protos.oip_service import InferenceServicer
from coinfer.protos.serving import RunningServer, ServerOptions, ServiceBinding, start_server


@dataclass
class EdgeServer:
    """A running edge daemon: its gRPC server and its logic."""

    running: RunningServer
    daemon: EdgeDaemon

    @property
    def address(self) -> str:
        return self.running.address

    def stop(self, grace_s: float | None = None) -> None:
        self.running.set_serving(False)
        self.daemon.stop()
        self.running.stop(grace_s)


def start_edge(config: EdgeConfig, options: ServerOptions) -> EdgeServer:
    """Bind the front door, then start registering; ``config.address`` defaults to the bound one."""
    holder: dict[str, RunningServer] = {}

    def on_ready(ready: bool) -> None:
        running = holder.get("running")
        if running is not None:
            running.set_serving(ready)
            running.set_serving(ready, oip_service.SERVICE_NAME)

    # The servicer needs the daemon and the daemon needs the bound address: build the daemon
    # with a placeholder address, bind, then fill the address in before it registers.
    daemon = EdgeDaemon(config, on_ready=on_ready)
    binding = ServiceBinding(
        oip_service.SERVICE_NAME, pb_grpc.add_GRPCInferenceServiceServicer_to_server, InferenceServicer(EdgeModels(daemon))
    )
    running = start_server([binding], options, serving=False)
    holder["running"] = running
    if not config.address:
        daemon.config = replace(config, address=running.address)
    daemon.start()
    return EdgeServer(running, daemon)

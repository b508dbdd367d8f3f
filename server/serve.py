"""Start the coordinator daemon: OIP front door + coinfer.v1.Coordinator + health + reflection
(+ the scheduler and a metrics endpoint when asked)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from coinfer.core.errors import InvalidInput
from coinfer.protos import coinfer_v1_pb2_grpc as v1_grpc
from coinfer.protos import inference_pb2_grpc as pb_grpc
from coinfer.serving import oip_service
from coinfer.serving.metrics import MetricsServer, serve_metrics
from coinfer.serving.oip_service import InferenceServicer
from coinfer.serving.security import ClientSecurity
from coinfer.serving.server import RunningServer, ServerOptions, ServiceBinding, split_host_port, start_server
from coinfer.server import servicer
from coinfer.server.catalog import CoordinatorModels, ModelCatalog
from coinfer.server.coordinator import Coordinator, CoordinatorConfig
from coinfer.server.devit_service import DeViTServeConfig
from coinfer.server.link_shaper import LinkShaper
from coinfer.server.metrics import CoordinatorMetrics
from coinfer.server.scheduler import Scheduler, SchedulerConfig


@dataclass
class CoordinatorServer:
    """A running coordinator: its gRPC server, its logic, and what runs beside them."""

    running: RunningServer
    coordinator: Coordinator
    scheduler: Scheduler | None = None
    metrics_server: MetricsServer | None = None

    @property
    def address(self) -> str:
        return self.running.address

    def shutdown_helpers(self) -> None:
        """Stop the scheduler, maintenance, edge channels and metrics (before the server drains)."""
        if self.scheduler is not None:
            self.scheduler.stop()
        self.coordinator.stop()
        if self.metrics_server is not None:
            self.metrics_server.stop()

    def stop(self, grace_s: float | None = None) -> None:
        self.running.set_serving(False)
        self.shutdown_helpers()
        self.running.stop(grace_s)
        self.coordinator.catalog.close()  # after the drain: in-flight DeViT requests still fan out


def start_coordinator(
    bundle_dirs: str | Path | Sequence[str | Path],
    options: ServerOptions,
    config: CoordinatorConfig | None = None,
    *,
    scheduler: SchedulerConfig | None = None,
    devit: DeViTServeConfig | None = None,
    edge_security: ClientSecurity | None = None,
    metrics_port: int = 0,
    link_shaper: LinkShaper | None = None,
) -> CoordinatorServer:
    """Load (and verify) the bundles, then serve them; returns once the port is bound.

    ``link_shaper`` receives the scheduler's decisions every slot (it needs ``scheduler``).
    """
    if link_shaper is not None and scheduler is None:
        raise InvalidInput("a link shaper follows the scheduler's powers: give a scheduler (a policy) too")
    dirs = [bundle_dirs] if isinstance(bundle_dirs, (str, Path)) else list(bundle_dirs)
    catalog = ModelCatalog.load(dirs, devit)
    metrics = CoordinatorMetrics()
    coordinator = Coordinator(catalog, config, edge_security=edge_security, metrics=metrics, max_message_bytes=options.max_message_bytes)
    sched = Scheduler(coordinator, scheduler, link_shaper) if scheduler is not None else None
    coordinator.check_timeouts()
    host, _ = split_host_port(options.listen)
    metrics_server = serve_metrics(metrics, host, metrics_port, options.security, options.allow_plaintext_remote)
    bindings = [
        ServiceBinding(
            oip_service.SERVICE_NAME,
            pb_grpc.add_GRPCInferenceServiceServicer_to_server,
            InferenceServicer(CoordinatorModels(catalog), metrics.observer("coordinator")),
        ),
        ServiceBinding(servicer.SERVICE_NAME, v1_grpc.add_CoordinatorServicer_to_server, servicer.CoordinatorServicer(coordinator)),
    ]
    try:
        running = start_server(bindings, options, serving=True)
    except Exception:
        if metrics_server is not None:
            metrics_server.stop()
        raise
    coordinator.start()
    if sched is not None:
        sched.start()
    return CoordinatorServer(running, coordinator, sched, metrics_server)

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
from coinfer.serving.server import DaemonHandle, RunningServer, ServerOptions, ServiceBinding, split_host_port, start_server
from coinfer.server import servicer
from coinfer.server.catalog import CoordinatorModels, ModelCatalog
from coinfer.server.coordinator import Coordinator, CoordinatorConfig
from coinfer.server.devit_service import DeViTServeConfig
from coinfer.server.link_shaper import LinkShaper
from coinfer.server.metrics import CoordinatorMetrics
from coinfer.server.scheduler import Scheduler, SchedulerConfig


@dataclass
class CoordinatorServer(DaemonHandle):
    """A running coordinator: its gRPC server, its logic, and what runs beside them."""

    running: RunningServer
    coordinator: Coordinator
    scheduler: Scheduler | None = None
    metrics_server: MetricsServer | None = None

    def shutdown_helpers(self) -> None:
        """Stop the scheduler, maintenance, edge channels and metrics (before the server drains)."""
        if self.scheduler is not None:
            self.scheduler.stop()
        self.coordinator.stop()
        if self.metrics_server is not None:
            self.metrics_server.stop()

    def after_drain(self) -> None:
        self.coordinator.catalog.close()  # in-flight DeViT requests still fan out during the drain


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


def serve_coordinator(
    bundles: str | Path | Sequence[str | Path],
    listen: str | ServerOptions = "127.0.0.1:0",
    *,
    policy: str | None = None,
    scenario: str | None = None,
    slot_ms: float | None = None,
    split_point: int | None = None,
    decision_log: str | Path | None = None,
    seed: int = 0,
    heartbeat_s: float = 2.0,
    device_timeout_s: float | None = None,
    devit_timeout_ms: float = 2000.0,
    min_devices: int = 0,
    device_fallback: bool = True,
    placement: str = "speed",
    edge_security: ClientSecurity | None = None,
    testbed: str | None = None,
    testbed_state_dir: str | Path | None = None,
    metrics_port: int = 0,
) -> CoordinatorServer:
    """Start a coordinator in this process serving ``bundles``; returns its handle once the port is bound.

    What ``coinfer serve`` runs, and ``coinfer.serve`` in the Python API. ``listen`` is a
    host:port (port 0 picks a free one: read ``handle.address``) or whole `ServerOptions`
    (TLS, bearer token, workers, message size). Every option means what the ``coinfer serve``
    flag of the same name says: ``policy`` (a policy file or a baseline name) turns the live
    scheduler on, with ``scenario``, ``slot_ms`` and ``decision_log``; without it every device
    runs ``split_point``. ``device_timeout_s`` defaults to max(10 s, 5 heartbeats);
    ``placement`` is how DeViT sub-models go to devices ("speed": by the devices' measured
    speeds; "count": one per device in order); ``edge_security`` is how the coordinator reaches TLS edge daemons; ``testbed`` shapes the
    links of that testbed from the scheduler's powers. ``handle.stop()`` stops everything it started.
    """
    # The messages name the command's flags; each option has the flag's name with underscores.
    for flag, value in (("--heartbeat-s", heartbeat_s), ("--devit-timeout-ms", devit_timeout_ms)):
        if value <= 0:
            raise InvalidInput(f"{flag} must be positive, got {value}")
    if (slot_ms or 0) < 0 or (device_timeout_s or 0) < 0 or min_devices < 0:
        raise InvalidInput("--slot-ms, --device-timeout-s and --min-devices must not be negative")
    if policy is None and (scenario or slot_ms or decision_log):
        raise InvalidInput("--scenario, --slot-ms and --decision-log need a --policy")
    if policy is None and testbed:
        raise InvalidInput("--testbed shapes links from the scheduler's powers: give a --policy")
    if testbed_state_dir is not None and not testbed:
        raise InvalidInput("--testbed-state-dir needs --testbed PREFIX")
    if policy is not None and split_point is not None:
        raise InvalidInput("--split-point fixes every device's point when no --policy decides; give one or the other")
    options = ServerOptions(listen=listen) if isinstance(listen, str) else listen
    config = CoordinatorConfig(
        heartbeat_interval_s=heartbeat_s,
        device_timeout_s=device_timeout_s or max(10.0, 5 * heartbeat_s),
        split_point=split_point,
        device_fallback=device_fallback,
        placement=placement,
    )
    scheduler = None
    if policy is not None:
        scheduler = SchedulerConfig(
            policy=policy,
            scenario=scenario,
            slot_s=slot_ms / 1e3 if slot_ms else None,
            decision_log=Path(decision_log) if decision_log is not None else None,
            seed=seed,
        )
    link_shaper = None
    if testbed:
        from coinfer.server.link_shaper import TestbedLinkShaper

        link_shaper = TestbedLinkShaper.attach(testbed, Path(testbed_state_dir) if testbed_state_dir is not None else None)
    return start_coordinator(
        bundles,
        options,
        config,
        scheduler=scheduler,
        devit=DeViTServeConfig(timeout_s=devit_timeout_ms / 1e3, min_devices=min_devices),
        edge_security=edge_security,
        metrics_port=metrics_port,
        link_shaper=link_shaper,
    )

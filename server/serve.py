"""Start the coordinator daemon: OIP front door + coinfer.v1.Coordinator + health + reflection."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from coinfer.core.bundle import load_bundle
from coinfer.protos import coinfer_v1_pb2_grpc as v1_grpc
from coinfer.protos import inference_pb2_grpc as pb_grpc
from coinfer.protos import oip_service
from coinfer.protos.oip_service import InferenceServicer
from coinfer.protos.serving import RunningServer, ServerOptions, ServiceBinding, start_server
from coinfer.server import servicer
from coinfer.server.coordinator import Coordinator, CoordinatorConfig, CoordinatorModels
from coinfer.server.deployment import SplitDeployment


@dataclass
class CoordinatorServer:
    """A running coordinator: its gRPC server and its service logic."""

    running: RunningServer
    coordinator: Coordinator

    @property
    def address(self) -> str:
        return self.running.address

    def stop(self, grace_s: float | None = None) -> None:
        self.running.stop(grace_s)


def start_coordinator(bundle_dir: str | Path, options: ServerOptions, config: CoordinatorConfig | None = None) -> CoordinatorServer:
    """Load (and verify) the split bundle, then serve it; returns once the port is bound."""
    deployment = SplitDeployment(load_bundle(bundle_dir))
    coordinator = Coordinator(deployment, config)
    bindings = [
        ServiceBinding(oip_service.SERVICE_NAME, pb_grpc.add_GRPCInferenceServiceServicer_to_server, InferenceServicer(CoordinatorModels(deployment))),
        ServiceBinding(servicer.SERVICE_NAME, v1_grpc.add_CoordinatorServicer_to_server, servicer.CoordinatorServicer(coordinator)),
    ]
    return CoordinatorServer(start_server(bindings, options, serving=True), coordinator)

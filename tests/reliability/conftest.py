"""Fixtures of the reliability tests: small untrained bundles and one in-process cluster per session.

The fuzz tests only ask how the daemons answer, never how well the models classify, so the
bundles are untrained (built in seconds) and the cluster (a coordinator serving a DeViT and a
multi-point split bundle, plus two edge daemons) is shared by every module that needs it.
Its servers take messages of at most 1 MiB, so an oversized message costs little to send.
"""

from __future__ import annotations

import numpy as np
import pytest

from coinfer.core.bundle import Bundle

from reliability_helpers import DEVIT_MODEL, MAX_MESSAGE_BYTES, SPLIT_MODEL, Cluster, wait_whole


@pytest.fixture(scope="session")
def split_bundle(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    from coinfer.bench.fixtures import SplitBundleConfig, build_split_bundle

    return build_split_bundle(tmp_path_factory.mktemp("rel-split") / "rel-split", SplitBundleConfig(model_name=SPLIT_MODEL))


@pytest.fixture(scope="session")
def devit_bundle(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    from coinfer.bench.fixtures import DeViTBundleConfig, build_devit_bundle

    return build_devit_bundle(tmp_path_factory.mktemp("rel-devit") / DEVIT_MODEL, DeViTBundleConfig(num_devices=2))


@pytest.fixture(scope="session")
def images() -> np.ndarray:
    """Four digits test images, uint8 (4, 1, 8, 8)."""
    from coinfer.core.data import load_dataset

    return load_dataset("digits", seed=0).test.x[:4]


@pytest.fixture(scope="session")
def cluster(split_bundle, devit_bundle, tmp_path_factory):
    from coinfer.edge.daemon import EdgeConfig
    from coinfer.edge.serve import start_edge
    from coinfer.serving.server import ServerOptions
    from coinfer.server.coordinator import CoordinatorConfig
    from coinfer.server.devit_service import DeViTServeConfig
    from coinfer.server.serve import start_coordinator

    options = ServerOptions(listen="127.0.0.1:0", grace_s=0.2, max_message_bytes=MAX_MESSAGE_BYTES, max_workers=16)
    coordinator = start_coordinator(
        [devit_bundle.path, split_bundle.path],
        options,
        CoordinatorConfig(heartbeat_interval_s=0.2, device_timeout_s=5.0),
        devit=DeViTServeConfig(timeout_s=10.0),
    )
    edges = []
    try:
        for i in range(2):
            config = EdgeConfig(name=f"rel-edge-{i}", coordinator=coordinator.address, address="", cache_dir=tmp_path_factory.mktemp(f"rel-edge-{i}"))
            edges.append(start_edge(config, options))
        for address in [coordinator.address, *(e.address for e in edges)]:
            wait_whole(address)
        yield Cluster(coordinator, edges)
    finally:
        for edge in edges:
            edge.stop()
        coordinator.stop()

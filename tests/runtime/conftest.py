"""Shared fixtures of the runtime tests: one small trained split bundle per session."""

from __future__ import annotations

import pytest

from coinfer.core.bundle import Bundle
from coinfer.skeleton import SkeletonConfig, build_skeleton_bundle
from suite_threads import suite_threads

# Small and quick: the tests compare the runtime with the same model run in-process, so
# accuracy only has to be good enough for logits to have clear winners.
TEST_SKELETON = SkeletonConfig(arch="vgg11", width_mult=0.25, epochs=3, threads=suite_threads(1))


@pytest.fixture(scope="session")
def skeleton_bundle(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    return build_skeleton_bundle(tmp_path_factory.mktemp("skeleton") / "bundle", TEST_SKELETON)


@pytest.fixture(scope="session")
def model_name(skeleton_bundle: Bundle) -> str:
    return str(skeleton_bundle.metadata["model_name"])


@pytest.fixture(scope="session")
def skeleton_halves(skeleton_bundle: Bundle):
    """The skeleton's head and tail read from the bundle, for tests/quantised.py's comparisons."""
    from quantised import split_halves

    return split_halves(skeleton_bundle)


@pytest.fixture(scope="session")
def digits_test():
    from coinfer.core.data import load_dataset

    return load_dataset("digits", seed=0).test


# Untrained bundles of the runtime's two model kinds: the tests compare the runtime with the
# same modules run in this process, so weights only need to be fixed, not good.


@pytest.fixture(scope="session")
def split_bundle(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    """A multi-point (coinfer.split/1) bundle: resnet18 x0.25 with a bottleneck at points 1..4."""
    from coinfer.bench.fixtures import SplitBundleConfig, build_split_bundle

    return build_split_bundle(tmp_path_factory.mktemp("split") / "split-bundle", SplitBundleConfig(model_name="digits-split"))


@pytest.fixture(scope="session")
def devit_bundle(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    """A DeViT bundle: 4 tiny sub-models and a fusion head."""
    from coinfer.bench.fixtures import DeViTBundleConfig, build_devit_bundle

    return build_devit_bundle(tmp_path_factory.mktemp("devit") / "digits-devit", DeViTBundleConfig(num_devices=4))


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def free_port():
    """f() -> a TCP port nobody listens on right now (metrics endpoints take a fixed port)."""
    return _free_port


@pytest.fixture(scope="session")
def split_catalog(split_bundle: Bundle):
    from coinfer.server.catalog import ModelCatalog

    return ModelCatalog([split_bundle])


@pytest.fixture
def make_coordinator():
    """make_coordinator(catalog, n, address=f(i), distance_m=f(i)) -> a Coordinator with n registered devices."""
    from coinfer.protos.v1 import DeviceInfo
    from coinfer.server.coordinator import Coordinator, CoordinatorConfig

    def make(catalog, n: int, address=lambda i: f"127.0.0.1:{1000 + i}", distance_m=lambda i: 10.0 * (i + 1)):
        coordinator = Coordinator(catalog, CoordinatorConfig(heartbeat_interval_s=1.0))
        for i in range(n):
            coordinator.register(DeviceInfo(f"dev-{i}", address(i), distance_m=distance_m(i)))
        return coordinator

    return make

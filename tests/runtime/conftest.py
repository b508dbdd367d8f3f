"""Shared fixtures of the runtime tests: one small trained split bundle per session."""

from __future__ import annotations

import pytest

from coinfer.core.bundle import Bundle
from coinfer.server.skeleton import SkeletonConfig, build_skeleton_bundle

# Small and quick: the tests compare the runtime with the same model run in-process, so
# accuracy only has to be good enough for logits to have clear winners.
TEST_SKELETON = SkeletonConfig(arch="vgg11", width_mult=0.25, epochs=3, threads=1)


@pytest.fixture(scope="session")
def skeleton_bundle(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    return build_skeleton_bundle(tmp_path_factory.mktemp("skeleton") / "bundle", TEST_SKELETON)


@pytest.fixture(scope="session")
def model_name(skeleton_bundle: Bundle) -> str:
    return str(skeleton_bundle.metadata["model_name"])


@pytest.fixture(scope="session")
def reference_logits(skeleton_bundle: Bundle):
    """f(images, quantised) -> logits of head + tail run in this process, with or without the link's codec."""
    import numpy as np
    import torch

    from coinfer.core.codec import decode, encode
    from coinfer.core.data import to_float

    head, tail = skeleton_bundle.load_module("head"), skeleton_bundle.load_module("tail")
    bits = int(skeleton_bundle.metadata["codec_bits"])

    def run(images: np.ndarray, quantised: bool) -> np.ndarray:
        with torch.inference_mode():
            feature = head(to_float(images)).numpy()
            if quantised:
                feature = decode(encode(feature, bits=bits))
            return tail(torch.from_numpy(np.ascontiguousarray(feature))).numpy()

    return run


@pytest.fixture(scope="session")
def digits_test():
    from coinfer.core.data import load_dataset

    return load_dataset("digits", seed=0).test


# Untrained bundles of the runtime's two model kinds: the tests compare the runtime with the
# same modules run in this process, so weights only need to be fixed, not good.


@pytest.fixture(scope="session")
def split_bundle(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    """A multi-point (coinfer.split/1) bundle: resnet18 x0.25 with a bottleneck at points 1..4."""
    from coinfer.server.runtime_bundles import SplitBundleConfig, build_split_bundle

    return build_split_bundle(tmp_path_factory.mktemp("split") / "split-bundle", SplitBundleConfig(model_name="digits-split"))


@pytest.fixture(scope="session")
def devit_bundle(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    """A DeViT bundle: 4 tiny sub-models and a fusion head."""
    from coinfer.server.runtime_bundles import DeViTBundleConfig, build_devit_bundle

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

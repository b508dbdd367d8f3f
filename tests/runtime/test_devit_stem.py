"""A DeViT bundle whose sub-models carry a convolutional stem (``coinfer teacher train --stem conv``)
is served like any other: the edges rebuild the stem, batch-norm statistics included, and the
fan-out gives the in-process ensemble's answer."""

from __future__ import annotations

import time

import numpy as np

from coinfer.bench.fixtures import DeViTBundleConfig, build_devit_bundle
from coinfer.edge.daemon import EdgeConfig
from coinfer.edge.serve import start_edge
from coinfer.serving.client import InferenceClient
from coinfer.serving.server import ServerOptions
from coinfer.server.coordinator import CoordinatorConfig
from coinfer.server.devit_service import DeViTServeConfig
from coinfer.server.serve import start_coordinator
from quantised import assert_float_close


def test_a_conv_stem_bundle_fans_out_to_the_in_process_answer(tmp_path, digits_test) -> None:
    bundle = build_devit_bundle(tmp_path / "stem-devit", DeViTBundleConfig(num_devices=2, patch_size=4, stem_channels=(8, 16), epochs=1))
    coordinator = start_coordinator(
        [bundle.path], ServerOptions(listen="127.0.0.1:0", grace_s=0.2),
        CoordinatorConfig(heartbeat_interval_s=0.1, device_timeout_s=1.5, suspect_s=0.5), devit=DeViTServeConfig(timeout_s=5.0),
    )
    edges = []
    try:
        for i in range(2):
            config = EdgeConfig(name=f"stem-{i}", coordinator=coordinator.address, address="", cache_dir=tmp_path / f"edge-{i}", speed=1.0)
            edges.append(start_edge(config, ServerOptions(listen="127.0.0.1:0", grace_s=0.2)))
        images = digits_test.x[:16]
        with InferenceClient(coordinator.address, timeout_s=20.0) as client:
            client.wait_until_ready("stem-devit", timeout_s=60.0)
            deadline = time.monotonic() + 60.0
            while True:
                reply = client.infer("stem-devit", {"image": images})
                if not reply.parameters["degraded"] and len(set(reply.parameters["devices"].split(","))) == 2:
                    break
                assert time.monotonic() < deadline, f"still degraded: {reply.parameters}"
                time.sleep(0.1)
        serving = coordinator.coordinator.catalog.devit["stem-devit"]
        loaded = [serving.bundle.load_module(p) for p in serving.submodel_parts]
        assert all(m.config.stem_channels == (8, 16) for m in loaded)
        assert all(m.patch_embed.stem[1].running_mean.abs().sum() > 0 for m in loaded)  # trained statistics travel
        assert_float_close(reply.outputs["logits"], serving.run_local(images), "the stem bundle's fan-out")
        assert np.isfinite(reply.outputs["logits"]).all()
    finally:
        for edge in edges:
            edge.stop()
        coordinator.stop()

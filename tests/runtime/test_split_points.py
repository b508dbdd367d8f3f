"""A multi-point split bundle through a coordinator and an edge daemon (in process).

Every split point must give what the same bundle computes in this process (head, the codec one
image at a time, tail); a new decision must apply from the next request without a download;
a device whose coordinator is gone must answer alone and say so.
"""

from __future__ import annotations

import numpy as np
import pytest

from coinfer.core.split_point import encode_message, load_split_plan
from coinfer.edge.daemon import EdgeConfig
from coinfer.edge.serve import start_edge
from coinfer.serving.server import ServerOptions
from coinfer.serving.client import InferenceClient
from coinfer.server.coordinator import CoordinatorConfig
from coinfer.server.registry import Decision
from coinfer.server.serve import start_coordinator
from quantised import assert_float_close, expected_logits, split_halves

DEADLINE_S = 20.0
OPTIONS = ServerOptions(listen="127.0.0.1:0", grace_s=0.2)


@pytest.fixture(scope="module")
def pair(split_bundle, tmp_path_factory):
    """(coordinator server, edge server, client of the edge)."""
    coordinator = start_coordinator(split_bundle.path, OPTIONS, CoordinatorConfig(heartbeat_interval_s=0.1))
    edge = start_edge(
        EdgeConfig(name="pt-1", coordinator=coordinator.address, address="", cache_dir=tmp_path_factory.mktemp("pt-cache"), fallback_hold_s=0.3),
        OPTIONS,
    )
    client = InferenceClient(edge.address, timeout_s=DEADLINE_S)
    try:
        client.wait_until_ready("digits-split", timeout_s=60)
        yield coordinator, edge, client
    finally:
        client.close()
        edge.stop()
        coordinator.stop()


def _decide(coordinator, edge, point: int, power_w: float = 0.2) -> int:
    """Set the edge's decision; returns the generation the edge must reach."""
    record = coordinator.coordinator.registry.get(edge.daemon.device_id)
    coordinator.coordinator.set_decisions({record.device_id: Decision(point, 1, power_w)})
    return coordinator.coordinator.registry.get(record.device_id).generation


def _wait_generation(edge, generation: int, timeout_s: float = 10.0) -> None:
    import time

    deadline = time.monotonic() + timeout_s
    while edge.daemon.assignment.generation < generation:
        assert time.monotonic() < deadline, "the edge never applied the new decision"
        time.sleep(0.02)


def test_every_split_point_answers_like_the_bundle_in_process(pair, split_bundle, digits_test) -> None:
    coordinator, edge, client = pair
    deployment = coordinator.coordinator.deployment
    plan = load_split_plan(split_bundle)
    images = digits_test.x[:3]
    downloads = sorted(p.name for p in (edge.daemon.store.cache.bundle_dir(split_bundle.name)).glob("*.safetensors"))
    for point in deployment.available_points:
        _wait_generation(edge, _decide(coordinator, edge, point))
        reply = client.infer("digits-split", {"image": images})
        p = reply.parameters
        assert p["split_point"] == point and p["sub_channel"] == 1 and p["power_w"] == pytest.approx(0.2)
        expected_logits(split_halves(split_bundle, point), images).check(reply.outputs["logits"], f"point {point}")
        if point == deployment.available_points[-1]:
            assert p["offloaded"] is False and p["payload_bytes"] == 0 and "tail_ms" not in p
            continue
        assert p["offloaded"] is True and p["compute_ms"] == pytest.approx(p["head_ms"] + p["encode_ms"] + p["tail_ms"])
        # One message per image, each exactly what the core's split point puts on the wire.
        with np.errstate(all="ignore"):
            latent = images if point == 0 else _device_half(split_bundle, point, images)
        expected = sum(len(encode_message(latent[i : i + 1], plan.point(point).codec_bits, plan.point(point).codec_compress)) for i in range(3))
        assert p["payload_bytes"] == expected
        assert p["uplink_energy_j"] == pytest.approx(0.2 * p["upload_ms"] / 1e3, rel=1e-6)
    # An empty batch has an empty answer, here as on the coordinator, and sends nothing.
    empty = client.infer("digits-split", {"image": images[:0]})
    assert empty.outputs["logits"].shape == (0, 10) and empty.parameters["payload_bytes"] == 0
    # Changing points downloaded nothing: every part was shipped with the first assignment.
    assert sorted(p.name for p in edge.daemon.store.cache.bundle_dir(split_bundle.name).glob("*.safetensors")) == downloads


def _device_half(bundle, point: int, images: np.ndarray) -> np.ndarray:
    import torch

    from coinfer.core.data import to_float

    head, encoder = (bundle.load_module(f"point{point}.{role}") for role in ("head", "encoder"))
    with torch.inference_mode():
        return encoder(head(to_float(images))).numpy()


def test_a_device_answers_alone_while_the_coordinator_is_away(split_bundle, digits_test, tmp_path) -> None:
    coordinator = start_coordinator(split_bundle.path, OPTIONS, CoordinatorConfig(heartbeat_interval_s=0.1, split_point=3))
    address = coordinator.address
    edge = start_edge(EdgeConfig(name="alone", coordinator=address, address="", cache_dir=tmp_path, rpc_timeout_s=2.0, fallback_hold_s=0.3), OPTIONS)
    images = digits_test.x[:2]
    try:
        with InferenceClient(edge.address, timeout_s=DEADLINE_S) as client:
            client.wait_until_ready("digits-split", timeout_s=60)
            local = coordinator.coordinator.deployment.run_local(images)
            assert client.infer("digits-split", {"image": images}).parameters["offloaded"] is True
            coordinator.stop()
            alone = client.infer("digits-split", {"image": images})
            assert alone.parameters["fallback"] is True and "UNAVAILABLE" in alone.parameters["fallback_reason"]
            assert_float_close(alone.outputs["logits"], local, "answered alone")
            # Within the hold the device does not try again (no second connection attempt to wait for).
            again = client.infer("digits-split", {"image": images})
            assert again.parameters["fallback"] is True
            coordinator = start_coordinator(split_bundle.path, ServerOptions(listen=address, grace_s=0.2), CoordinatorConfig(heartbeat_interval_s=0.1, split_point=3))
            import time

            deadline = time.monotonic() + 20
            while True:
                reply = client.infer("digits-split", {"image": images})
                if reply.parameters.get("offloaded"):
                    break
                assert time.monotonic() < deadline, "the device never went back to offloading"
                time.sleep(0.1)
            assert reply.parameters["split_point"] == 3
    finally:
        edge.stop()
        coordinator.stop()

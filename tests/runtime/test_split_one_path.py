"""One split-point implementation: the edge daemon, the coordinator and the profiler agree at every point.

All three run the core's halves (`coinfer.core.split_point`). Given the same images in one
process the codec sees the same features, so the comparison is exact: the edge daemon's offload
carries the coordinator's reference messages byte for byte and its answer is the reference's
logits; the profiler reports the sizes of the edge's own messages, image by image.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from coinfer.core.measure import torch_threads
from coinfer.core.split_point import load_samples
from coinfer.edge.inference import EdgeInference
from coinfer.edge.loaded import LoadedAssignment
from coinfer.edge.metrics import EdgeMetrics
from coinfer.edge.profiling import ProfileConfig, profile_bundle
from coinfer.edge.stats import EdgeStats
from coinfer.protos.v1 import assignment_from_proto, assignment_to_proto
from coinfer.serving.oip_service import InferCall


class _InProcessCoordinator:
    """The edge's coordinator client, answered in process by the coordinator's own deployment."""

    def __init__(self, deployment) -> None:
        self.deployment = deployment
        self.sent: list[list[bytes]] = []

    def offload(self, model_name, split_point, payloads, *, per_image, request_id, device_id, timeout_s):
        self.sent.append(list(payloads))
        return self.deployment.run_tail(model_name, split_point, payloads)


def _edge_messages(edge: EdgeInference, client: _InProcessCoordinator, loaded, images: np.ndarray):
    """(logits, response parameters, messages offloaded) of one request to the edge."""
    client.sent.clear()
    logits, params = edge.split(loaded, images, InferCall("one-path", {}))
    assert len(client.sent) <= 1
    return logits, params, client.sent[0] if client.sent else []


def test_edge_coordinator_and_profiler_send_the_same_bytes_at_every_point(split_catalog, make_coordinator, tmp_path) -> None:
    deployment = split_catalog.split
    bundle = deployment.bundle
    coordinator = make_coordinator(split_catalog, 1)
    # What the device receives: the assignment through the wire and back.
    wire = assignment_from_proto(assignment_to_proto(coordinator.assignment_for(coordinator.devices()[0])))
    modules = {(ref.bundle, ref.spec.name): bundle.load_module(ref.spec.name) for ref in wire.parts}
    client = _InProcessCoordinator(deployment)
    edge = EdgeInference(client, EdgeStats(), EdgeMetrics(), lambda: "dev-0", rpc_timeout_s=5.0)  # type: ignore[arg-type]
    images, _ = load_samples(bundle)
    profile = profile_bundle(bundle.path, ProfileConfig(repeats=1, warmup=0, energy_window_s=1e-3, progress=False,
                                                        powercap_root=tmp_path / "no-rapl"))
    assert [c.index for c in profile.points] == list(deployment.available_points)
    last = deployment.available_points[-1]
    with torch_threads(1):  # as the profiler runs (small calls are slow on a busy thread pool)
        for point, detail in zip(deployment.available_points, profile.extra["points"]):
            loaded = LoadedAssignment(dataclasses.replace(wire, split_point=point), modules)
            logits, params, sent = _edge_messages(edge, client, loaded, images)
            expected = deployment.points[point].device(images)  # the coordinator's device half
            assert sent == expected and len(expected) == (0 if point == last else len(images))  # one message per image
            assert params["payload_bytes"] == sum(map(len, expected)) and params["split_point"] == point
            np.testing.assert_array_equal(logits, deployment.reference(images, point))
            sizes = [sum(map(len, _edge_messages(edge, client, loaded, images[i : i + 1])[2])) for i in range(len(images))]
            assert (detail["payload_bytes_min"], detail["payload_bytes_max"]) == (min(sizes), max(sizes))
            assert detail["payload_bytes_mean"] == pytest.approx(np.mean(sizes))

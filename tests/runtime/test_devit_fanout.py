"""The DeViT fan-out against fake edges (real gRPC, in process): deadlines and the call pool.

A device that answers after the deadline is left out and the answer is degraded, in about the
deadline and not the slow device's time; calls that wait for a free thread of the fan-out pool
count that wait against their deadline instead of starting late with a fresh one.

Time bounds are 10x the 0.3 s deadline, and the slow device takes 20x that bound (it stops as
soon as its call is cancelled), so a loaded machine cannot blur the two.
"""

from __future__ import annotations

import threading
import time
from concurrent import futures

import grpc
import numpy as np
import pytest

from coinfer.core.codec import tensor_to_raw
from coinfer.core.errors import Unavailable
from coinfer.protos import coinfer_v1_pb2 as v1
from coinfer.protos import coinfer_v1_pb2_grpc as v1_grpc
from coinfer.serving.oip_service import InferCall
from coinfer.server.devit_service import DeViTServeConfig, DeViTServing, Holder


class _FakeEdge(v1_grpc.EdgeServicer):
    """Answers RunSubModel with zero features of the width its sub-model has, after ``delay_s``."""

    def __init__(self, width: int, delay_s: float) -> None:
        self.width, self.delay_s = width, delay_s
        self.started: list[float] = []

    def RunSubModel(self, request, context):  # noqa: N802 - gRPC method name
        self.started.append(time.monotonic())
        # Sleep in steps so a cancelled call (deadline passed) frees the server thread early.
        end = time.monotonic() + self.delay_s
        while time.monotonic() < end and context.is_active():
            time.sleep(0.005)
        batch = request.images.shape[0]
        datatype, shape, raw = tensor_to_raw(np.zeros((batch, self.width), dtype=np.float32))
        return v1.RunSubModelResponse(feature=v1.RawTensor(datatype=datatype, shape=shape, data=raw), compute_ms=1.0)


class _Router:
    def __init__(self, addresses: list[str]) -> None:
        self.addresses = addresses
        self.channels = {a: grpc.insecure_channel(a) for a in addresses}
        self.reports: list[tuple[str, bool]] = []
        self.lock = threading.Lock()

    def holders(self, model_name: str) -> dict[int, Holder]:
        return {i: Holder(f"id-{i}", f"edge-{i}", a) for i, a in enumerate(self.addresses)}

    def stub(self, address: str):
        return v1_grpc.EdgeStub(self.channels[address])

    def report(self, holder: Holder, model_name: str, ok: bool, unreachable: bool, seconds: float) -> None:
        with self.lock:
            self.reports.append((holder.device_name, ok))


DEADLINE_S = 0.3
WITHIN_DEADLINE_S = 10 * DEADLINE_S
"""An answer "at the deadline" comes within this: 10x, for a loaded machine."""
SLOW_S = 20 * WITHIN_DEADLINE_S


@pytest.fixture()
def fake_edges(devit_bundle, request):
    """Four fake edges for the bundle's sub-models; the one at index ``request.param`` answers after SLOW_S."""
    slow = request.param
    widths = DeViTServing(devit_bundle).feature_dims
    edges, servers, addresses = [], [], []
    for i, width in enumerate(widths):
        edge = _FakeEdge(width, SLOW_S if i == slow else 0.0)
        server = grpc.server(futures.ThreadPoolExecutor(8))
        v1_grpc.add_EdgeServicer_to_server(edge, server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        edges.append(edge)
        servers.append(server)
        addresses.append(f"127.0.0.1:{port}")
    yield edges, _Router(addresses)
    for server in servers:
        server.stop(0)


def _image(bundle) -> np.ndarray:
    _, channels, height, width = bundle.part(DeViTServing(bundle).submodel_parts[0]).inputs[0].shape
    return np.zeros((1, channels, height, width), dtype=np.uint8)


@pytest.mark.parametrize("fake_edges", [3], indirect=True)
def test_a_device_past_the_deadline_is_left_out_at_the_deadline(devit_bundle, fake_edges) -> None:
    edges, router = fake_edges
    serving = DeViTServing(devit_bundle, DeViTServeConfig(timeout_s=DEADLINE_S, margin_s=0.0), router)
    started = time.monotonic()
    result = serving.infer({"image": _image(devit_bundle)}, InferCall("r1", {}))
    elapsed = time.monotonic() - started
    assert result.parameters["degraded"] is True
    assert result.parameters["missing"] == "3"
    assert "DEADLINE_EXCEEDED" in result.parameters["missing_reason"]
    assert result.parameters["devices"] == "edge-0,edge-1,edge-2"
    # Not before the deadline (the slow device was waited for), and nowhere near its answer.
    assert 0.25 <= elapsed < WITHIN_DEADLINE_S, f"the fan-out took {elapsed:.2f} s for a {DEADLINE_S} s deadline"
    assert len(edges[3].started) == 1, "the slow device was never asked"
    assert ("edge-3", False) in router.reports and ("edge-0", True) in router.reports


@pytest.mark.parametrize("fake_edges", [0], indirect=True)
def test_calls_queued_for_a_pool_thread_keep_their_deadline(devit_bundle, fake_edges) -> None:
    """One pool thread, the slow device first: the fast calls wait for the thread until the
    deadline has passed, so they are not made (a fresh timeout at their start would let them
    answer late) and the request is refused with the reason."""
    edges, router = fake_edges
    serving = DeViTServing(devit_bundle, DeViTServeConfig(timeout_s=DEADLINE_S, margin_s=0.0, fanout_threads=1), router)
    started = time.monotonic()
    with pytest.raises(Unavailable, match="waited for a fan-out thread") as caught:
        serving.infer({"image": _image(devit_bundle)}, InferCall("r2", {}))
    elapsed = time.monotonic() - started
    assert "0 of 4 sub-model features arrived" in str(caught.value)
    assert all(not edge.started for edge in edges[1:]), "a call was made after its deadline"
    assert elapsed < WITHIN_DEADLINE_S, f"refused after {elapsed:.2f} s for a {DEADLINE_S} s deadline"


class _PartialRouter(_Router):
    """Sub-model 1's device is to be skipped, sub-model 2 has no holder."""

    def holders(self, model_name: str) -> dict[int, Holder]:
        held = super().holders(model_name)
        del held[2]
        held[1] = Holder("id-1", "edge-1", self.addresses[1], skip_reason="unreachable a moment ago")
        return held


@pytest.mark.parametrize("fake_edges", [-1], indirect=True)
def test_the_fan_out_says_why_each_missing_feature_is_missing_and_the_fusion_answers_with_the_rest(devit_bundle, fake_edges) -> None:
    edges, router = fake_edges
    serving = DeViTServing(devit_bundle, DeViTServeConfig(timeout_s=5.0, min_devices=2), _PartialRouter(router.addresses))
    images = np.repeat(_image(devit_bundle), 3, axis=0)
    fan_out = serving.fan_out(images, InferCall("r3", {}))
    assert sorted(fan_out.arrived) == [0, 3] and [a.device_name for a in fan_out.arrived.values()] == ["edge-0", "edge-3"]
    assert all(a.feature.shape == (3, serving.feature_dims[i]) for i, a in fan_out.arrived.items())
    assert fan_out.missing == {1: "edge-1: unreachable a moment ago", 2: "no live device has it loaded"}
    assert not edges[1].started and not edges[2].started
    result = serving.fuse_and_respond(fan_out)
    p = result.parameters
    assert (p["degraded"], p["devices"], p["submodels"], p["missing"]) == (True, "edge-0,edge-3", "0,3", "1,2")
    assert p["missing_reason"] == "sub-model 1: edge-1: unreachable a moment ago; sub-model 2: no live device has it loaded"
    assert result.outputs["logits"].shape == (3, 10)
    with pytest.raises(Unavailable, match=r"2 of 4 sub-model features arrived .* 3 needed \(sub-model 1: edge-1"):
        DeViTServing(devit_bundle, DeViTServeConfig(min_devices=3)).fuse_and_respond(fan_out)

"""The runtime bench's overhead arithmetic, on a fake client with a fake clock.

The bench's figures are what the README reports, so how it splits a request's time (warm-up left
out, client hop, time inside the daemons, the answering devices) is checked here without daemons.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from coinfer.bench import runtime as runtime_bench


class FakeClock:
    def __init__(self) -> None:
        self.now_s = 0.0

    def perf_counter(self) -> float:
        return self.now_s


class FakeClient:
    """Answers after ``elapsed_ms`` on the fake clock, with the daemons' reported parameters."""

    def __init__(self, clock: FakeClock, replies: list[tuple[float, dict]]) -> None:
        self.clock, self.replies, self.calls = clock, replies, 0

    def infer(self, model: str, inputs: dict):
        elapsed_ms, parameters = self.replies[self.calls]
        self.calls += 1
        self.clock.now_s += elapsed_ms / 1e3
        return SimpleNamespace(parameters=parameters)


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(runtime_bench, "time", SimpleNamespace(perf_counter=fake.perf_counter))
    return fake


def test_overhead_leaves_out_warm_up_and_splits_the_hops(clock):
    warm_up = [(500.0, {"compute_ms": 1.0, "server_ms": 2.0})] * 10  # slow first calls must not count
    measured = [
        (5.0, {"compute_ms": 1.0, "server_ms": 4.0, "devices": "edge-0,edge-1", "degraded": False}),
        (7.0, {"compute_ms": 2.0, "server_ms": 5.0, "devices": "edge-0,edge-1", "degraded": True}),
        (9.0, {"compute_ms": 3.0, "server_ms": 6.5, "devices": "edge-0,edge-0", "degraded": False}),
    ]
    client = FakeClient(clock, warm_up + measured)
    result = runtime_bench._overhead(client, "m", np.zeros((1, 8, 8), dtype=np.float32), count=3)

    assert client.calls == 13
    assert result["requests"] == 3
    assert result["e2e_ms"]["p50"] == pytest.approx(7.0)
    assert result["overhead_ms"]["p50"] == pytest.approx(5.0)  # e2e - compute: 4, 5, 6
    assert result["client_hop_ms"]["mean"] == pytest.approx((1.0 + 2.0 + 2.5) / 3)  # e2e - server
    assert result["inside_daemons_besides_compute_ms"]["mean"] == pytest.approx((3.0 + 3.0 + 3.5) / 3)
    assert result["devices_answering"] == {"edge-0,edge-1": 2, "edge-0,edge-0": 1}
    assert result["degraded"] == 1
    assert result["met"] is False  # 5 ms against the 2 ms target


def test_overhead_subtracts_summed_compute_and_meets_the_target_when_small(clock):
    reply = {"compute_ms": 1.0, "server_ms": 1.5, "submodel_compute_total_ms": 2.0, "fusion_ms": 0.25}
    client = FakeClient(clock, [(2.5, reply)] * 14)
    result = runtime_bench._overhead(client, "m", np.zeros((2, 8, 8), dtype=np.float32), count=4)

    assert result["overhead_ms"]["p50"] == pytest.approx(1.5)
    assert result["overhead_if_compute_serialised_ms"]["p50"] == pytest.approx(0.25)  # 2.5 - 2.0 - 0.25
    assert "devices_answering" not in result
    assert result["met"] is True

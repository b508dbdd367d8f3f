"""The edge daemon's Prometheus metrics: compute, offloads, fallbacks, sub-model calls, its decision, its speed.

The front door's per-model request counter and latency histogram come from `protos.metrics`
(labelled with this device's name).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from coinfer.serving.metrics import LATENCY_BUCKETS_S, DaemonMetrics


class EdgeMetrics(DaemonMetrics):
    """Everything an edge daemon exports."""

    def __init__(self) -> None:
        super().__init__("edge")
        r = self.registry
        self.compute = Histogram(
            "coinfer_edge_compute_seconds", "Time this device computed per request, by model and kind (head, local, submodel, fallback)",
            ["model", "kind"], buckets=LATENCY_BUCKETS_S, registry=r,
        )
        self.offload = Histogram(
            "coinfer_edge_offload_seconds", "Round trip of Offload calls to the coordinator, tail included", ["model"],
            buckets=LATENCY_BUCKETS_S, registry=r,
        )
        self.uplink_bytes = Counter("coinfer_edge_uplink_bytes", "Payload bytes offloaded to the coordinator", ["model"], registry=r)
        self.uplink_energy = Counter("coinfer_edge_uplink_energy_joules", "Transmit power x upload time of offloads", ["model"], registry=r)
        self.fallbacks = Counter(
            "coinfer_edge_fallbacks", "Requests answered on the device alone because the coordinator could not be reached", ["model"], registry=r
        )
        self.submodel_calls = Counter(
            "coinfer_edge_submodel_calls", "DeViT sub-model calls served, by model and outcome", ["model", "outcome"], registry=r
        )
        self.split_point = Gauge("coinfer_edge_split_point", "Split point this device runs", registry=r)
        self.sub_channel = Gauge("coinfer_edge_sub_channel", "Uplink sub-channel this device uses", registry=r)
        self.power_w = Gauge("coinfer_edge_power_watts", "Uplink transmit power this device uses", registry=r)
        self.generation = Gauge("coinfer_edge_assignment_generation", "Generation of the assignment this device runs", registry=r)
        self.relative_speed = Gauge(
            "coinfer_edge_relative_speed", "Speed this device reports, relative to the reference workload (measured or configured)", registry=r
        )
        self.calibrations = Counter("coinfer_edge_calibrations", "Times this device measured its speed", registry=r)
        self.submodel_estimate = Gauge(
            "coinfer_edge_submodel_compute_estimate_seconds", "Moving estimate of each held DeViT sub-model's compute time per call",
            ["model", "index"], registry=r,
        )

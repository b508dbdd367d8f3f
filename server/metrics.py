"""The coordinator's Prometheus metrics: front door, offloads and sub-model calls per device, scheduler,
device speeds and the placement of DeViT sub-models.

Names follow Prometheus conventions (`_total` counters, `_seconds` histograms, base units). The
front door's per-model request counter and latency histogram come from `protos.metrics`.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from coinfer.serving.metrics import LATENCY_BUCKETS_S, DaemonMetrics


class CoordinatorMetrics(DaemonMetrics):
    """Everything the coordinator exports."""

    def __init__(self) -> None:
        super().__init__("coordinator")
        r = self.registry
        self.offloads = Counter(
            "coinfer_offloads", "Offloaded split-model tails run here, by model, device and outcome", ["model", "device", "outcome"], registry=r
        )
        self.offload_latency = Histogram(
            "coinfer_offload_latency_seconds", "Decode + tail time of offloads, by model and device", ["model", "device"],
            buckets=LATENCY_BUCKETS_S, registry=r,
        )
        self.submodel_calls = Counter(
            "coinfer_submodel_calls", "DeViT sub-model calls to devices, by model, device and outcome", ["model", "device", "outcome"], registry=r
        )
        self.submodel_latency = Histogram(
            "coinfer_submodel_call_latency_seconds", "Round trip of DeViT sub-model calls, by model and device", ["model", "device"],
            buckets=LATENCY_BUCKETS_S, registry=r,
        )
        self.degraded = Counter(
            "coinfer_devit_degraded_responses", "DeViT answers fused without every sub-model", ["model"], registry=r
        )
        self.devices_live = Gauge("coinfer_devices_live", "Devices heard from within the timeout", registry=r)
        self.split_point = Gauge("coinfer_device_split_point", "Split point assigned to each device", ["device"], registry=r)
        self.sub_channel = Gauge("coinfer_device_sub_channel", "Uplink sub-channel assigned to each device", ["device"], registry=r)
        self.power_w = Gauge("coinfer_device_power_watts", "Uplink transmit power assigned to each device", ["device"], registry=r)
        self.device_queue = Gauge("coinfer_device_queue_length", "Requests on each device at its last heartbeat", ["device"], registry=r)
        self.device_rtt = Gauge("coinfer_device_rtt_seconds", "Heartbeat round trip each device measured", ["device"], registry=r)
        self.device_uplink = Gauge("coinfer_device_uplink_bytes_per_second", "Uplink throughput each device measured", ["device"], registry=r)
        self.device_speed = Gauge(
            "coinfer_device_relative_speed", "Speed each device reported, relative to the reference workload", ["device"], registry=r
        )
        self.device_effective_speed = Gauge(
            "coinfer_device_effective_speed", "Speed placement uses: the reported one refined by real requests' compute time",
            ["device"], registry=r,
        )
        self.device_expected_compute = Gauge(
            "coinfer_device_expected_compute_seconds", "Expected compute time per request of the sub-models each device holds",
            ["device"], registry=r,
        )
        self.critical_path = Gauge(
            "coinfer_devit_expected_critical_path_seconds", "Expected critical path of each DeViT model as placed", ["model"], registry=r
        )
        self.optimal_critical_path = Gauge(
            "coinfer_devit_optimal_critical_path_seconds", "Smallest critical path any placement on the live devices reaches",
            ["model"], registry=r,
        )
        self.fleet_mismatch = Gauge(
            "coinfer_devit_fleet_mismatch", "1 when the live fleet no longer matches the device speeds the bundle was sized for",
            ["model"], registry=r,
        )
        self.placement_moves = Counter(
            "coinfer_devit_placement_moves", "Sub-models placed on a device that did not hold them", ["model"], registry=r
        )
        self.slots = Counter("coinfer_scheduler_slots", "Scheduler decision slots run", ["policy"], registry=r)
        self.decision_changes = Counter(
            "coinfer_scheduler_decision_changes", "Device decisions the scheduler changed", ["policy", "device"], registry=r
        )
        self.policy_latency = Histogram(
            "coinfer_scheduler_policy_seconds", "Time to build the observation and run the policy once", ["policy"],
            buckets=LATENCY_BUCKETS_S, registry=r,
        )

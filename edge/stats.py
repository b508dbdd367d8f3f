"""What an edge daemon measures about itself for its heartbeats: load, link, energy, compute.

Counters of requests in each stage (the scheduler's queue and in-flight work), the uplink
throughput seen on offloads (payload bytes over upload time, where upload time is the Offload
round trip less the coordinator's own tail time; an exponential average), the last heartbeat's
round trip, and the uplink energy (transmit power x upload time; on a wired or loopback link
the power does not change the link, it only enters this account). psutil supplies CPU,
memory and temperature.

Each DeViT sub-model's compute time is kept as an exponential moving average per call, the
moving estimate the coordinator refines the device's speed with. A device that holds several
sub-models of one model runs them side by side for every request, so each call's time depends
on what else it holds: the estimates of a model start again whenever that set changes.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator

from coinfer.protos.v1 import DeviceSpeed, LoadReport, SubModelTiming

THROUGHPUT_SMOOTHING = 0.2
"""Weight of the newest offload in the throughput average."""
COMPUTE_SMOOTHING = 0.1
"""Weight of the newest call in a sub-model's compute-time average (about the last 10 calls)."""


class _Timing:
    """One sub-model's moving estimate."""

    __slots__ = ("held_with", "compute_ms", "images_per_call", "calls")

    def __init__(self, held_with: tuple[int, ...]) -> None:
        self.held_with = held_with
        self.compute_ms = 0.0
        self.images_per_call = 0.0
        self.calls = 0

    def add(self, compute_ms: float, images: int) -> None:
        a = 1.0 if self.calls == 0 else COMPUTE_SMOOTHING
        self.compute_ms += a * (compute_ms - self.compute_ms)
        self.images_per_call += a * (images - self.images_per_call)
        self.calls += 1


class EdgeStats:
    """Thread-safe counters of one daemon."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.in_requests = 0
        self.in_compute = 0
        self.in_offload = 0
        self.requests_total = 0
        self.uplink_energy_j = 0.0
        self.uplink_bytes_per_s = 0.0
        self.rtt_ms = 0.0
        self.speed: DeviceSpeed | None = None
        self._timings: dict[tuple[str, int], _Timing] = {}

    @contextmanager
    def _stage(self, name: str) -> Iterator[None]:
        with self._lock:
            setattr(self, name, getattr(self, name) + 1)
        try:
            yield
        finally:
            with self._lock:
                setattr(self, name, getattr(self, name) - 1)

    @contextmanager
    def request(self) -> Iterator[None]:
        """One request in the daemon; counted as completed when it leaves without an error."""
        with self._stage("in_requests"):
            yield
        with self._lock:
            self.requests_total += 1

    def computing(self):
        return self._stage("in_compute")

    def offloading(self):
        return self._stage("in_offload")

    def uplink(self, payload_bytes: int, upload_s: float, power_w: float) -> float:
        """Account one upload; returns its energy in joules."""
        energy_j = power_w * max(upload_s, 0.0)
        with self._lock:
            self.uplink_energy_j += energy_j
            if upload_s > 0 and payload_bytes > 0:
                rate = payload_bytes / upload_s
                a = THROUGHPUT_SMOOTHING
                self.uplink_bytes_per_s = rate if self.uplink_bytes_per_s == 0 else (1 - a) * self.uplink_bytes_per_s + a * rate
        return energy_j

    def submodel_computed(self, model_name: str, index: int, held_with: tuple[int, ...], compute_ms: float, images: int) -> float:
        """Account one sub-model call; ``held_with`` lists the indices of the model this device
        holds now. Returns the new moving estimate in milliseconds."""
        key = (model_name, index)
        with self._lock:
            timing = self._timings.get(key)
            if timing is None or timing.held_with != held_with:
                timing = self._timings[key] = _Timing(held_with)
            timing.add(compute_ms, images)
            return timing.compute_ms

    def forget_submodels(self, keep: set[tuple[str, int]]) -> None:
        """Drop the estimates of sub-models the device no longer holds."""
        with self._lock:
            for key in [k for k in self._timings if k not in keep]:
                del self._timings[key]

    def submodel_timings(self) -> tuple[SubModelTiming, ...]:
        with self._lock:
            return tuple(
                SubModelTiming(model, index, t.compute_ms, t.calls, t.images_per_call)
                for (model, index), t in sorted(self._timings.items())
            )

    def report(self, generation: int, parts_held: tuple[str, ...]) -> LoadReport:
        import psutil

        temperature = None
        try:
            sensors = psutil.sensors_temperatures() if hasattr(psutil, "sensors_temperatures") else {}
            readings = [t.current for entries in sensors.values() for t in entries if t.current]
            temperature = max(readings) if readings else None
        except (OSError, RuntimeError):  # no sensor access on this machine
            temperature = None
        timings = self.submodel_timings()
        with self._lock:
            return LoadReport(
                cpu_percent=float(psutil.cpu_percent(interval=None)),
                memory_percent=float(psutil.virtual_memory().percent),
                temperature_c=temperature,
                queue_length=self.in_requests,
                assignment_generation=generation,
                parts_held=parts_held,
                rtt_ms=self.rtt_ms,
                uplink_bytes_per_s=self.uplink_bytes_per_s,
                in_compute=self.in_compute,
                in_offload=self.in_offload,
                requests_total=self.requests_total,
                uplink_energy_j=self.uplink_energy_j,
                speed=self.speed,
                submodel_timings=timings,
            )

"""What an edge daemon measures about itself for its heartbeats: load, link, energy.

Counters of requests in each stage (the scheduler's queue and in-flight work), the uplink
throughput seen on offloads (payload bytes over upload time, where upload time is the Offload
round trip less the coordinator's own tail time; an exponential average), the last heartbeat's
round trip, and the uplink energy (transmit power x upload time; on a wired or loopback link
the power does not change the link, it only enters this account). psutil supplies CPU,
memory and temperature.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator

from coinfer.protos.v1 import LoadReport

THROUGHPUT_SMOOTHING = 0.2
"""Weight of the newest offload in the throughput average."""


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

    def report(self, generation: int, parts_held: tuple[str, ...]) -> LoadReport:
        import psutil

        temperature = None
        try:
            sensors = psutil.sensors_temperatures() if hasattr(psutil, "sensors_temperatures") else {}
            readings = [t.current for entries in sensors.values() for t in entries if t.current]
            temperature = max(readings) if readings else None
        except (OSError, RuntimeError):  # no sensor access on this machine
            temperature = None
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
            )

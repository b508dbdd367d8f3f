"""The device daemon's logic: register, hold the assigned parts, run the head, offload the tail.

A control thread registers with the coordinator (retrying with backoff until it answers),
downloads and loads the parts of the assignment, then heartbeats; a new assignment generation
is loaded beside the old one and swapped in atomically, and a coordinator that forgot the
device (NOT_FOUND, e.g. after a restart) is registered with again. Inference requests run on
the gRPC threads: head (+ encoder) here, the feature quantised and encoded by the core codec,
the tail on the coordinator under a deadline.
"""

from __future__ import annotations

import logging
import os
import platform
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from coinfer.core.codec import encode, to_bytes
from coinfer.core.errors import CoinferError, FailedPrecondition, InvalidInput, NotFound, Unavailable
from coinfer.edge.coordinator_client import CoordinatorClient
from coinfer.edge.part_cache import PartCache
from coinfer.protos.security import ClientSecurity
from coinfer.protos.v1 import Assignment, DeviceInfo, LoadReport

log = logging.getLogger(__name__)

HEAD_ROLES = ("head", "encoder")
"""Roles of the parts a device runs, in execution order."""


@dataclass
class EdgeConfig:
    """How an edge daemon reaches its coordinator and where it keeps parts."""

    name: str
    """Device name, unique among the coordinator's devices."""
    coordinator: str
    """host:port of the coordinator."""
    address: str
    """host:port of this daemon's OIP front door, as told to the coordinator."""
    cache_dir: Path
    """Local part store."""
    security: ClientSecurity = field(default_factory=ClientSecurity)
    """How to reach the coordinator (TLS, token)."""
    rpc_timeout_s: float = 10.0
    """Deadline of Register, Heartbeat and Offload calls."""
    fetch_timeout_s: float = 300.0
    """Deadline of one whole part download."""
    retry_initial_s: float = 0.2
    retry_max_s: float = 5.0
    """Backoff bounds while the coordinator cannot be reached."""


@dataclass(frozen=True)
class OffloadTimings:
    """Where the time of one request went, in milliseconds, and what crossed the link."""

    head_ms: float
    encode_ms: float
    offload_ms: float
    """Round trip of the Offload call, tail included."""
    tail_ms: float
    payload_bytes: int


class _Loaded:
    """One assignment with its modules, ready to run."""

    def __init__(self, assignment: Assignment, modules: list) -> None:
        self.assignment = assignment
        self.modules = modules


def _load_report_now(generation: int, parts_held: tuple[str, ...], queue_length: int) -> LoadReport:
    import psutil

    temperature = None
    try:
        sensors = psutil.sensors_temperatures() if hasattr(psutil, "sensors_temperatures") else {}
        readings = [t.current for entries in sensors.values() for t in entries if t.current]
        temperature = max(readings) if readings else None
    except (OSError, RuntimeError):  # no sensor access on this machine
        temperature = None
    return LoadReport(
        cpu_percent=float(psutil.cpu_percent(interval=None)),
        memory_percent=float(psutil.virtual_memory().percent),
        temperature_c=temperature,
        queue_length=queue_length,
        assignment_generation=generation,
        parts_held=parts_held,
    )


class EdgeDaemon:
    """Registration, parts, heartbeats and the split inference path of one device."""

    server_name = "coinfer-edge"

    def __init__(self, config: EdgeConfig, on_ready: Callable[[bool], None] | None = None) -> None:
        self.config = config
        self.cache = PartCache(config.cache_dir)
        self.client = CoordinatorClient(
            config.coordinator, config.security, timeout_s=config.rpc_timeout_s, fetch_timeout_s=config.fetch_timeout_s
        )
        self.device_id = ""
        self._on_ready = on_ready or (lambda ready: None)
        self._loaded: _Loaded | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._in_flight = 0
        self._in_flight_lock = threading.Lock()
        self._interval_s = 2.0

    # Lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Start the control thread (register, load, heartbeat); returns at once."""
        self._thread = threading.Thread(target=self._control_loop, name="edge-control", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop heartbeating and close the coordinator channel."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        self.client.close()

    @property
    def assignment(self) -> Assignment | None:
        loaded = self._loaded
        return loaded.assignment if loaded else None

    def is_ready(self) -> bool:
        return self._loaded is not None

    def _device_info(self) -> DeviceInfo:
        import psutil

        return DeviceInfo(
            name=self.config.name,
            address=self.config.address,
            platform=f"{platform.system()} {platform.machine()}",
            cpu_count=os.cpu_count() or 0,
            memory_total_bytes=int(psutil.virtual_memory().total),
        )

    def _control_loop(self) -> None:
        backoff = self.config.retry_initial_s
        while not self._stop.is_set():
            try:
                if not self.device_id:
                    self.device_id, assignment, self._interval_s = self.client.register(self._device_info())
                    log.info("registered with %s as %s", self.config.coordinator, self.device_id)
                else:
                    report = _load_report_now(self._generation(), self._parts_held(), self._in_flight)
                    assignment, self._interval_s = self.client.heartbeat(self.device_id, self.config.name, report)
                if self._generation() != assignment.generation:
                    self._apply(assignment)
                backoff = self.config.retry_initial_s
                self._stop.wait(self._interval_s)
            except NotFound as exc:
                log.warning("%s; registering again", exc)
                self.device_id = ""
            except CoinferError as exc:
                # Unreachable coordinator, bad part, ... : keep serving what is loaded and retry.
                log.warning("control loop: %s (retrying in %.1f s)", exc, backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, self.config.retry_max_s)
            except Exception:  # noqa: BLE001 - a bug must not kill the daemon's control thread silently
                log.exception("control loop failed unexpectedly (retrying in %.1f s)", backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, self.config.retry_max_s)

    def _generation(self) -> int:
        loaded = self._loaded
        return loaded.assignment.generation if loaded else 0

    def _parts_held(self) -> tuple[str, ...]:
        loaded = self._loaded
        return tuple(f"{loaded.assignment.bundle}/{p.name}" for p in loaded.assignment.parts) if loaded else ()

    def _apply(self, assignment: Assignment) -> None:
        """Download, verify and load an assignment's parts, then swap it in."""
        parts = [p for role in HEAD_ROLES for p in assignment.parts if p.role == role]
        if not parts or parts[0].role != "head":
            raise InvalidInput(f"assignment {assignment.generation} gives no head part to run")
        for spec in parts:
            self.cache.ensure(assignment.bundle, spec, self.client.fetch_part)
        bundle = self.cache.open_bundle(assignment.bundle, parts)
        modules = [bundle.load_module(spec.name) for spec in parts]
        self._loaded = _Loaded(assignment, modules)
        log.info(
            "loaded %s at split point %d (%s): parts %s, codec %d bits",
            assignment.model_name,
            assignment.split_point,
            assignment.split_point_name,
            ", ".join(p.name for p in parts),
            assignment.codec_bits,
        )
        self._on_ready(True)

    # Inference ---------------------------------------------------------------------------

    def infer(self, images: np.ndarray, request_id: str = "") -> tuple[np.ndarray, OffloadTimings]:
        """Logits (FP32) for uint8 images: head here, tail on the coordinator."""
        import torch

        from coinfer.core.data import to_float

        loaded = self._loaded
        if loaded is None:
            raise Unavailable("no model loaded yet: the daemon is still registering or downloading parts")
        a = loaded.assignment
        with self._in_flight_lock:
            self._in_flight += 1
        try:
            started = time.perf_counter()
            with torch.inference_mode():
                x = to_float(images)
                for module in loaded.modules:
                    x = module(x)
            head_done = time.perf_counter()
            payload = to_bytes(encode(x.float().numpy(), bits=a.codec_bits, compress=a.codec_compress))
            encoded = time.perf_counter()
            try:
                logits, tail_ms = self.client.offload(
                    a.model_name, a.split_point, payload, request_id=request_id or uuid.uuid4().hex, device_id=self.device_id
                )
            except Unavailable:
                raise
            except CoinferError as exc:
                # The client's request was fine; the coordinator refused what *we* sent.
                raise FailedPrecondition(f"the coordinator refused the offloaded feature: {exc}") from exc
            done = time.perf_counter()
        finally:
            with self._in_flight_lock:
                self._in_flight -= 1
        timings = OffloadTimings(
            head_ms=(head_done - started) * 1e3,
            encode_ms=(encoded - head_done) * 1e3,
            offload_ms=(done - encoded) * 1e3,
            tail_ms=tail_ms,
            payload_bytes=len(payload),
        )
        return logits.astype(np.float32, copy=False), timings

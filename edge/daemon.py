"""The device daemon's control side: register, hold the assigned parts, heartbeat, apply decisions.

A control thread measures the device's speed (`calibration.py`, about a second; or takes the
one its owner configured), registers with the coordinator (retrying with backoff until it
answers), downloads and loads the parts of its assignment, then heartbeats at the interval the
coordinator asks for (one scheduler slot when a scheduler runs). Each heartbeat reports CPU,
memory and temperature (psutil), requests in each stage, the measured uplink throughput,
the previous heartbeat's round trip, the uplink energy, the speed and the moving estimate of
each DeViT sub-model's compute time; its answer carries the current assignment, and may ask
for a new calibration, which runs before the next heartbeat. A new generation is loaded beside the old one (only new parts are downloaded
and loaded) and swapped in atomically, so requests apply it from the next one. A coordinator
that forgot the device (FAILED_PRECONDITION after a restart) is registered with again.
Downloads and loading run on their own thread, so heartbeats go on meanwhile (a device busy
fetching a large part must not look dead to the coordinator); the loader always works
towards the newest assignment heard of.
The compute paths themselves are in `inference.py`.
"""

from __future__ import annotations

import logging
import os
import platform
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from coinfer.core.errors import CoinferError, FailedPrecondition, Unavailable
from coinfer.edge.calibration import DEFAULT_SECONDS, calibrate, configured
from coinfer.edge.coordinator_client import CoordinatorClient
from coinfer.edge.inference import EdgeInference
from coinfer.edge.loaded import LoadedAssignment, ModuleStore
from coinfer.edge.metrics import EdgeMetrics
from coinfer.edge.part_cache import PartCache
from coinfer.edge.stats import EdgeStats
from coinfer.protos.oip import ParameterValue
from coinfer.serving.oip_service import InferCall
from coinfer.serving.security import ClientSecurity
from coinfer.protos.v1 import Assignment, DeviceInfo, DeviceSpeed

log = logging.getLogger(__name__)


@dataclass
class EdgeConfig:
    """How an edge daemon reaches its coordinator and where it keeps parts."""

    name: str
    """Device name, unique among the coordinator's devices."""
    coordinator: str
    """host:port of the coordinator."""
    address: str
    """host:port of this daemon's front door, as told to the coordinator."""
    cache_dir: Path
    """Local part store (kept across restarts: parts are not downloaded again)."""
    security: ClientSecurity = field(default_factory=ClientSecurity)
    """How to reach the coordinator (TLS, token)."""
    rpc_timeout_s: float = 10.0
    """Deadline of Register, Heartbeat, and of Offload when the client gives a later one."""
    fetch_timeout_s: float = 300.0
    """Deadline of one whole part download."""
    retry_initial_s: float = 0.2
    retry_max_s: float = 5.0
    """Backoff bounds while the coordinator cannot be reached."""
    distance_m: float = 0.0
    """Distance to the edge server told to the scheduler (0 = unknown)."""
    fallback_hold_s: float = 1.0
    """After an offload finds the coordinator unreachable, answer alone this long before trying it again."""
    speed: float | None = None
    """Relative speed the owner gives (`--speed`); None = measure it (at start and when asked)."""
    calibration_s: float = DEFAULT_SECONDS
    """How long the calibration times the reference workload."""


class EdgeDaemon:
    """Registration, parts, heartbeats; the compute paths over the loaded assignment."""

    server_name = "coinfer-edge"

    def __init__(self, config: EdgeConfig, on_ready: Callable[[bool], None] | None = None, metrics: EdgeMetrics | None = None) -> None:
        self.config = config
        self.client = CoordinatorClient(
            config.coordinator, config.security, timeout_s=config.rpc_timeout_s, fetch_timeout_s=config.fetch_timeout_s
        )
        self.store = ModuleStore(PartCache(config.cache_dir))
        self.stats = EdgeStats()
        self.metrics = metrics or EdgeMetrics()
        self.device_id = ""
        self.inference = EdgeInference(
            self.client, self.stats, self.metrics, lambda: self.device_id, config.rpc_timeout_s, config.fallback_hold_s
        )
        self._on_ready = on_ready or (lambda ready: None)
        self._loaded: LoadedAssignment | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loader: threading.Thread | None = None
        self._wanted: Assignment | None = None
        self._wanted_changed = threading.Condition()
        self._interval_s = 2.0

    # Lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Start the control thread (register, load, heartbeat); returns at once."""
        self._thread = threading.Thread(target=self._control_loop, name="edge-control", daemon=True)
        self._loader = threading.Thread(target=self._load_loop, name="edge-loader", daemon=True)
        self._thread.start()
        self._loader.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop heartbeating and close the coordinator channel."""
        self._stop.set()
        with self._wanted_changed:
            self._wanted_changed.notify_all()
        for thread in (self._thread, self._loader):
            if thread is not None:
                thread.join(timeout_s)
        self.client.close()

    @property
    def loaded(self) -> LoadedAssignment | None:
        return self._loaded

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
            distance_m=self.config.distance_m,
            speed=self.stats.speed,
        )

    def measure_speed(self) -> DeviceSpeed:
        """Calibrate (or take the configured speed), keep it for the next report, and export it."""
        speed = configured(self.config.speed) if self.config.speed is not None else calibrate(self.config.calibration_s)
        self.stats.speed = speed
        self.metrics.relative_speed.set(speed.relative_speed)
        if speed.source == "calibrated":
            self.metrics.calibrations.inc()
        log.info("speed %.3f (%s, %s, %d thread(s), %s)", speed.relative_speed, speed.source, speed.reference,
                 speed.threads, speed.cpu_model or "unknown CPU")
        return speed

    def _control_loop(self) -> None:
        backoff = self.config.retry_initial_s
        while not self._stop.is_set():
            try:
                if self.stats.speed is None:
                    self.measure_speed()
                calibrate = False
                if not self.device_id:
                    self.device_id, assignment, self._interval_s = self.client.register(self._device_info())
                    log.info("registered with %s as %s", self.config.coordinator, self.device_id)
                else:
                    report = self.stats.report(self._generation(), self._parts_held())
                    reply = self.client.heartbeat(self.device_id, self.config.name, report)
                    assignment, self._interval_s, self.stats.rtt_ms = reply.assignment, reply.interval_s, reply.rtt_ms
                    calibrate = reply.calibrate
                self._want(assignment)
                if calibrate:
                    log.info("the coordinator asks for a new calibration")
                    self.measure_speed()
                backoff = self.config.retry_initial_s
                self._stop.wait(self._interval_s)
            except FailedPrecondition as exc:
                if self.device_id:  # the coordinator forgot this device (it restarted)
                    log.warning("%s; registering again", exc)
                    self.device_id = ""
                    continue
                log.warning("registration refused: %s (retrying in %.1f s)", exc, backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, self.config.retry_max_s)
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
        return loaded.parts_held if loaded else ()

    def _want(self, assignment: Assignment) -> None:
        """Hand the newest assignment to the loader (nothing to do when it is already running it)."""
        with self._wanted_changed:
            if assignment.generation != self._generation() and (self._wanted is None or self._wanted.generation != assignment.generation):
                self._wanted = assignment
                self._wanted_changed.notify_all()

    def _load_loop(self) -> None:
        backoff = self.config.retry_initial_s
        while not self._stop.is_set():
            with self._wanted_changed:
                while self._wanted is None and not self._stop.is_set():
                    self._wanted_changed.wait(1.0)
                wanted = self._wanted
            if wanted is None:
                continue
            try:
                self._apply(wanted)
                backoff = self.config.retry_initial_s
                with self._wanted_changed:
                    if self._wanted is wanted:
                        self._wanted = None
            except CoinferError as exc:
                # A part that fails its hash, an unreachable coordinator: keep the loaded assignment, retry.
                log.warning("cannot load assignment %d: %s (retrying in %.1f s)", wanted.generation, exc, backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, self.config.retry_max_s)
            except Exception:  # noqa: BLE001 - a bug must not kill the loader silently
                log.exception("loading assignment %d failed unexpectedly (retrying in %.1f s)", wanted.generation, backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, self.config.retry_max_s)

    def _apply(self, assignment: Assignment) -> None:
        """Download, verify and load what the assignment needs, then swap it in."""
        previous = self._loaded
        self._loaded = self.store.load(assignment, self.client.fetch_part)
        self.stats.forget_submodels({ref.key for ref in assignment.submodels})
        m = self.metrics
        m.generation.set(assignment.generation)
        m.split_point.set(assignment.split_point)
        m.sub_channel.set(assignment.sub_channel)
        m.power_w.set(assignment.power_w)
        before = previous.assignment if previous else None
        if before is None or before.parts != assignment.parts or before.split_point != assignment.split_point:
            log.info(
                "assignment %d: %s at split point %d (%s), %d parts, sub-models %s",
                assignment.generation,
                assignment.model_name or "no split model",
                assignment.split_point,
                assignment.split_point_name,
                len(assignment.parts),
                [f"{s.model_name}#{s.index}" for s in assignment.submodels] or "none",
            )
        self._on_ready(True)

    # Inference -----------------------------------------------------------------------------

    def infer(self, images: np.ndarray, call: InferCall | None = None) -> tuple[np.ndarray, dict[str, ParameterValue]]:
        """Logits (FP32) of the split model for uint8 images, with the response parameters."""
        loaded = self._loaded
        if loaded is None or not loaded.assignment.model_name:
            raise Unavailable("no split model loaded yet: the daemon is still registering or downloading parts")
        return self.inference.split(loaded, images, call or InferCall("", {}))

    def run_submodel(self, model_name: str, bundle: str, part: str, images: np.ndarray) -> tuple[np.ndarray, float]:
        """A DeViT sub-model's features for uint8 images, and the milliseconds it took (which
        refine the moving estimate of its compute time)."""
        loaded = self._loaded
        feature, compute_ms = self.inference.submodel(loaded, model_name, bundle, part, images)
        refs = loaded.assignment.submodels if loaded is not None else ()
        index = next((r.index for r in refs if r.model_name == model_name and r.bundle == bundle and r.part == part), None)
        if index is not None:
            held_with = tuple(sorted(r.index for r in refs if r.model_name == model_name))
            estimate_ms = self.stats.submodel_computed(model_name, index, held_with, compute_ms, len(images))
            self.metrics.submodel_estimate.labels(model_name, str(index)).set(estimate_ms / 1e3)
        return feature, compute_ms

"""The coordinator's registry of devices: registration, heartbeats, liveness, per-device decisions.

A record holds what the device said (`DeviceInfo`, its last `LoadReport`), what the coordinator
decided for it (the scheduler's `Decision`, the DeViT sub-models placed on it) and counters of
the work done for it. A speed that is not a finite number in (0, 1000] is refused with the
registration or heartbeat that carries it (INVALID_ARGUMENT). A calibration asked for is told
to the device in its next heartbeat's answer and counts as done at the heartbeat after. Every change of a decision or a placement gives the record a new
assignment generation, taken from one counter so generations never repeat, not even across a
re-registration. A device silent for longer than the timeout is stale: it stays listed, but the
scheduler and the fan-out leave it out until it speaks again.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
import uuid
from dataclasses import dataclass, field, replace
from typing import Callable, Sequence

from coinfer.core.errors import FailedPrecondition, InvalidInput, NotFound
from coinfer.protos.v1 import DeviceInfo, DeviceSpeed, LoadReport, SubModelRef, check_speed

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Decision:
    """The scheduler's decision for one device."""

    split_point: int
    sub_channel: int
    power_w: float


@dataclass
class DeviceRecord:
    """What the coordinator knows about one registered device."""

    device_id: str
    info: DeviceInfo
    order: int
    """Registration order (0 = first ever); the scheduler's agent slots follow it."""
    registered_at: float
    """Wall-clock time of registration (seconds since the epoch)."""
    last_seen_monotonic: float
    decision: Decision
    generation: int
    """Generation of the device's current assignment."""
    submodels: tuple[SubModelRef, ...] = ()
    """DeViT sub-models the device should hold now (its assignment's)."""
    targets: tuple[SubModelRef, ...] = ()
    """Sub-models placed on the device; `submodels` also keeps ones moving away until their new holder has them."""
    load: LoadReport | None = None
    offloads: int = 0
    in_tail: int = 0
    """Offloads of this device running on the coordinator now."""
    submodel_calls: int = 0
    submodel_failures: int = 0
    suspect_until: float = 0.0
    """Monotonic time until which the fan-out skips the device (it just refused a connection)."""
    held: frozenset[str] = field(default_factory=frozenset)
    """Parts the device reported loaded, as "bundle/part"."""
    calibration: str = ""
    """"" (none pending), "requested" (to tell the device) or "asked" (told, awaiting its new speed)."""

    @property
    def speed(self) -> DeviceSpeed | None:
        """The device's latest speed: from its last heartbeat, else from its registration."""
        if self.load is not None and self.load.speed is not None:
            return self.load.speed
        return self.info.speed

    @property
    def primary_keys(self) -> tuple[tuple[str, int], ...]:
        """The sub-models placed on it for the fan-out (replicas left out)."""
        return tuple(ref.key for ref in self.targets if not ref.replica)


class DeviceRegistry:
    """Thread-safe table of devices by id."""

    def __init__(self, device_timeout_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        if device_timeout_s <= 0:
            raise InvalidInput(f"device timeout must be positive, got {device_timeout_s}")
        self.device_timeout_s = device_timeout_s
        self._clock = clock
        self._devices: dict[str, DeviceRecord] = {}
        self._lock = threading.RLock()
        self._orders = itertools.count()
        self._generations = itertools.count(1)

    @property
    def lock(self) -> threading.RLock:
        """Held while reading or changing records in several steps."""
        return self._lock

    def next_generation(self) -> int:
        with self._lock:
            return next(self._generations)

    def register(self, info: DeviceInfo, decide: Callable[[int], Decision]) -> DeviceRecord:
        """Add a device; one re-registering under its name replaces its old record.

        ``decide(order)`` gives the new device its first decision.
        """
        if not info.name:
            raise InvalidInput("a registering device must give a name")
        if not info.address:
            raise InvalidInput(f"device {info.name!r} must give the host:port of its front door")
        if info.speed is not None:
            check_speed(info.speed, f"device {info.name!r}")
        with self._lock:
            for old_id, old in list(self._devices.items()):
                if old.info.name == info.name:
                    log.info("device %r re-registered; dropping its old id %s", info.name, old_id)
                    del self._devices[old_id]
            order = next(self._orders)
            record = DeviceRecord(
                device_id=f"{info.name}-{uuid.uuid4().hex[:8]}",
                info=info,
                order=order,
                registered_at=time.time(),
                last_seen_monotonic=self._clock(),
                decision=decide(order),
                generation=next(self._generations),
            )
            self._devices[record.device_id] = record
        log.info("registered device %r at %s as %s", info.name, info.address, record.device_id)
        return record

    def heartbeat(self, device_id: str, report: LoadReport) -> DeviceRecord:
        """Record a device's report; FailedPrecondition when the id is unknown (register again)."""
        with self._lock:
            record = self._devices.get(device_id)
            if record is None:
                raise FailedPrecondition(
                    f"device id {device_id!r} is not registered (the coordinator may have restarted); register again"
                )
            if report.speed is not None:
                check_speed(report.speed, f"device {record.info.name!r}")
            was_live = self.is_live(record)
            # A device told to calibrate does so before its next heartbeat, which carries the new speed.
            record.calibration = {"requested": "asked", "asked": ""}.get(record.calibration, "")
            record.load = report
            record.held = frozenset(report.parts_held)
            record.last_seen_monotonic = self._clock()
            if not was_live:
                log.info("device %r is back", record.info.name)
            return record

    def request_calibration(self, names: Sequence[str] = ()) -> list[str]:
        """Ask the named live devices (all when none are named) to measure their speed again;
        NotFound for a name no live device has. Returns the names asked."""
        with self._lock:
            live = self.records()
            by_name = {r.info.name: r for r in live}
            unknown = [n for n in names if n not in by_name]
            if unknown:
                raise NotFound(f"no live device named {', '.join(map(repr, unknown))}; live: {', '.join(sorted(by_name)) or 'none'}")
            chosen = [by_name[n] for n in names] if names else live
            for record in chosen:
                record.calibration = "requested"
            return [r.info.name for r in chosen]

    def get(self, device_id: str) -> DeviceRecord | None:
        with self._lock:
            return self._devices.get(device_id)

    def is_live(self, record: DeviceRecord) -> bool:
        return self._clock() - record.last_seen_monotonic <= self.device_timeout_s

    def records(self, include_stale: bool = False) -> list[DeviceRecord]:
        """Devices in registration order; live ones only unless ``include_stale``."""
        with self._lock:
            records = sorted(self._devices.values(), key=lambda r: r.order)
            return records if include_stale else [r for r in records if self.is_live(r)]

    def seconds_since_heartbeat(self, record: DeviceRecord) -> float:
        return self._clock() - record.last_seen_monotonic

    def update(
        self,
        device_id: str,
        *,
        decision: Decision | None = None,
        submodels: tuple[SubModelRef, ...] | None = None,
        targets: tuple[SubModelRef, ...] | None = None,
    ) -> bool:
        """Change a device's decision and/or sub-models; True (and a new generation) when its assignment changed."""
        with self._lock:
            record = self._devices.get(device_id)
            if record is None:
                return False
            if targets is not None:
                record.targets = targets  # not part of the assignment: no new generation
            changed = False
            if decision is not None and decision != record.decision:
                record.decision = decision
                changed = True
            if submodels is not None and submodels != record.submodels:
                record.submodels = submodels
                changed = True
            if changed:
                record.generation = next(self._generations)
            return changed

    def count(self, device_id: str, **increments: int) -> None:
        """Add to a record's counters (offloads, in_tail, submodel_calls, submodel_failures)."""
        with self._lock:
            record = self._devices.get(device_id)
            if record is not None:
                for name, value in increments.items():
                    setattr(record, name, getattr(record, name) + value)

    def mark_suspect(self, device_id: str, seconds: float) -> None:
        with self._lock:
            record = self._devices.get(device_id)
            if record is not None:
                record.suspect_until = self._clock() + seconds

    def is_suspect(self, record: DeviceRecord) -> bool:
        return self._clock() < record.suspect_until

    def snapshot(self, include_stale: bool = True) -> list[DeviceRecord]:
        """Copies of the records, safe to read without the lock."""
        with self._lock:
            return [replace(r) for r in self.records(include_stale)]

"""The coordinator's service logic: device registry, assignments, part store, tail execution.

Everything here speaks domain values (`coinfer.protos.v1` dataclasses, numpy arrays, core
errors); `servicer.py` is the thin layer that converts to and from the wire. The scheduler that
will decide split points, sub-channels and powers per device plugs in at `_assign`: for now
every device gets the bundle's one split point, sub-channels in registration order and the
bundle's default power.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from coinfer.core.errors import InvalidInput, NotFound
from coinfer.protos.oip_service import InferResult
from coinfer.protos.v1 import Assignment, DeviceInfo, LoadReport
from coinfer.server.deployment import SplitDeployment

log = logging.getLogger(__name__)

DEFAULT_CHUNK_BYTES = 256 * 1024
MAX_CHUNK_BYTES = 4 * 1024 * 1024


@dataclass
class DeviceRecord:
    """What the coordinator knows about one registered device."""

    device_id: str
    info: DeviceInfo
    assignment: Assignment
    registered_at: float
    """Wall-clock time of registration (seconds since the epoch)."""
    last_seen_monotonic: float
    load: LoadReport | None = None
    offloads: int = 0


@dataclass(frozen=True)
class PartChunkData:
    """One piece of a part file on its way to a device."""

    offset: int
    data: bytes
    total_size_bytes: int
    sha256: str


@dataclass
class CoordinatorConfig:
    """Knobs of the coordinator."""

    heartbeat_interval_s: float = 2.0
    """How often devices are asked to report."""
    device_timeout_s: float = 10.0
    """A device silent this long counts as gone (dropped from the live list)."""
    chunk_bytes: int = DEFAULT_CHUNK_BYTES
    """Default FetchPart chunk size."""


class Coordinator:
    """Registry + assignments + part store + tail executor for one split deployment."""

    server_name = "coinfer-coordinator"

    def __init__(self, deployment: SplitDeployment, config: CoordinatorConfig | None = None) -> None:
        self.deployment = deployment
        self.config = config or CoordinatorConfig()
        self._devices: dict[str, DeviceRecord] = {}
        self._lock = threading.Lock()
        self._registrations = itertools.count()
        self._generation = 1

    # Registry ----------------------------------------------------------------------------

    def register(self, info: DeviceInfo) -> DeviceRecord:
        """Add a device (a device re-registering under its name replaces its old record)."""
        if not info.name:
            raise InvalidInput("a registering device must give a name")
        if not info.address:
            raise InvalidInput(f"device {info.name!r} must give the host:port of its front door")
        with self._lock:
            for old_id, old in list(self._devices.items()):
                if old.info.name == info.name:
                    log.info("device %r re-registered; dropping its old id %s", info.name, old_id)
                    del self._devices[old_id]
            device_id = f"{info.name}-{uuid.uuid4().hex[:8]}"
            record = DeviceRecord(
                device_id=device_id,
                info=info,
                assignment=self._assign(next(self._registrations)),
                registered_at=time.time(),
                last_seen_monotonic=time.monotonic(),
            )
            self._devices[device_id] = record
        log.info("registered device %r at %s as %s", info.name, info.address, device_id)
        return record

    def _assign(self, order: int) -> Assignment:
        d = self.deployment
        s = d.settings
        return Assignment(
            generation=self._generation,
            model_name=s.model_name,
            bundle=d.bundle.name,
            split_point=s.split_point,
            split_point_name=s.split_point_name,
            sub_channel=order % s.num_sub_channels,
            power_w=s.power_w,
            parts=d.device_parts,
            codec_bits=s.codec_bits,
            codec_compress=s.codec_compress,
            model_inputs=d.head_spec.inputs,
            model_outputs=d.tail_spec.outputs,
        )

    def heartbeat(self, device_id: str, report: LoadReport) -> DeviceRecord:
        """Record a device's load; NotFound when the id is unknown (it must register again)."""
        with self._lock:
            record = self._devices.get(device_id)
            if record is None:
                raise NotFound(f"no registered device with id {device_id!r}; register again")
            record.load = report
            record.last_seen_monotonic = time.monotonic()
            return record

    def devices(self, include_stale: bool = False) -> list[DeviceRecord]:
        """Registered devices heard from within the timeout (or all of them)."""
        now = time.monotonic()
        with self._lock:
            records = list(self._devices.values())
        if include_stale:
            return records
        return [r for r in records if now - r.last_seen_monotonic <= self.config.device_timeout_s]

    # Part store --------------------------------------------------------------------------

    def iter_part(self, bundle_name: str, part_name: str, offset: int = 0, chunk_bytes: int = 0) -> Iterator[PartChunkData]:
        """Stream a part file of the served bundle from ``offset`` in chunks."""
        bundle = self.deployment.bundle
        if bundle_name != bundle.name:
            raise NotFound(f"the coordinator serves no bundle {bundle_name!r} (it serves {bundle.name!r})")
        spec = bundle.part(part_name)
        if offset < 0 or offset > spec.size_bytes:
            raise InvalidInput(f"offset {offset} is outside part {part_name!r} of {spec.size_bytes} bytes")
        if chunk_bytes < 0:
            raise InvalidInput(f"chunk_bytes must not be negative, got {chunk_bytes}")
        size = min(chunk_bytes or self.config.chunk_bytes, MAX_CHUNK_BYTES)
        return self._read_chunks(bundle.part_path(part_name), offset, size, spec.size_bytes, spec.sha256)

    @staticmethod
    def _read_chunks(path: Path, offset: int, chunk_bytes: int, total: int, sha256: str) -> Iterator[PartChunkData]:
        # The manifest's hash travels with every chunk; the device hashes what it received, so
        # a file changed on disk since the bundle was verified is caught there (DATA_LOSS).
        with open(path, "rb") as fh:
            fh.seek(offset)
            position = offset
            while position < total:
                data = fh.read(min(chunk_bytes, total - position))
                if not data:
                    break
                yield PartChunkData(position, data, total, sha256)
                position += len(data)
        if position == offset == total:
            yield PartChunkData(offset, b"", total, sha256)  # an empty part still gets one chunk

    # Tail --------------------------------------------------------------------------------

    def offload(self, model_name: str, split_point: int, payload: bytes, device_id: str = "") -> tuple[np.ndarray, float]:
        """Logits for a feature a device uploaded, and the milliseconds the tail took."""
        logits, tail_ms = self.deployment.run_tail(model_name, split_point, payload)
        if device_id:
            with self._lock:
                record = self._devices.get(device_id)
                if record is not None:
                    record.offloads += 1
        return logits, tail_ms


class CoordinatorModels:
    """The coordinator's OIP model repository: the split model run whole, here."""

    server_name = Coordinator.server_name

    def __init__(self, deployment: SplitDeployment) -> None:
        self._model = _LocalSplitModel(deployment)

    def is_ready(self) -> bool:
        return True

    def get(self, name: str) -> "_LocalSplitModel":
        if name != self._model.name:
            raise NotFound(f"unknown model {name!r}; this server serves {self._model.name!r}")
        return self._model


@dataclass
class _LocalSplitModel:
    deployment: SplitDeployment
    version: str = "1"
    platform: str = "coinfer_split"
    name: str = field(init=False)

    def __post_init__(self) -> None:
        self.name = self.deployment.model_name
        self.inputs = self.deployment.inputs
        self.outputs = self.deployment.outputs
        self.max_batch = self.deployment.settings.max_batch

    def is_ready(self) -> bool:
        return True

    def infer(self, inputs: dict[str, np.ndarray], request_id: str) -> InferResult:
        started = time.perf_counter()
        logits = self.deployment.run_local(inputs[self.inputs[0].name])
        return InferResult({self.outputs[0].name: logits}, {"compute_ms": (time.perf_counter() - started) * 1e3})

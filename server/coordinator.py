"""The coordinator's service logic: registry, assignments, sub-model placement, tails, fan-out routing.

Everything here speaks domain values (`coinfer.protos.v1` dataclasses, numpy arrays, core
errors); `servicer.py` converts to and from the wire. A device's assignment is built from its
record whenever it asks: the split model's parts for every point (plus the whole model for
running alone when the coordinator cannot be reached), the scheduler's current decision, the
DeViT sub-models placed on it, and the DeViT models its front door forwards here. A
maintenance thread re-places sub-models when devices come or go.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterator, Mapping, Sequence

import numpy as np

from coinfer.core.bundle import TensorSpec
from coinfer.core.errors import InvalidInput, NotFound
from coinfer.serving.interceptors import status_of
from coinfer.serving.security import ClientSecurity
from coinfer.protos.v1 import Assignment, DeviceInfo, LoadReport, PartRef, SubModelRef
from coinfer.server.catalog import DEFAULT_CHUNK_BYTES, ModelCatalog, PartChunkData
from coinfer.server.devit_service import Holder
from coinfer.server.edge_clients import EdgeClients
from coinfer.server.metrics import CoordinatorMetrics
from coinfer.server.placement import place_submodels
from coinfer.server.registry import Decision, DeviceRecord, DeviceRegistry

log = logging.getLogger(__name__)


@dataclass
class CoordinatorConfig:
    """Knobs of the coordinator."""

    heartbeat_interval_s: float = 2.0
    """How often devices are asked to report (the scheduler shortens it to its slot)."""
    device_timeout_s: float = 10.0
    """A device silent this long counts as gone: left out of scheduling and fan-out, its sub-models re-placed."""
    chunk_bytes: int = DEFAULT_CHUNK_BYTES
    """Default FetchPart chunk size."""
    split_point: int | None = None
    """Split point of every device when no scheduler runs; None = the bundle's default."""
    device_fallback: bool = True
    """Ship the whole split model to devices so they can answer alone when the coordinator is unreachable."""
    power_w: float | None = None
    """Default transmit power of devices; None = the bundle's (0.1 W when it says nothing)."""
    num_sub_channels: int | None = None
    """Sub-channels handed out in registration order without a scheduler; None = the bundle's (2)."""
    suspect_s: float = 1.0
    """After a refused connection, the fan-out skips the device this long (its heartbeats decide after)."""


def _tensor_specs(metas) -> tuple[TensorSpec, ...]:
    return tuple(TensorSpec(m.name, m.datatype, tuple(m.shape)) for m in metas)


class Coordinator:
    """Registry + assignments + part store + tails + DeViT routing of one coordinator."""

    server_name = "coinfer-coordinator"

    def __init__(
        self,
        catalog: ModelCatalog,
        config: CoordinatorConfig | None = None,
        *,
        edge_security: ClientSecurity | None = None,
        metrics: CoordinatorMetrics | None = None,
        max_message_bytes: int | None = None,
    ) -> None:
        self.catalog = catalog
        self.config = config or CoordinatorConfig()
        if self.config.heartbeat_interval_s <= 0 or self.config.device_timeout_s <= 0:
            raise InvalidInput("heartbeat interval and device timeout must be positive")

        self.registry = DeviceRegistry(self.config.device_timeout_s)
        self.metrics = metrics or CoordinatorMetrics()
        self.edges = EdgeClients(edge_security, max_message_bytes)
        self.initial_decision: Callable[[int], Decision] = self._default_decision
        """Gives a newly registered device its first decision (the scheduler replaces it)."""
        catalog.attach_router(self)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        split = catalog.split
        if split is not None and self.config.split_point is not None and self.config.split_point not in split.points:
            raise InvalidInput(f"split point {self.config.split_point} is not in {split.bundle.path}; it has {list(split.available_points)}")

    @property
    def deployment(self):
        """The split deployment (None when only DeViT models are served)."""
        return self.catalog.split

    @property
    def heartbeat_interval_s(self) -> float:
        return self.config.heartbeat_interval_s

    # Lifecycle -----------------------------------------------------------------------------

    def check_timeouts(self) -> None:
        """Refuse a device timeout that would drop devices between two heartbeats (call once the
        scheduler, which may shorten heartbeats, is in place)."""
        if self.config.device_timeout_s < 2 * self.config.heartbeat_interval_s:
            raise InvalidInput(
                f"a device timeout of {self.config.device_timeout_s:g} s would drop devices between two heartbeats "
                f"{self.config.heartbeat_interval_s:g} s apart; make it at least twice the interval"
            )

    def start(self) -> None:
        """Start the maintenance thread (re-placement of sub-models as devices come and go)."""
        self._thread = threading.Thread(target=self._maintain, name="coordinator-maintenance", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)
        self.edges.close()

    def _maintain(self) -> None:
        period = min(0.25, self.config.heartbeat_interval_s)
        while not self._stop.wait(period):
            try:
                self._place()  # every round: moving sub-models are released once their new holder has them
                self._export_device_metrics()
            except Exception:  # noqa: BLE001 - the loop must survive a bug in one round
                log.exception("maintenance round failed")

    # Registry ------------------------------------------------------------------------------

    def _default_decision(self, order: int) -> Decision:
        split = self.catalog.split
        point = self.config.split_point if self.config.split_point is not None else (split.default_point if split else 0)
        channels = self.config.num_sub_channels or (split.num_sub_channels if split else 2)
        power = self.config.power_w if self.config.power_w is not None else (split.power_w if split else 0.1)
        return Decision(point, order % channels, power)

    def register(self, info: DeviceInfo) -> tuple[DeviceRecord, Assignment]:
        """Add a device; its first assignment includes its share of the DeViT sub-models."""
        record = self.registry.register(info, self.initial_decision)
        self._place()
        record = self.registry.get(record.device_id) or record
        return record, self.assignment_for(record)

    def heartbeat(self, device_id: str, report: LoadReport) -> tuple[DeviceRecord, Assignment]:
        """Record a device's load; FailedPrecondition when the id is unknown (it must register again)."""
        record = self.registry.heartbeat(device_id, report)
        return record, self.assignment_for(record)

    def devices(self, include_stale: bool = False) -> list[DeviceRecord]:
        """Registered devices heard from within the timeout (or all of them), in registration order."""
        return self.registry.records(include_stale)

    def set_decisions(self, decisions: Mapping[str, Decision]) -> list[str]:
        """Apply the scheduler's decisions (points moved to ones the bundle has); ids whose decision changed."""
        split = self.catalog.split
        changed = []
        for device_id, decision in decisions.items():
            if split is not None:
                point = split.nearest_point(decision.split_point)
                if point != decision.split_point:
                    decision = Decision(point, decision.sub_channel, decision.power_w)
            if self.registry.update(device_id, decision=decision):
                changed.append(device_id)
        return changed

    def assignment_for(self, record: DeviceRecord) -> Assignment:
        """The device's current assignment, built from its record."""
        split = self.catalog.split
        parts: list[PartRef] = []
        for ref in record.submodels:
            parts.append(PartRef(ref.bundle, self.catalog.bundles[ref.bundle].part(ref.part)))
        forwarded = tuple(m.model_info() for m in self.catalog.devit.values())
        d = record.decision
        if split is None:
            return Assignment(
                generation=record.generation, model_name="", bundle="", split_point=0, split_point_name="",
                sub_channel=d.sub_channel, power_w=d.power_w, parts=tuple(parts), codec_bits=0, codec_compress=False,
                model_inputs=(), model_outputs=(), submodels=record.submodels, forwarded_models=forwarded,
            )
        point = split.points[split.nearest_point(d.split_point)].plan
        parts = [PartRef(split.bundle.name, spec) for spec in split.device_parts(self.config.device_fallback)] + parts
        return Assignment(
            generation=record.generation,
            model_name=split.model_name,
            bundle=split.bundle.name,
            split_point=point.index,
            split_point_name=point.name,
            sub_channel=d.sub_channel,
            power_w=d.power_w,
            parts=tuple(parts),
            codec_bits=point.codec_bits,
            codec_compress=bool(point.codec_compress),
            model_inputs=_tensor_specs(split.inputs),
            model_outputs=_tensor_specs(split.outputs),
            split_points=tuple(split.points[i].plan for i in split.available_points),
            codec_per_image=split.per_image,
            fallback_parts=split.fallback_parts if self.config.device_fallback else (),
            submodels=record.submodels,
            forwarded_models=forwarded,
        )

    # DeViT placement and routing -----------------------------------------------------------

    def _place(self) -> None:
        """Re-place sub-models on the live devices, make-before-break.

        A sub-model moving to another device stays in its old holder's assignment until the new
        holder reports it loaded, so a device joining never leaves a sub-model unserved.
        """
        if not self.catalog.devit:
            return
        keys = [(m.name, i) for m in self.catalog.devit.values() for i in range(m.num_submodels)]
        with self.registry.lock:
            everyone = self.registry.records(include_stale=True)
            live = [r for r in everyone if self.registry.is_live(r)]
            current = {r.device_id: [(s.model_name, s.index) for s in r.targets] for r in everyone}
            placed = place_submodels(keys, current, [r.device_id for r in live])
            owner: dict[tuple[str, int], DeviceRecord] = {}
            for record in everyone:
                targets = tuple(self._submodel_ref(key) for key in placed.get(record.device_id, ()))
                self.registry.update(record.device_id, targets=targets)
                for key in placed.get(record.device_id, ()):
                    owner[key] = record
            for record in everyone:
                keep: tuple[SubModelRef, ...] = ()
                if self.registry.is_live(record):
                    keep = tuple(
                        ref for ref in record.submodels
                        if ref not in record.targets and not _has_loaded(owner.get((ref.model_name, ref.index)), ref)
                    )
                refs = record.targets + keep
                if self.registry.update(record.device_id, submodels=refs):
                    log.info("device %r now runs sub-models %s", record.info.name, [f"{r.model_name}#{r.index}" for r in refs] or "none")

    def _submodel_ref(self, key: tuple[str, int]) -> SubModelRef:
        model = self.catalog.devit[key[0]]
        return SubModelRef(model.name, model.bundle.name, model.submodel_parts[key[1]], key[1])

    def holders(self, model_name: str) -> dict[int, Holder]:
        """Sub-model index -> a live device that reported it loaded: its placed owner first, a
        reachable one before one that just refused a connection (which is then skipped)."""
        best: dict[int, tuple[tuple[bool, bool], Holder]] = {}
        for record in self.registry.records():
            suspect = self.registry.is_suspect(record)
            skip = f"refused a connection less than {self.config.suspect_s:g} s ago; skipped meanwhile" if suspect else ""
            for ref in record.submodels:
                if ref.model_name == model_name and f"{ref.bundle}/{ref.part}" in record.held:
                    rank = (suspect, ref not in record.targets)
                    if ref.index not in best or rank < best[ref.index][0]:
                        best[ref.index] = (rank, Holder(record.device_id, record.info.name, record.info.address, skip))
        return {index: holder for index, (_, holder) in best.items()}

    def stub(self, address: str):
        return self.edges.stub(address)

    def report(self, holder: Holder, model_name: str, ok: bool, unreachable: bool, seconds: float) -> None:
        self.registry.count(holder.device_id, submodel_calls=1, submodel_failures=0 if ok else 1)
        if unreachable:
            self.registry.mark_suspect(holder.device_id, self.config.suspect_s)
        self.metrics.submodel_calls.labels(model_name, holder.device_name, "OK" if ok else ("UNAVAILABLE" if unreachable else "FAILED")).inc()
        self.metrics.submodel_latency.labels(model_name, holder.device_name).observe(seconds)

    # Part store and tails ------------------------------------------------------------------

    def iter_part(self, bundle_name: str, part_name: str, offset: int = 0, chunk_bytes: int = 0) -> Iterator[PartChunkData]:
        return self.catalog.iter_part(bundle_name, part_name, offset, chunk_bytes, self.config.chunk_bytes)

    def offload(self, model_name: str, split_point: int, payloads: Sequence[bytes], device_id: str = "") -> tuple[np.ndarray, float]:
        """Logits for what a device uploaded, and the milliseconds the tail took."""
        split = self.catalog.split
        if split is None:
            raise NotFound(f"the coordinator serves no split model (asked for {model_name!r})")
        record = self.registry.get(device_id) if device_id else None
        name = record.info.name if record is not None else "unknown"
        if record is not None:
            self.registry.count(device_id, in_tail=1)
        outcome = "INTERNAL"
        started = time.perf_counter()
        try:
            logits, tail_ms = split.run_tail(model_name, split_point, payloads)
            outcome = "OK"
            return logits, tail_ms
        except Exception as exc:
            outcome = status_of(exc).name
            raise
        finally:
            if record is not None:
                self.registry.count(device_id, in_tail=-1, offloads=1 if outcome == "OK" else 0)
            self.metrics.offloads.labels(model_name, name, outcome).inc()
            self.metrics.offload_latency.labels(model_name, name).observe(time.perf_counter() - started)

    # Metrics -------------------------------------------------------------------------------

    def _export_device_metrics(self) -> None:
        m = self.metrics
        live = self.registry.records()
        m.devices_live.set(len(live))
        for record in live:
            name = record.info.name
            m.split_point.labels(name).set(record.decision.split_point)
            m.sub_channel.labels(name).set(record.decision.sub_channel)
            m.power_w.labels(name).set(record.decision.power_w)
            if record.load is not None:
                m.device_queue.labels(name).set(record.load.queue_length)
                m.device_rtt.labels(name).set(record.load.rtt_ms / 1e3)
                m.device_uplink.labels(name).set(record.load.uplink_bytes_per_s)


def _has_loaded(record: DeviceRecord | None, ref: SubModelRef) -> bool:
    return record is not None and f"{ref.bundle}/{ref.part}" in record.held

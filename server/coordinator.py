"""The coordinator's service logic: registry, assignments, sub-model placement, tails, fan-out routing.

Everything here speaks domain values (`coinfer.protos.v1` dataclasses, numpy arrays, core
errors); `servicer.py` converts to and from the wire. A device's assignment is built from its
record whenever it asks: the split model's parts for every point (plus the whole model for
running alone when the coordinator cannot be reached), the scheduler's current decision, the
DeViT sub-models placed on it, and the DeViT models its front door forwards here. A
maintenance thread re-places sub-models when devices come, go or change speed (by speed,
`placement.py`, from what `fleet_model.py` expects of each device; or by count), and watches
whether the live fleet still matches the speeds each DeViT bundle was sized for.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Callable, Iterator, Literal, Mapping, Sequence

import numpy as np

from coinfer.core.bundle import TensorSpec
from coinfer.core.errors import InvalidInput, NotFound
from coinfer.serving.interceptors import status_of
from coinfer.serving.security import ClientSecurity
from coinfer.protos.v1 import Assignment, DeviceInfo, LoadReport, PartRef, SubModelRef
from coinfer.server.catalog import DEFAULT_CHUNK_BYTES, ModelCatalog, PartChunkData
from coinfer.server.devit_service import Holder
from coinfer.server.edge_clients import EdgeClients
from coinfer.server.fleet_model import FleetEstimate, LiveDevice, SubModelSize, bundle_sizes, estimate, fleet_mismatch
from coinfer.server.metrics import CoordinatorMetrics
from coinfer.server.placement import DEFAULT_TOLERANCE, SpeedPlacement, SubModelKey, device_times_ms, place_by_speed, place_submodels
from coinfer.server.registry import Decision, DeviceRecord, DeviceRegistry

log = logging.getLogger(__name__)

MISMATCH_WARN_EVERY_S = 60.0
"""A fleet that keeps not matching a bundle's sizing is logged again this often."""


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
    placement: Literal["speed", "count"] = "speed"
    """DeViT sub-models placed to minimise the expected critical path, or spread by count (the old way)."""
    placement_tolerance: float = DEFAULT_TOLERANCE
    """A placement whose critical path is within this fraction of the optimum is left as it is."""
    mismatch_grace_s: float = 5.0
    """A fleet must stop matching a bundle's sizing this long before it is reported (devices joining one by one)."""
    spare_calibration_s: float = 60.0
    """A device running no sub-model is asked to measure its speed again this often: no request
    times it, so a calibration that came out low would otherwise keep it idle for good."""


@dataclass
class ModelPlacementStatus:
    """How one DeViT model's sub-models sit on the fleet now."""

    model_name: str
    policy: str
    critical_path_ms: float = 0.0
    optimal_critical_path_ms: float = 0.0
    sized_for_speeds: tuple[float, ...] = ()
    mismatch: str = ""
    """Why the fleet does not match the sizing ("" = it matches, or has not stopped matching for long)."""
    mismatch_since: float | None = field(default=None, repr=False)
    warned_at: float | None = field(default=None, repr=False)


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
        if self.config.placement not in ("speed", "count"):
            raise InvalidInput(f"placement must be 'speed' or 'count', got {self.config.placement!r}")
        self.sizes: dict[SubModelKey, SubModelSize] = {s.key: s for m in catalog.devit.values() for s in bundle_sizes(m)}
        self.fleet: FleetEstimate = estimate([], self.sizes)
        self.placements: dict[str, ModelPlacementStatus] = {
            name: ModelPlacementStatus(name, self.config.placement, sized_for_speeds=tuple(
                self.sizes[(name, i)].sized_for_speed for i in range(m.num_submodels)))
            for name, m in catalog.devit.items()
        }
        self._solved: tuple[tuple, SpeedPlacement, float] | None = None
        self._solve_lock = threading.Lock()
        self._spare_since: dict[str, float] = {}
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
        primary holder reports it loaded, so a device joining never leaves a sub-model unserved.
        """
        if not self.catalog.devit:
            return
        keys = list(self.sizes)
        with self.registry.lock:
            live = [r for r in self.registry.records(include_stale=True) if self.registry.is_live(r)]
            fleet = estimate(
                [LiveDevice(r.device_id, r.speed.relative_speed if r.speed else None, r.primary_keys, r.load) for r in live],
                self.sizes,
            )
            holding = {r.device_id: {ref.key for ref in (*r.targets, *r.submodels)} for r in live}
        plan = self._solve(fleet, holding)  # outside the lock: the fan-out reads the registry meanwhile
        with self.registry.lock:
            everyone = self.registry.records(include_stale=True)
            live = [r for r in everyone if self.registry.is_live(r)]
            if [r.device_id for r in live] != list(fleet.devices):
                return  # a device came or went meanwhile: the next round places again
            if self.config.placement == "count":
                current = {r.device_id: list(r.primary_keys) for r in everyone}
                primaries = place_submodels(keys, current, [r.device_id for r in live])
                replicas: dict[str, tuple[SubModelKey, ...]] = {}
            else:
                primaries, replicas = plan.primaries, plan.replicas
            moved = Counter(key[0] for r in live for key in primaries.get(r.device_id, ()) if key not in r.primary_keys)
            for record in everyone:
                targets = tuple(self._submodel_ref(key) for key in primaries.get(record.device_id, ()))
                targets += tuple(self._submodel_ref(key, replica=True) for key in replicas.get(record.device_id, ()))
                self.registry.update(record.device_id, targets=targets)
            owner = {key: r for r in everyone for key in primaries.get(r.device_id, ())}
            for record in everyone:
                keep: tuple[SubModelRef, ...] = ()
                if self.registry.is_live(record):
                    target_keys = {ref.key for ref in record.targets}
                    keep = tuple(
                        ref for ref in record.submodels
                        if ref.key not in target_keys and not _has_loaded(owner.get(ref.key), ref)
                    )
                refs = record.targets + keep
                if self.registry.update(record.device_id, submodels=refs):
                    log.info("device %r now runs sub-models %s", record.info.name, [_label(r) for r in refs] or "none")
            self.fleet = fleet
            self._update_placement_status(fleet, primaries, plan, {r.device_id: r.info.name for r in live}, moved)
            self._recalibrate_spares(live)

    def _recalibrate_spares(self, live: Sequence[DeviceRecord]) -> None:
        """Ask devices that have run no sub-model for ``spare_calibration_s`` to measure their speed again."""
        now = time.monotonic()
        spares = {r.device_id: r for r in live if not r.primary_keys}
        self._spare_since = {d: self._spare_since.get(d, now) for d in spares}
        for device_id, since in self._spare_since.items():
            record = spares[device_id]
            if now - since >= self.config.spare_calibration_s and not record.calibration:
                record.calibration = "requested"
                self._spare_since[device_id] = now
                log.info("device %r runs no sub-model: asked to measure its speed again", record.info.name)

    def _solve(self, fleet: FleetEstimate, holding: Mapping[str, set[SubModelKey]]) -> SpeedPlacement:
        """The speed placement, solved again only when its inputs changed (in shape, not in scale)."""
        total = sum(fleet.work_ms.values()) or 1.0
        signature = (
            tuple((k, round(w / total, 3)) for k, w in fleet.work_ms.items()),
            tuple((d, round(s, 3)) for d, s in fleet.speeds.items()),
            tuple((d, tuple(sorted(keys))) for d, keys in holding.items()),
        )
        with self._solve_lock:
            if self._solved is None or self._solved[0] != signature:
                plan = place_by_speed(fleet.work_ms, fleet.speeds, holding, tolerance=self.config.placement_tolerance)
                if not plan.exact:
                    log.warning("%d sub-models are too many to place exactly: the placement is the greedy one", len(fleet.work_ms))
                self._solved = (signature, plan, total)
            _, plan, solved_total = self._solved
        return plan if solved_total == total else _rescaled(plan, total / solved_total)

    def _update_placement_status(
        self,
        fleet: FleetEstimate,
        primaries: Mapping[str, tuple[SubModelKey, ...]],
        plan: SpeedPlacement,
        names: Mapping[str, str],
        moved: Mapping[str, int],
    ) -> None:
        times = device_times_ms(primaries, fleet.work_ms, fleet.speeds)
        now = time.monotonic()
        for name, count in moved.items():
            self.metrics.placement_moves.labels(name).inc(count)
        for name, status in self.placements.items():
            holders = {key: d for d, keys in primaries.items() for key in keys if key[0] == name}
            status.critical_path_ms = max((times[d] for d in set(holders.values())), default=0.0)
            status.optimal_critical_path_ms = plan.optimal_critical_path_ms
            sized = {(name, i): s for i, s in enumerate(status.sized_for_speeds)}
            problem = fleet_mismatch(sized, holders, fleet.speeds, names)
            if not problem:
                if status.mismatch:
                    log.info("DeViT model %r: the live fleet matches the speeds it was sized for again", name)
                status.mismatch, status.mismatch_since, status.warned_at = "", None, None
                continue
            if status.mismatch_since is None:
                status.mismatch_since = now
            if now - status.mismatch_since < self.config.mismatch_grace_s:
                continue
            status.mismatch = problem
            if status.warned_at is None or now - status.warned_at >= MISMATCH_WARN_EVERY_S:
                status.warned_at = now
                log.warning(
                    "DeViT model %r was sized for device speeds %s, and the live fleet no longer matches: %s. Measure the fleet "
                    "(coinfer fleet --coordinator ADDR --out speeds.json) and decompose for it (coinfer decompose --fleet speeds.json)",
                    name, ", ".join(f"{s:.2f}" for s in status.sized_for_speeds), problem,
                )

    def calibrate(self, names: Sequence[str] = ()) -> list[str]:
        """Ask live devices (all when none are named) to measure their speed again; the names asked."""
        asked = self.registry.request_calibration(names)
        log.info("asked %s to measure their speed again", ", ".join(asked) or "no device")
        return asked

    def _submodel_ref(self, key: SubModelKey, replica: bool = False) -> SubModelRef:
        model = self.catalog.devit[key[0]]
        sized = self.sizes[key].sized_for_speed
        return SubModelRef(model.name, model.bundle.name, model.submodel_parts[key[1]], key[1], sized, replica)

    def holders(self, model_name: str) -> dict[int, Holder]:
        """Sub-model index -> a live device that reported it loaded: a reachable one before one
        that just refused a connection (which is then skipped); its primary holder first, then
        one still handing it over, then a replica."""
        best: dict[int, tuple[tuple[bool, int], Holder]] = {}
        for record in self.registry.records():
            suspect = self.registry.is_suspect(record)
            skip = f"refused a connection less than {self.config.suspect_s:g} s ago; skipped meanwhile" if suspect else ""
            role = {ref.key: 2 if ref.replica else 0 for ref in record.targets}
            for ref in record.submodels:
                if ref.model_name == model_name and f"{ref.bundle}/{ref.part}" in record.held:
                    rank = (suspect, role.get(ref.key, 1))
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
            if record.speed is not None:
                m.device_speed.labels(name).set(record.speed.relative_speed)
            estimate_ = self.fleet.devices.get(record.device_id)
            if estimate_ is not None:
                m.device_effective_speed.labels(name).set(estimate_.effective_speed)
                m.device_expected_compute.labels(name).set(self.expected_compute_ms(record) / 1e3)
        for status in self.placements.values():
            m.critical_path.labels(status.model_name).set(status.critical_path_ms / 1e3)
            m.optimal_critical_path.labels(status.model_name).set(status.optimal_critical_path_ms / 1e3)
            m.fleet_mismatch.labels(status.model_name).set(1 if status.mismatch else 0)

    def effective_speed(self, record: DeviceRecord) -> float:
        """The speed placement uses for a device (its reported speed refined by real requests)."""
        estimate_ = self.fleet.devices.get(record.device_id)
        if estimate_ is not None:
            return estimate_.effective_speed
        return record.speed.relative_speed if record.speed is not None else 1.0

    def expected_compute_ms(self, record: DeviceRecord) -> float:
        """Expected compute time per request of the primaries a device holds."""
        work = sum(self.fleet.work_ms.get(key, 0.0) for key in record.primary_keys)
        return work / self.effective_speed(record)


def _has_loaded(record: DeviceRecord | None, ref: SubModelRef) -> bool:
    return record is not None and f"{ref.bundle}/{ref.part}" in record.held


def _label(ref: SubModelRef) -> str:
    return f"{ref.model_name}#{ref.index}" + (" (replica)" if ref.replica else "")


def _rescaled(plan: SpeedPlacement, factor: float) -> SpeedPlacement:
    """The same placement with every expected time multiplied by ``factor`` (the work's scale moved)."""
    return replace(plan, critical_path_ms=plan.critical_path_ms * factor, optimal_critical_path_ms=plan.optimal_critical_path_ms * factor)

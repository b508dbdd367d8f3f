"""`coinfer fleet`: the live devices as a coordinator sees them, their speeds and their sub-models.

`list_fleet` asks a coordinator (ListDevices) and returns a `FleetListing`; `render_fleet` prints
it for people, `FleetListing.to_json` for programs, and `speeds_entries` gives what a speeds
file (`server/dekd/speeds.py`) records of each device, fastest first. `calibrate_fleet` asks the
devices to measure their speed again and waits until each has reported the new one.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import grpc

from coinfer.core.errors import DeadlineExceeded
from coinfer.protos import coinfer_v1_pb2 as v1
from coinfer.protos import coinfer_v1_pb2_grpc as v1_grpc
from coinfer.serving.interceptors import error_from_rpc
from coinfer.serving.security import ClientSecurity, open_channel


@dataclass(frozen=True)
class HeldSubModel:
    """A DeViT sub-model on a device."""

    model_name: str
    index: int
    sized_for_speed: float
    """Relative speed the bundle sized it for."""
    replica: bool
    loaded: bool
    """The device reported its part loaded."""
    compute_ms: float | None
    """The device's moving estimate of one call (None before it ran any)."""


@dataclass(frozen=True)
class FleetDevice:
    """One registered device."""

    name: str
    device_id: str
    address: str
    live: bool
    speed: float
    """The speed the coordinator places by (reported, refined by real requests)."""
    reported_speed: float | None
    """What the device said (None: nothing)."""
    speed_source: str
    reference: str
    cpu_model: str
    threads: int
    cpu_count: int
    memory_total_bytes: int
    expected_compute_ms: float
    calibration_pending: bool
    submodels: tuple[HeldSubModel, ...] = ()


@dataclass(frozen=True)
class ModelPlacementView:
    """How one DeViT model sits on the fleet."""

    model_name: str
    policy: str
    critical_path_ms: float
    optimal_critical_path_ms: float
    sized_for_speeds: tuple[float, ...]
    fleet_matches: bool
    mismatch: str


@dataclass(frozen=True)
class FleetListing:
    coordinator: str
    devices: tuple[FleetDevice, ...]
    models: tuple[ModelPlacementView, ...] = field(default=())

    @property
    def live(self) -> tuple[FleetDevice, ...]:
        return tuple(d for d in self.devices if d.live)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def speeds_entries(self) -> list[dict[str, Any]]:
        """What a speeds file records of each live device."""
        return [
            {
                "name": d.name,
                "speed": d.speed,
                "reported_speed": d.reported_speed,
                "source": d.speed_source,
                "reference": d.reference,
                "cpu_model": d.cpu_model,
                "threads": d.threads,
                "cpu_count": d.cpu_count,
                "memory_total_bytes": d.memory_total_bytes,
            }
            for d in self.live
        ]


def _device(status: v1.DeviceStatus) -> FleetDevice:
    info, report = status.info, status.last_report
    speed = report.speed if status.HasField("last_report") and report.HasField("speed") else (info.speed if info.HasField("speed") else None)
    timings = {(t.model_name, t.index): t.compute_ms for t in report.submodel_timings} if status.HasField("last_report") else {}
    held = set(report.parts_held) if status.HasField("last_report") else set()
    submodels = tuple(
        HeldSubModel(
            s.model_name, s.index, s.sized_for_speed or 1.0, s.replica, f"{s.bundle}/{s.part}" in held, timings.get((s.model_name, s.index))
        )
        for s in status.assignment.submodels
    )
    return FleetDevice(
        name=info.name,
        device_id=status.device_id,
        address=info.address,
        live=status.live,
        speed=status.effective_speed,
        reported_speed=speed.relative_speed if speed is not None else None,
        speed_source=speed.source if speed is not None else "",
        reference=speed.reference if speed is not None else "",
        cpu_model=speed.cpu_model if speed is not None else "",
        threads=speed.threads if speed is not None else 0,
        cpu_count=info.cpu_count,
        memory_total_bytes=info.memory_total_bytes,
        expected_compute_ms=status.expected_compute_ms,
        calibration_pending=status.calibration_pending,
        submodels=submodels,
    )


def list_fleet(address: str, security: ClientSecurity | None = None, *, timeout_s: float = 10.0, include_stale: bool = False) -> FleetListing:
    """The coordinator's devices (live ones unless ``include_stale``) and its DeViT placements."""
    channel = open_channel(address, security)
    try:
        reply = v1_grpc.CoordinatorStub(channel).ListDevices(v1.ListDevicesRequest(include_stale=include_stale), timeout=timeout_s)
    except grpc.RpcError as exc:
        raise error_from_rpc(exc, f"ListDevices on the coordinator at {address}") from exc
    finally:
        channel.close()
    models = tuple(
        ModelPlacementView(m.model_name, m.policy, m.critical_path_ms, m.optimal_critical_path_ms, tuple(m.sized_for_speeds), m.fleet_matches, m.mismatch)
        for m in reply.models
    )
    return FleetListing(address, tuple(_device(d) for d in reply.devices), models)


def calibrate_fleet(
    address: str, names: Sequence[str] = (), security: ClientSecurity | None = None, *, timeout_s: float = 30.0
) -> list[str]:
    """Ask devices (all live ones when none are named) to measure their speed again, and wait
    until each has reported; returns the names asked."""
    deadline = time.monotonic() + timeout_s
    channel = open_channel(address, security)
    try:
        reply = v1_grpc.CoordinatorStub(channel).Calibrate(v1.CalibrateRequest(device_names=list(names)), timeout=min(timeout_s, 10.0))
    except grpc.RpcError as exc:
        raise error_from_rpc(exc, f"Calibrate on the coordinator at {address}") from exc
    finally:
        channel.close()
    asked = list(reply.device_names)
    while True:
        pending = [d.name for d in list_fleet(address, security).devices if d.name in asked and d.calibration_pending]
        if not pending:
            return asked
        if time.monotonic() > deadline:
            raise DeadlineExceeded(f"after {timeout_s:g} s, {', '.join(pending)} had not reported a new speed")
        time.sleep(0.2)


def _size(num_bytes: int) -> str:
    return f"{num_bytes / 2**30:.1f} GiB" if num_bytes else "?"


def render_fleet(listing: FleetListing) -> str:
    """A table of the devices, then each DeViT model's placement."""
    lines = [f"coordinator {listing.coordinator}: {len(listing.live)} live device(s)"]
    header = f"  {'device':<16} {'speed':>6} {'reported':>9} {'source':<10} {'threads':>7} {'memory':>9}  {'expected':>9}  sub-models (model#index sized-for, ms per call)"
    lines.append(header)
    for d in listing.devices:
        reported = f"{d.reported_speed:.3f}" if d.reported_speed is not None else "-"
        held = ", ".join(
            f"{s.model_name}#{s.index} {s.sized_for_speed:.2f}"
            + (" replica" if s.replica else "")
            + ("" if s.loaded else " (loading)")
            + (f" {s.compute_ms:.1f} ms" if s.compute_ms is not None else "")
            for s in d.submodels
        ) or "-"
        state = "" if d.live else " (stale)"
        pending = " (calibrating)" if d.calibration_pending else ""
        lines.append(
            f"  {d.name + state:<16} {d.speed:>6.3f} {reported:>9} {(d.speed_source or '-') + pending:<10} {d.threads:>7} "
            f"{_size(d.memory_total_bytes):>9}  {d.expected_compute_ms:>6.1f} ms  {held}"
        )
        if d.cpu_model:
            lines.append(f"  {'':<16} {d.cpu_model}, {d.cpu_count} core(s)")
    for m in listing.models:
        sized = ", ".join(f"{s:.2f}" for s in m.sized_for_speeds) or "not recorded"
        lines.append(
            f"model {m.model_name}: placed by {m.policy}, expected critical path {m.critical_path_ms:.1f} ms "
            f"(optimum {m.optimal_critical_path_ms:.1f} ms); sized for speeds {sized}; "
            + ("fleet matches" if m.fleet_matches else f"FLEET DOES NOT MATCH: {m.mismatch}")
        )
    return "\n".join(lines)

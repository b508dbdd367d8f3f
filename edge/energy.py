"""Energy of a piece of work on this machine: measured from RAPL where readable, else modelled.

Measured: Linux exposes Intel/AMD RAPL counters under ``/sys/class/powercap/intel-rapl:N``
(``energy_uj``, a cumulative microjoule counter per package that wraps at
``max_energy_range_uj``). We sum the top-level package domains (sub-domains such as
``intel-rapl:0:0`` are parts of their package and would count twice). The counters cover the
whole package, so on a shared machine the figure includes other processes' work.

Modelled (no readable counters: containers, VMs, ARM boards without RAPL): a linear CPU power
model, the usual first-order model of CPU power,

    energy_j = static_power_w * wall_s + active_power_per_core_w * cpu_s

where ``cpu_s`` is the user + system CPU time of this process over the work (time.process_time(); all its
threads together), so ``cpu_s / wall_s`` is the number of busy cores. ``static_power_w`` is the
idle power charged to the work while it runs (0 on a shared server, whose idle power is not the
job's; the board's idle power on a dedicated device). The presets below are rough, documented
figures; pass your own :class:`CpuPowerModel` (or a JSON file to ``coinfer profile
--power-model``) for a device you have measured.

Every reading says which it is: ``energy_source`` is ``"measured"`` or ``"modelled"``.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal, Protocol

from coinfer.core.errors import InvalidInput, NotFound

POWERCAP_ROOT = Path("/sys/class/powercap")


@dataclass(frozen=True)
class CpuPowerModel:
    """Linear CPU power model: static power plus a fixed power per busy core."""

    name: str
    """Short name of the preset or device."""
    static_power_w: float
    """Power charged to the work for every second it runs, whatever the load (idle share)."""
    active_power_per_core_w: float
    """Extra power of one fully busy core."""
    description: str = ""
    """Where the figures come from."""

    def __post_init__(self) -> None:
        for key in ("static_power_w", "active_power_per_core_w"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0 or value == float("inf"):
                raise InvalidInput(f"power model {self.name!r}: {key} must be a finite number >= 0, got {value!r}")

    def energy_j(self, wall_s: float, cpu_s: float) -> float:
        """Energy of work that took ``wall_s`` seconds and ``cpu_s`` CPU-seconds."""
        return self.static_power_w * wall_s + self.active_power_per_core_w * cpu_s


POWER_MODELS: dict[str, CpuPowerModel] = {
    "server-core": CpuPowerModel(
        "server-core",
        static_power_w=0.0,
        active_power_per_core_w=4.5,
        description="one core of a shared x86 server: about TDP / cores (e.g. 280 W / 64 cores of an "
        "AMD EPYC 7763 = 4.4 W); idle power is not charged to the job",
    ),
    "laptop-core": CpuPowerModel(
        "laptop-core",
        static_power_w=2.0,
        active_power_per_core_w=3.0,
        description="a 15 W-class laptop CPU: ~2 W package idle, ~3 W per busy core",
    ),
    "jetson-nano": CpuPowerModel(
        "jetson-nano",
        static_power_w=1.25,
        active_power_per_core_w=0.45,
        description="NVIDIA Jetson Nano CPU path in 5 W mode: ~1.25 W board idle, ~0.45 W per busy "
        "Cortex-A57 core (rough; the paper's measured GPU figures are in the built-in profiles)",
    ),
}
DEFAULT_POWER_MODEL = "server-core"


def load_power_model(name_or_path: str) -> CpuPowerModel:
    """A preset by name, or a JSON file with the :class:`CpuPowerModel` fields."""
    if name_or_path in POWER_MODELS:
        return POWER_MODELS[name_or_path]
    path = Path(name_or_path)
    if not path.is_file():
        raise NotFound(f"no power model {name_or_path!r}: not a preset ({', '.join(POWER_MODELS)}) and not a file")
    try:
        data = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInput(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise InvalidInput(f"{path}: a power model must be a JSON object")
    fields = {"name", "static_power_w", "active_power_per_core_w", "description"}
    unknown, missing = set(data) - fields, {"static_power_w", "active_power_per_core_w"} - set(data)
    if unknown or missing:
        raise InvalidInput(f"{path}: unknown fields {sorted(unknown)} / missing fields {sorted(missing)}; "
                           f"expected {sorted(fields)}")
    return CpuPowerModel(name=str(data.get("name", path.stem)), static_power_w=data["static_power_w"],
                         active_power_per_core_w=data["active_power_per_core_w"],
                         description=str(data.get("description", "")))


EnergySource = Literal["measured", "modelled"]


@dataclass(frozen=True)
class EnergyReading:
    """Energy and time of one measured span of work."""

    energy_j: float
    wall_s: float
    cpu_s: float
    """CPU time of this process over the span (user + system, all threads)."""
    energy_source: EnergySource

    @property
    def power_w(self) -> float:
        """Mean power over the span."""
        return self.energy_j / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def busy_cores(self) -> float:
        """CPU utilisation of this process, in cores."""
        return self.cpu_s / self.wall_s if self.wall_s > 0 else 0.0


@dataclass(frozen=True)
class RaplDomain:
    """One top-level RAPL package counter."""

    name: str
    energy_path: Path
    max_energy_range_uj: int

    def read_uj(self) -> int:
        return int(self.energy_path.read_text().strip())


def find_rapl_domains(root: Path = POWERCAP_ROOT) -> list[RaplDomain]:
    """Readable top-level RAPL package domains under ``root`` (empty where there are none)."""
    domains = []
    if not root.is_dir():
        return domains
    for folder in sorted(root.glob("intel-rapl:*")):
        if folder.name.count(":") != 1:  # "intel-rapl:0:1" is a sub-domain of package 0
            continue
        energy, max_range = folder / "energy_uj", folder / "max_energy_range_uj"
        try:
            domain = RaplDomain(folder.name, energy, int(max_range.read_text().strip()))
            domain.read_uj()  # readable now (recent kernels restrict it to root)
        except (OSError, ValueError):
            continue
        if domain.max_energy_range_uj > 0:
            domains.append(domain)
    return domains


def counter_delta_uj(before: int, after: int, max_energy_range_uj: int) -> int:
    """Energy between two readings of a counter that wraps to zero past ``max_energy_range_uj``."""
    if after >= before:
        return after - before
    return after + (max_energy_range_uj - before) + 1


class EnergyMeter(Protocol):
    """Something that can bracket a span of work and say what it cost."""

    energy_source: EnergySource

    def start(self) -> None: ...

    def stop(self) -> EnergyReading: ...


class _Span:
    """Wall clock and process CPU time between start() and stop()."""

    def __init__(self) -> None:
        self._t0 = self._cpu0 = 0.0

    def _cpu(self) -> float:
        # The process CPU clock (all threads, user + system) at nanosecond resolution: psutil's
        # tick-based times read 0 for a short window on a loaded machine.
        return time.process_time()

    def start(self) -> None:
        self._cpu0 = self._cpu()
        self._t0 = time.perf_counter()

    def elapsed(self) -> tuple[float, float]:
        return time.perf_counter() - self._t0, self._cpu() - self._cpu0


class RaplMeter(_Span):
    """Package energy from RAPL counters (wrap-around handled)."""

    energy_source: EnergySource = "measured"

    def __init__(self, domains: list[RaplDomain]) -> None:
        super().__init__()
        if not domains:
            raise NotFound("no readable RAPL energy counters")
        self.domains = domains
        self._before: list[int] = []

    def start(self) -> None:
        self._before = [d.read_uj() for d in self.domains]
        super().start()

    def stop(self) -> EnergyReading:
        wall_s, cpu_s = self.elapsed()
        after = [d.read_uj() for d in self.domains]
        # A counter can wrap at most once per span if spans stay short (tens of seconds at most).
        total_uj = sum(counter_delta_uj(b, a, d.max_energy_range_uj) for d, b, a in zip(self.domains, self._before, after))
        return EnergyReading(total_uj * 1e-6, wall_s, cpu_s, "measured")


class ModelledMeter(_Span):
    """Energy from process CPU time and a :class:`CpuPowerModel`."""

    energy_source: EnergySource = "modelled"

    def __init__(self, model: CpuPowerModel) -> None:
        super().__init__()
        self.model = model

    def stop(self) -> EnergyReading:
        wall_s, cpu_s = self.elapsed()
        return EnergyReading(self.model.energy_j(wall_s, cpu_s), wall_s, cpu_s, "modelled")


def make_meter(
    power_model: CpuPowerModel | None = None,
    powercap_root: Path = POWERCAP_ROOT,
    prefer: Literal["auto", "measured", "modelled"] = "auto",
) -> RaplMeter | ModelledMeter:
    """RAPL where readable (unless ``prefer="modelled"``), otherwise the power model.

    ``prefer="measured"`` raises NotFound when no counter is readable instead of falling back.
    """
    if prefer not in ("auto", "measured", "modelled"):
        raise InvalidInput(f"energy source must be auto, measured or modelled, got {prefer!r}")
    if prefer != "modelled":
        domains = find_rapl_domains(powercap_root)
        if domains:
            return RaplMeter(domains)
        if prefer == "measured":
            raise NotFound(f"no readable RAPL energy counters under {powercap_root}")
    return ModelledMeter(power_model or POWER_MODELS[DEFAULT_POWER_MODEL])


def describe_meter(meter: RaplMeter | ModelledMeter) -> dict:
    """JSON-ready description of where a meter's figures come from."""
    if isinstance(meter, RaplMeter):
        return {"energy_source": "measured", "rapl_domains": [d.name for d in meter.domains],
                "note": "whole-package energy; includes other processes on a shared machine"}
    return {"energy_source": "modelled", "power_model": asdict(meter.model),
            "formula": "static_power_w * wall_s + active_power_per_core_w * cpu_s (process CPU time)"}

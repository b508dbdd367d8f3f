"""CPU quotas for testbed devices: one cgroup per device, under cgroup v1 or v2, whichever the host has.

A device given ``cores`` (a fraction of one core, or several) gets its own cgroup named
``coinfer-tb-<prefix>-d<i>`` directly under the cpu controller's hierarchy:

- cgroup v1 (a ``cgroup`` mount with the ``cpu`` controller, e.g. ``/sys/fs/cgroup/cpu``):
  ``cpu.cfs_period_us`` and ``cpu.cfs_quota_us``;
- cgroup v2 (a ``cgroup2`` mount whose ``cgroup.controllers`` lists ``cpu``): ``cpu.max`` as
  "QUOTA PERIOD", with ``+cpu`` written to the root's ``cgroup.subtree_control`` first.

The period is 10 ms rather than the kernel's 100 ms default, so that a daemon's request of a
few milliseconds is slowed in proportion to its quota rather than run at full speed or held
for the rest of a long period. Processes enter a group by writing their pid to
``cgroup.procs`` (children inherit it). A group can only be removed once empty: `remove`
stops what is left in it first.
"""

from __future__ import annotations

import math
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Sequence

from coinfer.core.errors import FailedPrecondition, InvalidInput

PERIOD_US = 10_000
MIN_QUOTA_US = 1_000
"""The kernel refuses quotas below 1 ms: fractions under 0.1 core get a longer period."""
MAX_PERIOD_US = 1_000_000
MIN_CORES = 0.01
MOUNTS = Path("/proc/mounts")


@dataclass(frozen=True)
class CpuController:
    """Where this host's cpu controller lives."""

    version: Literal[1, 2]
    root: Path


@dataclass(frozen=True)
class GroupStatus:
    """What the kernel says about one device's group now."""

    path: str
    exists: bool
    cores: float | None
    """The quota over the period (None: no limit)."""
    usage_s: float | None
    """CPU time its processes used."""
    throttled_periods: int | None
    """Periods in which the quota ran out."""
    pids: list[int]


def find_cpu_controller(mounts: Path = MOUNTS) -> CpuController | None:
    """The host's cpu controller: a v1 hierarchy with ``cpu``, else a v2 mount offering ``cpu``."""
    try:
        lines = mounts.read_text().splitlines()
    except OSError:
        return None
    v2 = None
    for line in lines:
        fields = line.split()
        if len(fields) < 4:
            continue
        where, kind, options = Path(fields[1]), fields[2], fields[3].split(",")
        if kind == "cgroup" and "cpu" in options:
            return CpuController(1, where)
        if kind == "cgroup2" and v2 is None:
            try:
                if "cpu" in (where / "cgroup.controllers").read_text().split():
                    v2 = CpuController(2, where)
            except OSError:
                pass
    return v2


def missing_requirements() -> list[str]:
    """Why CPU quotas cannot be set here (empty when they can)."""
    missing = []
    if os.geteuid() != 0:
        missing.append("not running as root")
    controller = find_cpu_controller()
    if controller is None:
        missing.append("no cgroup hierarchy with the cpu controller is mounted")
    elif not os.access(controller.root, os.W_OK):
        missing.append(f"{controller.root} is not writable")
    return missing


def check_cores(cores: float, where: str) -> float:
    """``cores`` if it is a quota this machine can give, else InvalidInput saying why."""
    available = os.cpu_count() or 1
    if isinstance(cores, bool) or not isinstance(cores, (int, float)) or not math.isfinite(cores) or cores < MIN_CORES:
        raise InvalidInput(f"{where}: a CPU quota must be a number of cores >= {MIN_CORES:g}, got {cores!r}")
    if cores > available:
        raise InvalidInput(f"{where}: a CPU quota of {cores:g} cores is more than this machine's {available}")
    return float(cores)


def period_and_quota_us(cores: float) -> tuple[int, int]:
    """The scheduling period and the CPU time allowed in it for ``cores``."""
    period = min(max(PERIOD_US, math.ceil(MIN_QUOTA_US / cores)), MAX_PERIOD_US)
    return period, max(MIN_QUOTA_US, round(cores * period))


def group_name(prefix: str, device_i: int) -> str:
    return f"coinfer-tb-{prefix}-d{device_i}"


def _pattern(prefix: str) -> re.Pattern[str]:
    return re.compile(rf"^coinfer-tb-{re.escape(prefix)}-d\d+$")


def require_controller() -> CpuController:
    missing = missing_requirements()
    controller = find_cpu_controller()
    if missing or controller is None:
        raise FailedPrecondition("CPU quotas need root and a cgroup cpu controller: " + "; ".join(missing))
    return controller


def create(controller: CpuController, name: str, cores: float) -> Path:
    """Make (or reset) the group ``name`` holding its processes to ``cores``."""
    path = controller.root / name
    period, quota = period_and_quota_us(check_cores(cores, name))
    if controller.version == 2:
        control = controller.root / "cgroup.subtree_control"
        if "cpu" not in control.read_text().split():
            control.write_text("+cpu")
    path.mkdir(exist_ok=True)
    if controller.version == 1:
        # The quota first: a period shorter than an old quota would be refused.
        (path / "cpu.cfs_quota_us").write_text("-1")
        (path / "cpu.cfs_period_us").write_text(str(period))
        (path / "cpu.cfs_quota_us").write_text(str(quota))
    else:
        (path / "cpu.max").write_text(f"{quota} {period}")
    return path


def join_argv(path: str | Path, argv: Sequence[str]) -> list[str]:
    """``argv`` run by a shell that first moves itself into the group (so every child starts in it)."""
    return ["sh", "-c", 'echo $$ > "$0" && exec "$@"', str(Path(path) / "cgroup.procs"), *argv]


def add_process(path: str | Path, pid: int) -> None:
    (Path(path) / "cgroup.procs").write_text(str(pid))


def pids(path: str | Path) -> list[int]:
    try:
        return [int(tok) for tok in (Path(path) / "cgroup.procs").read_text().split()]
    except OSError:
        return []


def status(path: str | Path) -> GroupStatus:
    path = Path(path)
    if not path.is_dir():
        return GroupStatus(str(path), False, None, None, None, [])
    cores = usage = throttled = None
    if (path / "cpu.max").is_file():  # v2
        quota, period = (path / "cpu.max").read_text().split()
        cores = None if quota == "max" else int(quota) / int(period)
        stat = dict(line.split() for line in (path / "cpu.stat").read_text().splitlines() if line.strip())
        usage = int(stat.get("usage_usec", 0)) / 1e6
        throttled = int(stat.get("nr_throttled", 0))
    else:  # v1
        quota = int((path / "cpu.cfs_quota_us").read_text())
        cores = None if quota < 0 else quota / int((path / "cpu.cfs_period_us").read_text())
        stat = dict(line.split() for line in (path / "cpu.stat").read_text().splitlines() if line.strip())
        throttled = int(stat.get("nr_throttled", 0))
        usage_file = path / "cpuacct.usage"  # only where cpu and cpuacct share a hierarchy
        usage = int(usage_file.read_text()) / 1e9 if usage_file.is_file() else None
    return GroupStatus(str(path), True, cores, usage, throttled, pids(path))


def leftovers(controller: CpuController | None, prefix: str) -> list[Path]:
    """Groups named like this testbed's devices' (also when no state file lists them)."""
    if controller is None or not controller.root.is_dir():
        return []
    pattern = _pattern(prefix)
    return sorted(p for p in controller.root.iterdir() if p.is_dir() and pattern.match(p.name))


def remove(path: str | Path, terminate, timeout_s: float = 5.0) -> list[int]:
    """Stop the processes left in the group (with ``terminate(pids)``), then delete it; returns
    the pids stopped. A group that is already gone is fine."""
    path = Path(path)
    if not path.is_dir():
        return []
    stopped = terminate(pids(path)) if pids(path) else []
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            path.rmdir()
            return stopped
        except FileNotFoundError:
            return stopped
        except OSError as exc:  # EBUSY while the last processes exit
            if time.monotonic() > deadline:
                raise FailedPrecondition(f"cannot remove the CPU group {path}: {exc} (processes {pids(path)} remain)") from None
            time.sleep(0.05)

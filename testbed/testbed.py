"""A multi-device network on one Linux host: namespaces, veth pairs, shaped links, relays.

``Testbed.up(config)`` makes one server namespace and one namespace per device, joins each device
to the server by a veth pair (addresses in `config.py`), shapes each direction with an HTB class
and adds delay/loss with netem when the kernel has it; otherwise ``reach_server``/``reach_device``
put the testbed's own relay (`relay.py`) on the path. A device given a CPU quota gets its own
cgroup (`cgroups.py`). ``exec_in`` runs a command inside a device (in its namespace and, with a
quota, its cgroup), ``set_rate``/``set_power`` change a link's rate live, ``down`` removes
everything, the cgroups included.

Nothing is made on the host itself: the veths are created inside the namespaces, so deleting the
namespaces (after stopping the processes in them) removes every link and qdisc with them.
"""

from __future__ import annotations

import logging
import math
import os
import re
import select
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence

from coinfer.core.errors import FailedPrecondition, InvalidInput
from coinfer.testbed import cgroups, netns
from coinfer.testbed.channel import uplink_rate_bps
from coinfer.testbed.config import (
    DEFAULT_PREFIX,
    DEFAULT_STATE_DIR,
    DEVICE_IFACE,
    TestbedConfig,
    server_iface,
)
from coinfer.testbed.state import (
    DelayMechanism,
    Direction,
    RelayRecord,
    TestbedState,
    locked,
    read_state,
    remove_state,
    state_path,
    write_state,
)

log = logging.getLogger(__name__)

RELAY_START_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class Endpoint:
    """A host and port to dial."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass
class DeviceStatus:
    """One device as `status` sees it."""

    index: int
    namespace: str
    address: str
    """The device's own address."""
    gateway: str
    """The server end of its veth (where its relays listen)."""
    uplink_bps: float
    """Rate the testbed last set for device -> server."""
    downlink_bps: float
    """Rate the testbed last set for server -> device."""
    delay_ms: float
    loss_pct: float
    live_uplink: str | None
    """Uplink HTB rate as the kernel reports it now (None: no shaping found)."""
    live_downlink: str | None
    """Downlink HTB rate as the kernel reports it now."""
    uplink_qdiscs: list[str]
    """Qdisc kinds on the device's veth (e.g. ['htb', 'netem'])."""
    cpu_cores: float | None = None
    """CPU quota asked for (None: none)."""
    cpu_group: cgroups.GroupStatus | None = None
    """Its cgroup as the kernel reports it now."""


@dataclass
class RelayStatus:
    device: int
    toward: str
    listen: str
    target: str
    pid: int
    alive: bool


@dataclass
class TestbedStatus:
    """What `coinfer testbed status` prints."""

    __test__ = False

    prefix: str
    phase: Literal["up", "starting", "down"]
    """'down' when no state file exists ('leftovers' may still list namespaces)."""
    delay_mechanism: DelayMechanism | None
    """'netem' (kernel qdisc), 'relay' (the testbed's TCP relay) or 'none' (no delay or loss asked)."""
    server_namespace: str | None
    server_address: str | None
    devices: list[DeviceStatus] = field(default_factory=list)
    relays: list[RelayStatus] = field(default_factory=list)
    leftovers: list[str] = field(default_factory=list)
    """Namespaces named like this testbed's that its state file does not list."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class DownReport:
    """What `down` removed."""

    prefix: str
    namespaces_removed: list[str]
    processes_stopped: list[int]
    state_file_removed: bool
    cgroups_removed: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _leftover_pattern(prefix: str) -> re.Pattern[str]:
    return re.compile(rf"^{re.escape(prefix)}-(srv|d\d+)$")


class Testbed:
    """A running testbed; make one with :meth:`up` or :meth:`attach`, remove it with :meth:`down`."""

    __test__ = False

    def __init__(self, state: TestbedState) -> None:
        self._state = state

    # Life cycle --------------------------------------------------------------------------------

    @classmethod
    def up(cls, config: TestbedConfig) -> "Testbed":
        """Create the namespaces, links and shaping of ``config``; on any failure remove it all."""
        config.validate()
        netns.require_tools()
        controller = cgroups.require_controller() if config.cpu_cores else None
        with locked(config.prefix, config.state_dir):
            existing = [ns for ns in netns.list_namespaces() if _leftover_pattern(config.prefix).match(ns)]
            if state_path(config.prefix, config.state_dir).exists() or existing:
                raise FailedPrecondition(
                    f"testbed {config.prefix!r} is already up or left over "
                    f"({', '.join(existing) or config.state_path}); run `coinfer testbed down --prefix {config.prefix}`"
                )
            # Intent first: from here on a crash leaves a state file naming everything that may exist.
            state = TestbedState(config=config, namespaces=config.namespaces)
            if controller is not None:
                state.cgroups = [str(controller.root / cgroups.group_name(config.prefix, i)) for i in range(config.num_devices)]
            write_state(state)
        try:
            cls._build(state)
        except BaseException:
            cls.teardown(config.prefix, config.state_dir)
            raise
        return cls(state)

    @staticmethod
    def _build(state: TestbedState) -> None:
        c = state.config
        srv = c.server_namespace
        netns.add_namespace(srv)
        netns.link_up(srv, "lo")
        netns.add_address(srv, "lo", f"{c.server_address}/32")
        controller = cgroups.find_cpu_controller() if c.cpu_cores else None
        for i, cores in enumerate(c.cpu_cores):
            cgroups.create(controller, Path(state.cgroups[i]).name, cores)
        impaired = any(link.impaired for link in c.links)
        if not impaired:
            mechanism: DelayMechanism = "none"
        else:
            mechanism = "netem" if netns.netem_available(srv) else "relay"
        for i, link in enumerate(c.links):
            dev = c.device_namespace(i)
            netns.add_namespace(dev)
            netns.link_up(dev, "lo")
            netns.add_veth(srv, server_iface(i), dev, DEVICE_IFACE)
            netns.add_address(srv, server_iface(i), f"{c.gateway_address(i)}/30")
            netns.add_address(dev, DEVICE_IFACE, f"{c.device_address(i)}/30")
            for ns, iface in ((srv, server_iface(i)), (dev, DEVICE_IFACE)):
                if not netns.one_segment_per_packet(ns, iface):
                    log.warning("%s/%s keeps GSO: short transfers after an idle gap will beat the shaped rate",
                                ns, iface)
                netns.link_up(ns, iface)
            netns.add_default_route(dev, c.gateway_address(i))
            impairment = (netns.Impairment(link.delay_ms, link.loss_pct)
                          if mechanism == "netem" and link.impaired else None)
            netns.shape(dev, DEVICE_IFACE, link.uplink_bps, impairment)
            netns.shape(srv, server_iface(i), link.downlink_bps, impairment)
            state.rates_bps[str(i)] = {"up": link.uplink_bps, "down": link.downlink_bps}
        with locked(c.prefix, c.state_dir):
            state.delay_mechanism = mechanism
            state.namespace_inodes = {ns: ino for ns in c.namespaces if (ino := netns.namespace_inode(ns))}
            state.phase = "up"
            write_state(state)

    @classmethod
    def attach(cls, prefix: str = DEFAULT_PREFIX, state_dir: Path = DEFAULT_STATE_DIR) -> "Testbed":
        """The testbed made earlier (by this or another process) under ``prefix``."""
        state = read_state(prefix, state_dir)
        if state.phase != "up":
            raise FailedPrecondition(f"testbed {prefix!r} is still starting (or its start crashed); run down and up again")
        return cls(state)

    def down(self) -> DownReport:
        """Stop every process in the testbed's namespaces and delete them; safe to repeat."""
        return self.teardown(self.config.prefix, self.config.state_dir)

    @staticmethod
    def teardown(prefix: str = DEFAULT_PREFIX, state_dir: Path = DEFAULT_STATE_DIR) -> DownReport:
        """Remove what the state file records plus any namespace named like this testbed's.

        Works without a state file, with a half-written one, and after a crash at any point of
        `up`; running it twice is harmless.
        """
        netns.require_tools()
        with locked(prefix, state_dir):
            try:
                state: TestbedState | None = read_state(prefix, state_dir)
            except (FileNotFoundError, LookupError, InvalidInput):
                state = None
            pattern = _leftover_pattern(prefix)
            mounted = [ns for ns in netns.list_namespaces() if pattern.match(ns)]
            names = sorted(set(mounted) | set(state.namespaces if state else []))
            inodes = set(state.namespace_inodes.values()) if state else set()
            inodes |= {ino for ns in mounted if (ino := netns.namespace_inode(ns))}

            # Processes first: a namespace outlives its mount while a process is inside it.
            pids: set[int] = set()
            for ns in mounted:
                pids.update(netns.namespace_pids(ns))
            for ino in inodes:
                pids.update(netns.pids_in_namespace_inode(ino))
            for relay in state.relays if state else []:
                if netns.process_start_ticks(relay.pid) == relay.start_ticks:
                    pids.add(relay.pid)
            pids.discard(os.getpid())
            stopped = netns.terminate(sorted(pids))

            for ns in mounted:
                netns.delete_namespace(ns)
            for relay in state.relays if state else []:
                Path(relay.log_path).unlink(missing_ok=True)
            # The CPU groups last: they are only removable once empty; one a crash left behind is
            # found by its name.
            groups = sorted(set(state.cgroups if state else []) | {str(p) for p in cgroups.leftovers(cgroups.find_cpu_controller(), prefix)})
            removed_groups = []
            for group in groups:
                if Path(group).is_dir():
                    stopped += cgroups.remove(group, netns.terminate)
                    removed_groups.append(group)
            removed_state = remove_state(prefix, state_dir)
        return DownReport(prefix, [ns for ns in names if ns in mounted], stopped, removed_state, removed_groups)

    def __enter__(self) -> "Testbed":
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

    # Names and addresses -----------------------------------------------------------------------

    @property
    def config(self) -> TestbedConfig:
        return self._state.config

    @property
    def num_devices(self) -> int:
        return self.config.num_devices

    @property
    def delay_mechanism(self) -> DelayMechanism:
        """'netem', 'relay' or 'none' (see TestbedStatus)."""
        return self._state.delay_mechanism

    @property
    def server_address(self) -> str:
        """Where every device reaches the server (inside the server namespace)."""
        return self.config.server_address

    @property
    def server_namespace(self) -> str:
        return self.config.server_namespace

    def _check_device(self, device_i: int) -> None:
        if not (isinstance(device_i, int) and 0 <= device_i < self.num_devices):
            raise InvalidInput(f"device index must be in [0, {self.num_devices}), got {device_i!r}")

    def device_address(self, device_i: int) -> str:
        self._check_device(device_i)
        return self.config.device_address(device_i)

    def gateway_address(self, device_i: int) -> str:
        self._check_device(device_i)
        return self.config.gateway_address(device_i)

    def namespace(self, device_i: int) -> str:
        self._check_device(device_i)
        return self.config.device_namespace(device_i)

    # Running things inside ---------------------------------------------------------------------

    def cpu_group(self, device_i: int) -> str | None:
        """Device i's cgroup (None when it has no CPU quota)."""
        self._check_device(device_i)
        return self._state.cgroups[device_i] if self._state.cgroups else None

    def device_argv(self, device_i: int, argv: Sequence[str]) -> list[str]:
        """``argv`` as it runs inside device i: in its namespace and, with a quota, its cgroup."""
        inside = ["ip", "netns", "exec", self.namespace(device_i), *argv]
        group = self.cpu_group(device_i)
        return cgroups.join_argv(group, inside) if group else inside

    def exec_in(self, device_i: int, argv: Sequence[str], **popen_kwargs: Any) -> subprocess.Popen:
        """Start ``argv`` inside device i's namespace (its only route leads to the server) and CPU quota."""
        return subprocess.Popen(self.device_argv(device_i, argv), **popen_kwargs)

    def exec_in_server(self, argv: Sequence[str], **popen_kwargs: Any) -> subprocess.Popen:
        """Start ``argv`` inside the server namespace (the coordinator's side)."""
        return subprocess.Popen(["ip", "netns", "exec", self.server_namespace, *argv], **popen_kwargs)

    # Rates -------------------------------------------------------------------------------------

    def set_rate(self, device_i: int, rate_bps: float, direction: Direction = "up") -> None:
        """Change device i's shaped rate now ('up': device -> server, 'down': server -> device)."""
        self._check_device(device_i)
        if direction not in ("up", "down"):
            raise InvalidInput(f"direction must be 'up' or 'down', got {direction!r}")
        if not (math.isfinite(rate_bps) and rate_bps >= self.config.min_rate_bps):
            raise InvalidInput(f"rate_bps must be >= {self.config.min_rate_bps:g} (min_rate_bps), got {rate_bps!r}")
        if direction == "up":
            netns.change_rate(self.namespace(device_i), DEVICE_IFACE, rate_bps)
        else:
            netns.change_rate(self.server_namespace, server_iface(device_i), rate_bps)
        self._update(lambda s: s.rates_bps.setdefault(str(device_i), {}).__setitem__(direction, float(rate_bps)))

    def rate_bps(self, device_i: int, direction: Direction = "up") -> float:
        """The rate the testbed last set for device i in ``direction``."""
        self._check_device(device_i)
        return self._state.rates_bps[str(device_i)][direction]

    def rate_for_power(self, device_i: int, power_w: float, interference_w: float = 0.0) -> float:
        """Uplink rate of device i at ``power_w`` from the simulator's channel model (before the floor)."""
        self._check_device(device_i)
        return uplink_rate_bps(power_w, self.config.links[device_i].distance_m, self.config.radio, interference_w)

    def set_power(self, device_i: int, power_w: float, interference_w: float = 0.0) -> float:
        """Shape device i's uplink to the rate ``power_w`` gives; returns the rate set (floored at min_rate_bps)."""
        rate = max(self.rate_for_power(device_i, power_w, interference_w), self.config.min_rate_bps)
        self.set_rate(device_i, rate, "up")
        return rate

    # Paths with delay and loss -----------------------------------------------------------------

    def _relayed(self, device_i: int) -> bool:
        return self.delay_mechanism == "relay" and self.config.links[device_i].impaired

    def reach_server(self, device_i: int, port: int) -> Endpoint:
        """What device i dials to reach a server-side service on ``port`` (at server_address).

        Direct when netem (or nothing) applies; through a relay on the device's gateway otherwise.
        """
        self._check_device(device_i)
        target = Endpoint(self.server_address, _port(port))
        if not self._relayed(device_i):
            return target
        return self._relay(device_i, "server", Endpoint(self.gateway_address(device_i), target.port), target)

    def reach_device(self, device_i: int, port: int) -> Endpoint:
        """What the server side dials to reach a service listening on device i's ``port``."""
        self._check_device(device_i)
        target = Endpoint(self.device_address(device_i), _port(port))
        if not self._relayed(device_i):
            return target
        return self._relay(device_i, "device", Endpoint(self.gateway_address(device_i), 0), target)

    def _relay(self, device_i: int, toward: Literal["server", "device"], listen: Endpoint,
               target: Endpoint) -> Endpoint:
        for r in self._state.relays:
            if r.device == device_i and r.toward == toward and r.target == str(target):
                host, _, port = r.listen.rpartition(":")
                return Endpoint(host, int(port))
        c, link = self.config, self.config.links[device_i]
        log_path = Path(c.state_dir) / f"{c.prefix}-relay-d{device_i}-{toward}-{target.port}.log"
        argv = [sys.executable, "-m", "coinfer.testbed.relay", "--listen", str(listen),
                "--target", str(target), "--delay-ms", f"{link.delay_ms:g}", "--loss-pct", f"{link.loss_pct:g}",
                "--rto-ms", f"{c.relay_rto_ms:g}", "--seed", str(c.seed + 2 * device_i + (toward == "device"))]
        with open(log_path, "ab") as log:
            # Its own session: the relay must outlive the process that started it (e.g. `testbed up`).
            proc = self.exec_in_server(argv, stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL,
                                       start_new_session=True)
        bound = _read_ready(proc, RELAY_START_TIMEOUT_S)
        if bound is None:
            netns.terminate([proc.pid])
            tail = log_path.read_text(errors="replace")[-500:].strip()
            raise FailedPrecondition(f"relay for device {device_i} ({listen} -> {target}) did not start: {tail}")
        record = RelayRecord(device_i, toward, proc.pid, netns.process_start_ticks(proc.pid) or 0, str(bound),
                             str(target), str(log_path))
        self._update(lambda s: s.relays.append(record))
        return bound

    def _update(self, change: Any) -> None:
        """Apply ``change(state)`` to the freshest state file under the lock (other processes write too)."""
        with locked(self.config.prefix, self.config.state_dir):
            try:
                state = read_state(self.config.prefix, self.config.state_dir)
            except LookupError:
                raise FailedPrecondition(f"testbed {self.config.prefix!r} is down") from None
            change(state)
            write_state(state)
            self._state = state

    # Status ------------------------------------------------------------------------------------

    def status(self) -> TestbedStatus:
        return self.inspect(self.config.prefix, self.config.state_dir)

    @staticmethod
    def inspect(prefix: str = DEFAULT_PREFIX, state_dir: Path = DEFAULT_STATE_DIR) -> TestbedStatus:
        """What exists now under ``prefix``: the recorded testbed, its live rates, its leftovers."""
        mounted = [ns for ns in netns.list_namespaces() if _leftover_pattern(prefix).match(ns)]
        try:
            state = read_state(prefix, state_dir)
        except LookupError:
            return TestbedStatus(prefix, "down", None, None, None, leftovers=mounted)
        c = state.config
        devices = []
        for i, link in enumerate(c.links):
            ns, rates = c.device_namespace(i), state.rates_bps.get(str(i), {})
            devices.append(DeviceStatus(
                index=i, namespace=ns, address=c.device_address(i), gateway=c.gateway_address(i),
                uplink_bps=rates.get("up", link.uplink_bps), downlink_bps=rates.get("down", link.downlink_bps),
                delay_ms=link.delay_ms, loss_pct=link.loss_pct,
                live_uplink=netns.shaped_rate_text(ns, DEVICE_IFACE) if ns in mounted else None,
                live_downlink=(netns.shaped_rate_text(c.server_namespace, server_iface(i))
                               if c.server_namespace in mounted else None),
                uplink_qdiscs=netns.qdisc_kinds(ns, DEVICE_IFACE) if ns in mounted else [],
                cpu_cores=c.cpu_cores[i] if c.cpu_cores else None,
                cpu_group=cgroups.status(state.cgroups[i]) if state.cgroups else None,
            ))
        relays = [RelayStatus(r.device, r.toward, r.listen, r.target, r.pid,
                              netns.process_start_ticks(r.pid) == r.start_ticks) for r in state.relays]
        return TestbedStatus(prefix, state.phase, state.delay_mechanism, c.server_namespace, c.server_address,
                             devices, relays, leftovers=[ns for ns in mounted if ns not in state.namespaces])


def _port(port: int) -> int:
    if not (isinstance(port, int) and 0 < port < 65536):
        raise InvalidInput(f"port must be in 1..65535, got {port!r}")
    return port


def _read_ready(proc: subprocess.Popen, timeout_s: float) -> Endpoint | None:
    """The address a relay printed in its READY line, or None if it exited or stayed silent."""
    # Imported here: the package must not import the relay module, which runs with `python -m`.
    from coinfer.testbed.relay import READY_PREFIX

    assert proc.stdout is not None  # internal: we always start relays with stdout=PIPE
    deadline = time.monotonic() + timeout_s
    buf = b""
    try:
        while b"\n" not in buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([proc.stdout], [], [], left)[0]:
                return None
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                return None
            buf += chunk
    finally:
        proc.stdout.close()
    line = buf.split(b"\n", 1)[0].decode(errors="replace")
    if not line.startswith(READY_PREFIX):
        return None
    host, _, port = line[len(READY_PREFIX):].rpartition(":")
    return Endpoint(host, int(port))

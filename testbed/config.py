"""What a testbed is made of: the devices, their links, names and addresses.

Every address lives inside a network namespace the testbed creates, so nothing is added to the
host's own routing table. Inside a ``/16`` private subnet (``10.77.0.0/16`` by default):

- the server answers on ``<net>.0.1`` (on the server namespace's loopback),
- device ``i`` is joined to the server by its own veth pair carrying the ``/30``
  ``<net>.<i+1>.0``: the server end is ``<net>.<i+1>.1`` (the device's gateway), the device
  end ``<net>.<i+1>.2``.

Devices reach each other only through the server namespace, which does not forward, so device
traffic always goes to the server, like phones on a cell.

A device may also be given a CPU quota (``cpu_cores``, fractions of a core): whatever runs in it
through the testbed then runs in its own cgroup (`cgroups.py`), so devices differ in compute as
well as in their links.
"""

from __future__ import annotations

import ipaddress
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from coinfer.core.errors import InvalidInput
from coinfer.testbed.channel import RadioConfig

DEFAULT_STATE_DIR = Path("/run/coinfer-testbed")
DEFAULT_PREFIX = "coinfer"
MAX_DEVICES = 250

# Namespace names are `<prefix>-srv` and `<prefix>-d<i>`; the prefix must leave room for them in
# the 15-character interface-name world and be safe as a file name.
_PREFIX_RE = re.compile(r"^[a-z][a-z0-9]{0,15}(-[a-z0-9]{1,15}){0,3}$")


@dataclass(frozen=True)
class LinkConfig:
    """The shaped link between one device and the server."""

    uplink_bps: float = 8e6
    """Rate from the device to the server (bits per second), shaped on the device's veth."""
    downlink_bps: float = 8e6
    """Rate from the server to the device (bits per second), shaped on the server's veth."""
    delay_ms: float = 0.0
    """One-way delay added in each direction (the round trip gains twice this)."""
    loss_pct: float = 0.0
    """Packet loss in percent, each direction (netem) or as retransmission stalls (relay)."""
    distance_m: float = 50.0
    """Distance to the server used to turn a transmit power into a rate (channel model)."""

    def validate(self, where: str) -> None:
        for name in ("uplink_bps", "downlink_bps", "distance_m"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise InvalidInput(f"{where}: {name} must be a finite number > 0, got {value!r}")
        if not (math.isfinite(self.delay_ms) and 0 <= self.delay_ms <= 10_000):
            raise InvalidInput(f"{where}: delay_ms must be in [0, 10000], got {self.delay_ms!r}")
        if not (math.isfinite(self.loss_pct) and 0 <= self.loss_pct < 100):
            raise InvalidInput(f"{where}: loss_pct must be in [0, 100), got {self.loss_pct!r}")

    @property
    def impaired(self) -> bool:
        """Whether this link needs delay or loss on top of its rate."""
        return self.delay_ms > 0 or self.loss_pct > 0


@dataclass(frozen=True)
class TestbedConfig:
    """A testbed: N devices, one link each, under one name prefix."""

    __test__ = False  # not a pytest test class despite the name

    links: tuple[LinkConfig, ...]
    """One link per device, in device order (device i has links[i])."""
    prefix: str = DEFAULT_PREFIX
    """Name prefix of every namespace (`<prefix>-srv`, `<prefix>-d<i>`) and of the state file."""
    subnet: str = "10.77.0.0/16"
    """Private /16 that every testbed address is taken from (inside the testbed's namespaces)."""
    state_dir: Path = DEFAULT_STATE_DIR
    """Folder of the state file `<prefix>.json` that records what was made, for `down`."""
    relay_rto_ms: float = 200.0
    """Relay only: how long a lost segment stalls its stream (Linux's minimum TCP RTO)."""
    min_rate_bps: float = 8000.0
    """Floor applied when a transmit power maps to a lower rate (a shaper cannot send at 0)."""
    seed: int = 0
    """Seed of the relays' loss draws (relay i uses seed + i)."""
    radio: RadioConfig = RadioConfig()
    """Channel model used by `Testbed.set_power` to turn a transmit power into an uplink rate."""
    cpu_cores: tuple[float, ...] = ()
    """CPU quota of each device in cores (device order); empty = no quota."""

    @property
    def num_devices(self) -> int:
        return len(self.links)

    def validate(self) -> None:
        if not _PREFIX_RE.match(self.prefix) or len(self.prefix) > 24:
            raise InvalidInput(
                f"testbed prefix {self.prefix!r} must be lower-case letters, digits and '-', "
                "start with a letter and be at most 24 characters"
            )
        if not 1 <= self.num_devices <= MAX_DEVICES:
            raise InvalidInput(f"a testbed has 1 to {MAX_DEVICES} devices, got {self.num_devices}")
        for i, link in enumerate(self.links):
            link.validate(f"device {i}")
        if self.cpu_cores:
            from coinfer.testbed.cgroups import check_cores

            if len(self.cpu_cores) != self.num_devices:
                raise InvalidInput(f"cpu_cores gives {len(self.cpu_cores)} quotas for {self.num_devices} devices")
            for i, cores in enumerate(self.cpu_cores):
                check_cores(cores, f"device {i}")
        try:
            net = ipaddress.IPv4Network(self.subnet)
        except ValueError as exc:
            raise InvalidInput(f"testbed subnet {self.subnet!r} is not an IPv4 network: {exc}") from None
        if net.prefixlen != 16 or not net.is_private:
            raise InvalidInput(f"testbed subnet must be a private /16 such as 10.77.0.0/16, got {self.subnet}")
        if not (math.isfinite(self.relay_rto_ms) and self.relay_rto_ms >= 0):
            raise InvalidInput(f"relay_rto_ms must be >= 0, got {self.relay_rto_ms!r}")
        if not (math.isfinite(self.min_rate_bps) and self.min_rate_bps >= 1000):
            raise InvalidInput(f"min_rate_bps must be >= 1000, got {self.min_rate_bps!r}")
        self.radio.validate()

    # Names and addresses ----------------------------------------------------------------------

    @property
    def server_namespace(self) -> str:
        return f"{self.prefix}-srv"

    def device_namespace(self, device_i: int) -> str:
        return f"{self.prefix}-d{device_i}"

    @property
    def namespaces(self) -> list[str]:
        return [self.server_namespace] + [self.device_namespace(i) for i in range(self.num_devices)]

    @property
    def state_path(self) -> Path:
        return Path(self.state_dir) / f"{self.prefix}.json"

    def _host(self, third: int, fourth: int) -> str:
        base = ipaddress.IPv4Network(self.subnet).network_address
        return str(base + third * 256 + fourth)

    @property
    def server_address(self) -> str:
        return self._host(0, 1)

    def gateway_address(self, device_i: int) -> str:
        """The server end of device i's veth pair."""
        return self._host(device_i + 1, 1)

    def device_address(self, device_i: int) -> str:
        return self._host(device_i + 1, 2)


# The veth ends: `dev<i>` in the server namespace, `eth0` in each device namespace.
DEVICE_IFACE = "eth0"


def server_iface(device_i: int) -> str:
    return f"dev{device_i}"


def per_device(values: Sequence[float] | None, num_devices: int, name: str, default: float) -> list[float]:
    """One value per device from a list of N values, or one value for all, or the default."""
    if not values:
        return [default] * num_devices
    if len(values) == 1:
        return [float(values[0])] * num_devices
    if len(values) != num_devices:
        raise InvalidInput(f"{name} needs 1 or {num_devices} values (one per device), got {len(values)}")
    return [float(v) for v in values]


def make_config(
    num_devices: int,
    *,
    uplink_mbit: Sequence[float] | None = None,
    downlink_mbit: Sequence[float] | None = None,
    delay_ms: Sequence[float] | None = None,
    loss_pct: Sequence[float] | None = None,
    distance_m: Sequence[float] | None = None,
    cpu_cores: Sequence[float] | None = None,
    **options: object,
) -> TestbedConfig:
    """A validated config from per-device lists (each: N values, one value for all, or None)."""
    if num_devices < 1:
        raise InvalidInput(f"a testbed needs at least 1 device, got {num_devices}")
    up = per_device(uplink_mbit, num_devices, "uplink bandwidth", 8.0)
    down = per_device(downlink_mbit, num_devices, "downlink bandwidth", 8.0)
    delay = per_device(delay_ms, num_devices, "delay_ms", 0.0)
    loss = per_device(loss_pct, num_devices, "loss_pct", 0.0)
    dist = per_device(distance_m, num_devices, "distance_m", 50.0)
    links = tuple(
        LinkConfig(uplink_bps=up[i] * 1e6, downlink_bps=down[i] * 1e6, delay_ms=delay[i], loss_pct=loss[i],
                   distance_m=dist[i])
        for i in range(num_devices)
    )
    cpu = tuple(per_device(cpu_cores, num_devices, "cpu_cores", 0.0)) if cpu_cores else ()
    config = TestbedConfig(links=links, cpu_cores=cpu, **options)  # type: ignore[arg-type]
    config.validate()
    return config


__all__ = [
    "DEFAULT_PREFIX",
    "DEFAULT_STATE_DIR",
    "DEVICE_IFACE",
    "LinkConfig",
    "TestbedConfig",
    "make_config",
    "per_device",
    "server_iface",
]

"""Links that follow the scheduler: the transmit power it picks sets the device's uplink rate.

On loopback or a wired network a transmit power changes nothing, so the scheduler's power only
enters the energy accounting. On the testbed (`coinfer.testbed`) each device has its own
shaped link, and `TestbedLinkShaper` turns every slot's powers into uplink rates with the
simulator's channel model (Shannon's formula with path loss, `testbed/channel.py`), so a lower
power gives a slower upload, as it does in the simulator.

Interference follows the simulator (`coinfer.rl.sim.channel.uplink_rates_bps`): the received
power of the other devices on the same sub-channel that are uploading. Live, a device counts as
uploading when its last load report shows requests waiting on an offload.

The scheduler calls ``apply`` once per slot. Shaping is a side effect of scheduling: a failure
is logged and the slot goes on (see `Scheduler.step`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, Sequence

if TYPE_CHECKING:
    from coinfer.testbed import Testbed

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LinkDecision:
    """One scheduled device's decision, as a link shaper needs it."""

    name: str
    """The name the device registered with."""
    address: str
    """The host:port it advertised (a testbed device advertises its own address or its relay's)."""
    sub_channel: int
    power_w: float
    """Transmit power the scheduler picked for it."""
    uploading: bool
    """Whether its last load report showed requests waiting on an offload (it interferes)."""


class LinkShaper(Protocol):
    """Applies each slot's decisions to the devices' links."""

    def apply(self, decisions: Sequence[LinkDecision]) -> None:
        """Shape the links for this slot (called from the scheduler's thread)."""
        ...


class NoLinkShaper:
    """The default: links are what they are (loopback, wired, or a radio the device drives)."""

    def apply(self, decisions: Sequence[LinkDecision]) -> None:
        return None


def received_power_w(power_w: float, distance_m: float, path_loss_exponent: float) -> float:
    """Power the server receives from a device at ``distance_m`` (pure path-loss gain d^-alpha)."""
    return max(power_w, 0.0) * distance_m ** (-path_loss_exponent)


class TestbedLinkShaper:
    """Sets each testbed device's uplink rate from its scheduled power (and its sub-channel's interference).

    Devices are matched to testbed indices by the host they advertised: device i's own address
    (``<net>.<i+1>.2``) or its gateway (``<net>.<i+1>.1``, where its relays listen), both derived
    from the config in the testbed's state file; a device registered under its namespace's name
    (``<prefix>-d<i>``) matches too. Unmatched devices are skipped with one warning each.
    A rate is changed only when the power or the interference behind it changed.
    """

    __test__ = False  # not a pytest test class despite the name

    def __init__(self, testbed: "Testbed") -> None:
        self.testbed = testbed
        c = testbed.config
        self._by_host = {c.device_address(i): i for i in range(c.num_devices)}
        self._by_host.update({c.gateway_address(i): i for i in range(c.num_devices)})
        self._by_name = {c.device_namespace(i): i for i in range(c.num_devices)}
        self._applied: dict[int, tuple[float, float]] = {}
        self._warned: set[str] = set()
        self._errors: dict[int, str] = {}
        self.rates_bps: dict[int, float] = {}
        """The uplink rate last set per device index."""

    @classmethod
    def attach(cls, prefix: str, state_dir: Path | None = None) -> "TestbedLinkShaper":
        """A shaper for the testbed that `coinfer testbed up --prefix PREFIX` made (FailedPrecondition/NotFound if none)."""
        from coinfer.testbed import Testbed
        from coinfer.testbed.config import DEFAULT_STATE_DIR

        return cls(Testbed.attach(prefix, state_dir if state_dir is not None else DEFAULT_STATE_DIR))

    def device_index(self, decision: LinkDecision) -> int | None:
        """The testbed index of the device, or None when it is not on this testbed."""
        host = decision.address.rpartition(":")[0].strip("[]") if ":" in decision.address else decision.address
        index = self._by_host.get(host)
        return index if index is not None else self._by_name.get(decision.name)

    def apply(self, decisions: Sequence[LinkDecision]) -> None:
        c = self.testbed.config
        mapped: list[tuple[LinkDecision, int]] = []
        for d in decisions:
            index = self.device_index(d)
            if index is None:
                if d.name not in self._warned:
                    self._warned.add(d.name)
                    log.warning("device %r (%s) is not on testbed %r; its link is not shaped", d.name, d.address, c.prefix)
                continue
            mapped.append((d, index))
        alpha = c.radio.path_loss_exponent
        received = [received_power_w(d.power_w, c.links[i].distance_m, alpha) if d.uploading else 0.0 for d, i in mapped]
        for n, (d, i) in enumerate(mapped):
            interference_w = sum(r for m, r in enumerate(received) if m != n and mapped[m][0].sub_channel == d.sub_channel)
            key = (d.power_w, interference_w)
            if self._applied.get(i) == key:
                continue
            try:
                if d.power_w > 0:
                    rate = self.testbed.set_power(i, d.power_w, interference_w)
                else:  # not transmitting: the slowest rate the shaper allows
                    rate = c.min_rate_bps
                    self.testbed.set_rate(i, rate, "up")
            except Exception as exc:  # noqa: BLE001 - one device's link must not stop the others'
                # Retried every slot: say it once per distinct error, not twice a second.
                level = logging.DEBUG if self._errors.get(i) == str(exc) else logging.WARNING
                self._errors[i] = str(exc)
                log.log(level, "could not shape device %r (testbed device %d) for %.3g W: %s", d.name, i, d.power_w, exc)
                continue
            self._errors.pop(i, None)
            previous = self._applied.get(i)
            self._applied[i] = key
            self.rates_bps[i] = rate
            # Interference alone can flip every slot under load: only power changes are news.
            level = logging.INFO if previous is None or previous[0] != d.power_w else logging.DEBUG
            log.log(level, "testbed %s: device %r (d%d) uplink %.3g Mbit/s at %.3g W, interference %.3g W",
                     c.prefix, d.name, i, rate / 1e6, d.power_w, interference_w)

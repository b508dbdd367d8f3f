"""Live scheduling: every slot, observe the devices, run the policy, hand out the decisions.

The policy is a trained MAHPPO policy file or a named baseline (`coinfer.rl.policy.make_policy`)
acting on a scenario: the scenario fixes the number of agent slots, the split points, the
sub-channels and the power ranges the policy was built for. Live devices fill the slots in
registration order (extra devices keep their first decision); the observation is built in the
simulator's layout (`observation.py`). Each device's decision reaches it in its next heartbeat
response, whose interval is shortened to one slot, and the device applies it from its next
request, as in the simulator.

Transmit power: on a wired or loopback link the power cannot change the link, so it only
enters the energy accounting (each device reports power x upload time); on a radio link a
device daemon would hand it to its driver. Every slot's decisions also go to a link shaper
(`link_shaper.py`): none by default; on the testbed (``coinfer serve --testbed PREFIX``) it sets
each device's uplink rate from its power with the simulator's channel model.

Every slot's decisions are logged (INFO when one changes, and as JSON lines with
``decision_log``) and exported as metrics.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from coinfer.core.errors import FailedPrecondition, InvalidInput
from coinfer.server.coordinator import Coordinator
from coinfer.server.link_shaper import LinkDecision, LinkShaper, NoLinkShaper
from coinfer.server.observation import LiveDeviceState, ObservationBuilder
from coinfer.server.registry import Decision, DeviceRecord

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SchedulerConfig:
    """Which policy schedules the devices, and how often."""

    policy: str
    """A MAHPPO (or SB3) policy file, or a baseline: local, offload, random, greedy, search."""
    scenario: str | None = None
    """Scenario name or TOML path; None = the policy file's own scenario, or mahppo-paper-<backbone>."""
    slot_s: float | None = None
    """Decision slot length; None = the scenario's slot."""
    decision_log: Path | None = None
    """Append every slot's decisions here as JSON lines (None = log only)."""
    seed: int = 0
    """Seed of the random baseline."""


def resolve_scenario(policy: str, scenario: str | None, backbone: str):
    """The scenario a policy acts on (see `SchedulerConfig.scenario`)."""
    from coinfer.rl.policy import BASELINE_NAMES
    from coinfer.rl.scenario import builtin_scenario_names, load_scenario

    if scenario is not None:
        return load_scenario(scenario)
    if policy not in BASELINE_NAMES:
        from coinfer.rl.policy_files import read_policy_spec

        spec, json_path = read_policy_spec(policy)
        if spec.scenario in builtin_scenario_names():
            return load_scenario(spec.scenario)
        raise InvalidInput(f"{json_path} was trained on scenario {spec.scenario!r}, which is not built in; give --scenario PATH")
    name = f"mahppo-paper-{backbone}"
    return load_scenario(name if name in builtin_scenario_names() else "mahppo-paper-resnet18")


class Scheduler:
    """Runs a policy every slot on the coordinator's live devices."""

    def __init__(self, coordinator: Coordinator, config: SchedulerConfig, shaper: LinkShaper | None = None) -> None:
        """``shaper`` receives every slot's decisions (default: none, links are left as they are)."""
        from coinfer.rl.policy import make_policy

        split = coordinator.catalog.split
        if split is None:
            raise FailedPrecondition("a scheduler decides split points: serve a split bundle too")
        self.coordinator = coordinator
        self.config = config
        self.scenario = resolve_scenario(config.policy, config.scenario, split.backbone)
        if self.scenario.num_points != len(split.point_names or ()) and split.per_image:
            raise InvalidInput(
                f"scenario {self.scenario.name!r} has {self.scenario.num_points} split points, bundle "
                f"{split.bundle.name!r} has {len(split.point_names)}"
            )
        self.policy = make_policy(config.policy, self.scenario, seed=config.seed)
        self.policy.reset()
        self.shaper: LinkShaper = shaper if shaper is not None else NoLinkShaper()
        self.builder = ObservationBuilder(self.scenario)
        self.slot_s = config.slot_s if config.slot_s is not None else self.scenario.episode.slot_s
        if self.slot_s <= 0:
            raise InvalidInput(f"the slot length must be positive, got {self.slot_s}")
        self.slots = 0
        self.last_observation: np.ndarray | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._log_lock = threading.Lock()
        # Devices must hear of a decision within one slot.
        coordinator.config.heartbeat_interval_s = min(coordinator.config.heartbeat_interval_s, self.slot_s)
        coordinator.initial_decision = self.initial_decision

    @property
    def policy_name(self) -> str:
        return str(getattr(self.policy, "name", self.config.policy))

    def initial_decision(self, order: int) -> Decision:
        """A new device starts as the simulator starts it: its initial point, sub-channel n mod K, lowest power."""
        n = min(len(self.coordinator.registry.records()), self.scenario.num_devices - 1)
        device = self.scenario.devices[n]
        return Decision(device.initial_point, n % self.scenario.num_subchannels, device.power_range_w[0])

    # Loop ----------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="scheduler", daemon=True)
        self._thread.start()
        log.info("scheduler: policy %s on scenario %s, slots of %.0f ms", self.policy_name, self.scenario.name, self.slot_s * 1e3)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)

    def _run(self) -> None:
        next_slot = time.monotonic()
        while not self._stop.is_set():
            try:
                self.step()
            except Exception:  # noqa: BLE001 - one bad slot must not end scheduling
                log.exception("scheduler slot %d failed", self.slots)
            next_slot += self.slot_s
            self._stop.wait(max(0.0, next_slot - time.monotonic()))

    def _state(self, record: DeviceRecord) -> LiveDeviceState:
        load = record.load
        return LiveDeviceState(
            queue_length=load.queue_length if load else 0,
            in_compute=load.in_compute if load else 0,
            in_offload=load.in_offload if load else 0,
            in_tail=max(record.in_tail, 0),
            split_point=record.decision.split_point,
            distance_m=record.info.distance_m,
            uplink_bytes_per_s=load.uplink_bytes_per_s if load else 0.0,
            power_w=record.decision.power_w,
        )

    def step(self) -> dict[str, Decision]:
        """One slot: observe, act, apply; returns the decision of every scheduled device."""
        started = time.perf_counter()
        records = self.coordinator.registry.records()[: self.scenario.num_devices]
        observation = self.builder.build([self._state(r) for r in records])
        action = self.policy.act(observation, deterministic=True)
        points, channels, powers = (np.asarray(a).reshape(-1) for a in (action.points, action.channels, action.powers_w))
        decisions = {
            r.device_id: Decision(int(points[n]), int(channels[n]), float(powers[n])) for n, r in enumerate(records)
        }
        changed = set(self.coordinator.set_decisions(decisions))
        self.slots += 1
        self.last_observation = observation
        metrics = self.coordinator.metrics
        metrics.slots.labels(self.policy_name).inc()
        metrics.policy_latency.labels(self.policy_name).observe(time.perf_counter() - started)
        applied = {r.device_id: (self.coordinator.registry.get(r.device_id) or r).decision for r in records}
        for record in records:
            if record.device_id in changed:
                metrics.decision_changes.labels(self.policy_name, record.info.name).inc()
        if changed:
            log.info(
                "slot %d (%s): %s",
                self.slots,
                self.policy_name,
                "; ".join(
                    f"{r.info.name} point {applied[r.device_id].split_point} ch {applied[r.device_id].sub_channel} "
                    f"{applied[r.device_id].power_w:.3g} W"
                    for r in records
                    if r.device_id in changed
                ),
            )
        self._shape(records, applied)
        if self.config.decision_log is not None:
            self._write_log(records, observation, applied, changed)
        return applied

    def _shape(self, records: list[DeviceRecord], applied: dict[str, Decision]) -> None:
        decisions = [
            LinkDecision(
                name=r.info.name,
                address=r.info.address,
                sub_channel=applied[r.device_id].sub_channel,
                power_w=applied[r.device_id].power_w,
                uploading=bool(r.load is not None and r.load.in_offload > 0),
            )
            for r in records
        ]
        try:
            self.shaper.apply(decisions)
        except Exception:  # noqa: BLE001 - a link that cannot be shaped must not stop scheduling
            log.exception("slot %d: link shaping failed", self.slots)

    def _write_log(self, records, observation, applied, changed) -> None:
        line = {
            "slot": self.slots,
            "time_s": time.time(),
            "policy": self.policy_name,
            "scenario": self.scenario.name,
            "observation": [round(float(v), 6) for v in observation],
            "devices": [
                {
                    "name": r.info.name,
                    "split_point": applied[r.device_id].split_point,
                    "sub_channel": applied[r.device_id].sub_channel,
                    "power_w": applied[r.device_id].power_w,
                    "changed": r.device_id in changed,
                }
                for r in records
            ],
        }
        path = Path(self.config.decision_log)
        with self._log_lock:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a") as fh:
                fh.write(json.dumps(line) + "\n")

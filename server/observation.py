"""The scheduler's observation built from live device state, in the simulator's layout.

The simulator (`coinfer.rl.sim.core`) describes each device by the features that
`feature_names(scenario)` lists, in that order, each scaled by a constant of the device's cost
profile (`Simulator.feature_scales`): the global state is those features device by device. Here the same features are filled from what
the devices and the coordinator report, so a policy trained in simulation reads live state
the way it read simulated state:

* ``tasks_left_frac``: requests on the device (waiting or running) / the scenario's mean tasks per
  device (the simulator's episode backlog), at most 1;
* ``head_left_frac``: requests computing on the device x half the head latency of its split point
  (on average half done) / its local latency;
* ``upload_left_frac``: requests waiting on an offload x half the point's uplink bits / the raw
  image's bits;
* ``distance_frac``: the device's distance / the scenario's largest distance. The distance is the
  configured one (``coinfer edge --distance-m``) when given; else the one at which the scenario's
  channel (sub-channel bandwidth, path loss, noise) would give the uplink throughput the device
  measured at its current power (Shannon's formula inverted), clipped to the scenario's distance
  range, so a fast link reads as a near device; else the scenario's evaluation distance;
* ``server_left_frac``: tails of the device running on the coordinator x half a tail's time / the
  local latency (scenarios with a server model);
* ``download_left_frac``: 0 (results are a few hundred bytes; not tracked);
* ``waiting_frac``: requests waiting to start / the mean tasks per device (stream scenarios).

Agent slots follow registration order; a slot without a live device is all zeros (nothing left
to do), as the simulator shows a device whose queue is empty and which is idle. Features are
clipped to the simulator's own bounds (`Simulator.feature_high`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from coinfer.core.errors import InvalidInput

HALF_DONE = 0.5
"""Fraction of a running stage taken as still to do (the expected remainder of a uniform progress)."""


@dataclass(frozen=True)
class LiveDeviceState:
    """What is known now about the device in one agent slot."""

    queue_length: int
    """Requests on the device, waiting or running."""
    in_compute: int
    """Requests computing on the device (head)."""
    in_offload: int
    """Requests waiting on the uplink and the coordinator's tail."""
    in_tail: int
    """Tails of this device running on the coordinator."""
    split_point: int
    """The device's current split point."""
    distance_m: float
    """Configured distance to the server; 0 = unknown (see uplink_bytes_per_s)."""
    uplink_bytes_per_s: float = 0.0
    """Uplink throughput the device measured (0 = none yet)."""
    power_w: float = 0.0
    """The device's current transmit power."""


class ObservationBuilder:
    """Live states -> a global state (N * F,) for one scenario."""

    def __init__(self, scenario) -> None:
        from coinfer.rl.sim.core import HEAD, SERVER, UPLOAD, Simulator

        scales = Simulator(scenario, num_envs=1, mode="eval").feature_scales()
        self.scenario = scenario
        self.feature_names = scales.names
        known = {"tasks_left_frac", "head_left_frac", "upload_left_frac", "distance_frac", "server_left_frac", "download_left_frac", "waiting_frac"}
        unknown = [f for f in self.feature_names if f not in known]
        if unknown:
            raise InvalidInput(f"scenario {scenario.name!r} has state features {unknown} the runtime cannot fill from live state")
        devices = scenario.devices
        self.num_devices = len(devices)
        self._head_s = scales.stage_work[..., HEAD]
        self._bits = scales.stage_work[..., UPLOAD]
        self._tail_s = scales.stage_work[..., SERVER]
        self._local_s = scales.local_latency_s
        self._raw_bits = scales.raw_bits
        self._distance_high_m = scales.distance_high_m
        self.high = scales.high
        # The distance is inferred within the training range (see distance_m), not part of the layout.
        self._eval_distance_m = np.array([d.eval_distance_m for d in devices])
        self._distance_low_m = np.array([d.distance_range_m[0] for d in devices])
        self._network = scenario.network
        # The simulator scales the backlog by the episode's task count; live, the scenario's mean stands in.
        self._tasks_norm = max(float(scenario.tasks.mean_tasks_per_device), 1.0)

    def distance_m(self, n: int, state: LiveDeviceState) -> float:
        """Slot n's distance: configured, else inferred from the measured uplink, else the evaluation distance."""
        if state.distance_m > 0:
            return state.distance_m
        net = self._network
        if state.uplink_bytes_per_s > 0 and state.power_w > 0:
            # rate = W log2(1 + p d^-a / noise)  =>  d = (p / (noise (2^(rate / W) - 1)))^(1 / a)
            spectral = min(8.0 * state.uplink_bytes_per_s / net.subchannel_bandwidth_hz, 1000.0)
            snr = np.expm1(spectral * np.log(2.0))
            if net.path_loss_exponent > 0 and snr > 0:
                distance = (state.power_w / (net.noise_w * snr)) ** (1.0 / net.path_loss_exponent)
                return float(np.clip(distance, self._distance_low_m[n], self._distance_high_m[n]))
        return float(self._eval_distance_m[n])

    def build(self, slots: Sequence[LiveDeviceState | None]) -> np.ndarray:
        """The global state for up to N slots (missing or None slots are idle)."""
        if len(slots) > self.num_devices:
            raise InvalidInput(f"{len(slots)} device slots for a scenario of {self.num_devices} devices")
        features = np.zeros((self.num_devices, len(self.feature_names)))
        for n, state in enumerate(slots):
            if state is None:
                continue
            point = min(max(state.split_point, 0), self._head_s.shape[1] - 1)
            distance = self.distance_m(n, state)
            waiting = max(0, state.queue_length - state.in_compute - state.in_offload)
            values = {
                "tasks_left_frac": state.queue_length / self._tasks_norm,
                "head_left_frac": state.in_compute * HALF_DONE * self._head_s[n, point] / self._local_s[n],
                "upload_left_frac": state.in_offload * HALF_DONE * self._bits[n, point] / self._raw_bits[n],
                "distance_frac": distance / self._distance_high_m[n],
                "server_left_frac": state.in_tail * HALF_DONE * self._tail_s[n, point] / self._local_s[n],
                "download_left_frac": 0.0,
                "waiting_frac": waiting / self._tasks_norm,
            }
            features[n] = [values[name] for name in self.feature_names]
        return np.clip(features, 0.0, self.high).reshape(-1)

"""The simulation core: E independent copies of one cell, stepped together.

Each device works through its queue one task after another. A task passes through up to four
stages: head compute on the device (the split point's latency, at its power), upload of the
point's bits at the Shannon rate of the device's sub-channel (interfered by the other uploads on
that sub-channel at that moment), and, when the scenario has a server model, the tail on the
server (shared by the tails running at once) and the result download. Stages with no work (the
raw-image point has no head; the local point uploads nothing) are skipped.

Inside a decision slot the simulation jumps from event to event (a stage ends, a task arrives, the
slot ends); upload rates and server shares are recomputed after every event, so they change
exactly when an upload or a tail starts or stops (that loop is compiled: `coinfer.rl.sim.events`;
what happens once a slot, the decision, the reward and the observations, is numpy). A decision
sets each device's transmit power at once and its split point and sub-channel for its *next* task.
Every device's first task starts at reset, before any decision, at the scenario's ``initial_point``.

One environment is ``num_envs=1``; the batched view uses the same core with many. An
environment's arithmetic never reads another's, so with per-episode random streams
(``episode_keys``, see `coinfer.rl.sim.streams`) an episode's trajectory does not depend on the
batch it runs in. The core imports no torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from coinfer.core.errors import InvalidInput
from coinfer.rl.scenario import Mode, Scenario
from coinfer.rl.sim import events
from coinfer.rl.sim.arrivals import make_arrivals
from coinfer.rl.sim.channel import make_channel
from coinfer.rl.sim.events import DONE, DOWNLOAD, HEAD, IDLE, NUM_STAGES, SERVER, TIME_TOL_S, UPLOAD  # noqa: F401 (re-exported)
from coinfer.rl.sim.metrics import EpisodeMetrics, episode_metrics
from coinfer.rl.sim.server import make_server
from coinfer.rl.sim.streams import EpisodeStreams, SharedStreams

STAGE_NAMES = ("head", "upload", "server", "download", "done", "idle")


@dataclass(frozen=True)
class SlotOutcome:
    """What one decision slot produced in every environment."""

    reward: np.ndarray
    """(E,) the shared reward of the slot."""
    finished_tasks: np.ndarray
    """(E, N) tasks each device finished in the slot."""
    energy_j: np.ndarray
    """(E, N) energy each device spent in the slot."""
    terminated: np.ndarray
    """(E,) every queue is empty."""
    truncated: np.ndarray
    """(E,) the slot limit was reached first."""


@dataclass(frozen=True)
class FeatureScales:
    """How the global state describes each device: its features, in order, and what scales them.

    Every feature is a remainder divided by a per-device constant (see `Simulator.device_features`);
    whoever fills the same features from elsewhere (the runtime's live observation) scales by these.
    """

    names: tuple[str, ...]
    """The per-device features, in order (`feature_names`)."""
    stage_work: np.ndarray
    """(N, P, 4) work of each stage at each split point: head s, upload bits, server s, download bits."""
    local_latency_s: np.ndarray
    """(N,) the whole model on the device: scales head and server work."""
    raw_bits: np.ndarray
    """(N,) bits of the raw input (at least 1): scales upload work."""
    distance_high_m: np.ndarray
    """(N,) the largest training distance: scales the distance."""
    high: np.ndarray
    """(N, F) upper bound of every feature (`Simulator.feature_high`)."""


def _following_stages(stage_table: np.ndarray) -> np.ndarray:
    """(N, P, IDLE + 2): entry [n, p, s + 1] is the first stage after s with work, or DONE.

    Entry 0 (s = -1) is a new task's first stage; the entries past the stages are never used.
    """
    n, p, _ = stage_table.shape
    following = np.full((n, p, IDLE + 2), DONE, dtype=np.int64)
    for s in range(NUM_STAGES - 1, -1, -1):
        following[:, :, s] = np.where(stage_table[:, :, s] > 0, s, following[:, :, s + 1])
    return following


def feature_names(scenario: Scenario) -> tuple[str, ...]:
    """Names of the per-device features of a scenario's global state, in order."""
    names = ["tasks_left_frac", "head_left_frac", "upload_left_frac", "distance_frac"]
    if scenario.server.model == "shared":
        names += ["server_left_frac", "download_left_frac"]
    if scenario.tasks.arrivals == "poisson-stream":
        names += ["waiting_frac"]
    return tuple(names)


def local_from_global(global_state: np.ndarray, num_devices: int) -> np.ndarray:
    """(..., N, 2F) local observations from global states (..., N * F): own features, others' mean."""
    f = global_state.reshape(global_state.shape[:-1] + (num_devices, -1))
    others = (f.sum(axis=-2, keepdims=True) - f) / max(num_devices - 1, 1)
    return np.concatenate([f, others], axis=-1)


def _streams(seed, episode_keys, num_envs: int) -> SharedStreams | EpisodeStreams:
    if episode_keys is not None:
        return EpisodeStreams(episode_keys, num_envs)
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
        return SharedStreams(int(seed))
    try:
        seeds = [int(s) for s in seed]
    except (TypeError, ValueError):
        raise InvalidInput(f"a simulator seed is an integer or one integer per environment, got {seed!r}") from None
    return EpisodeStreams(seeds, num_envs, replay=False)


class Simulator:
    """State and dynamics of ``num_envs`` environments of one scenario."""

    def __init__(
        self,
        scenario: Scenario,
        num_envs: int = 1,
        mode: Mode = "train",
        seed: int | Sequence[int] = 0,
        episode_keys: Sequence[int | Sequence[int]] | None = None,
        max_slots: int | None = None,
    ) -> None:
        """``mode`` 'train' draws distances and task counts per episode, 'eval' fixes them (the
        scenario's evaluation cell). Randomness comes from streams shared by every environment,
        rooted at ``seed``; with one seed per environment, from streams of each environment's own
        that run on across its episodes (a gymnasium vector environment's seeding); or, with
        ``episode_keys`` (one per environment), from streams of each episode's own. ``max_slots`` overrides the slot limit (default: the training episode
        length in 'train' mode, the evaluation cap in 'eval' mode).
        """
        if num_envs < 1:
            raise InvalidInput(f"num_envs must be >= 1, got {num_envs}")
        if mode not in ("train", "eval"):
            raise InvalidInput(f"mode must be 'train' or 'eval', got {mode!r}")
        if max_slots is not None and max_slots < 1:
            raise InvalidInput(f"max_slots must be >= 1, got {max_slots}")
        self.scenario, self.num_envs, self.mode = scenario, num_envs, mode
        E, N, K, P = num_envs, scenario.num_devices, scenario.num_subchannels, scenario.num_points
        self.num_devices, self.num_subchannels, self.num_points = N, K, P
        self.slot_s = scenario.episode.slot_s
        if max_slots is None:
            max_slots = scenario.evaluation.max_slots if mode == "eval" else scenario.episode.max_slots
        self.max_slots = max_slots

        # Pluggable pieces.
        self.channel = make_channel(scenario.network)
        self.arrivals = make_arrivals(scenario.tasks, scenario.evaluation.tasks_per_device)
        self.server = make_server(scenario.server, scenario.devices)
        self._stream = scenario.tasks.arrivals != "batch"
        self._streams = _streams(seed, episode_keys, num_envs)

        # Per-device constants.
        devices = scenario.devices
        self._device_index = np.arange(N)
        head_s = np.array([[p.head_latency_s for p in d.profile.points] for d in devices])
        head_j = np.array([[p.head_energy_j for p in d.profile.points] for d in devices])
        bits = np.array([[p.uplink_bits for p in d.profile.points] for d in devices], dtype=float)
        if np.any((head_s <= 0) & (bits <= 0)):
            raise InvalidInput(f"{scenario.source}: a split point has neither head latency nor uplink bits")
        self._stage_table = np.stack([head_s, bits, self.server.tail_s, self.server.result_bits], axis=-1)
        self._following_stage = _following_stages(self._stage_table)
        first = self._following_stage[:, :, 0]
        first_work = np.take_along_axis(self._stage_table, np.minimum(first, NUM_STAGES - 1)[..., None], axis=2)[..., 0]
        self._head_power_table_w = np.divide(head_j, head_s, out=np.zeros_like(head_j), where=head_s > 0)
        self._task_table = np.concatenate(
            [self._stage_table, self._head_power_table_w[..., None], first[..., None].astype(float), first_work[..., None]], axis=-1
        )
        self._ei, self._ni = np.arange(E)[:, None], self._device_index[None, :]
        self.power_low_w = np.array([d.power_range_w[0] for d in devices])
        self.power_high_w = np.array([d.power_range_w[1] for d in devices])
        self._distance_low_m = np.array([d.distance_range_m[0] for d in devices])
        self._distance_high_m = np.array([d.distance_range_m[1] for d in devices])
        self._eval_distance_m = np.array([d.eval_distance_m for d in devices])
        self._initial_point = np.array([d.initial_point for d in devices])
        self._local_latency_s = head_s[:, -1].copy()
        self._raw_bits = np.maximum(bits[:, 0], 1.0)
        self._result_bits = np.maximum(self.server.result_bits.max(axis=1), 1.0)
        self._default_channel = self._device_index % K

        # State, (E, N) unless noted.
        M = self.arrivals.capacity
        self.distance_m = np.zeros((E, N))
        self.gain = np.zeros((E, N, K))
        self._download_bps = np.zeros((E, N))
        self.num_tasks = np.zeros((E, N), dtype=np.int64)
        self.arrival_s = np.full((E, N, M), np.inf)
        self.completion_s = np.full((E, N, M), np.inf)
        self.started = np.zeros((E, N), dtype=np.int64)
        self.finished = np.zeros((E, N), dtype=np.int64)
        self.phase = np.full((E, N), IDLE, dtype=np.int64)
        self.work = np.zeros((E, N))  # what is left of the current stage (s or bits)
        self._task = np.zeros((E, N, NUM_STAGES + 3))  # the current task's row of _task_table
        self.stage_work = self._task[..., :NUM_STAGES]  # the current task's full stages
        self.point = np.zeros((E, N), dtype=np.int64)  # the current task's split point
        self.channel_index = np.zeros((E, N), dtype=np.int64)  # the current task's sub-channel
        self._received_w = np.zeros((E, N))  # power x gain on the current sub-channel
        self._power_now_w = np.zeros((E, N))  # device power in the current stage
        self._speed = np.ones((E, N))  # progress per second of stages other than upload and tail
        self.next_point = np.zeros((E, N), dtype=np.int64)
        self.next_channel = np.zeros((E, N), dtype=np.int64)
        self.power_w = np.zeros((E, N))
        self.now_s = np.zeros(E)
        self.slot = np.zeros(E, dtype=np.int64)
        self.episode_energy_j = np.zeros((E, N))
        self.episode_reward = np.zeros(E)
        self.slot_energy_j = np.zeros((E, N))
        self.slot_finished = np.zeros((E, N), dtype=np.int64)
        self.reset()

    # -----------------------------------------------------------------------------------------
    # Reset

    def reset(self, envs: Sequence[int] | np.ndarray | None = None) -> None:
        """Start new episodes in ``envs`` (all by default); each device's first task starts now."""
        idx = np.arange(self.num_envs) if envs is None else np.asarray(envs, dtype=np.int64)
        if idx.size == 0:
            return
        N, streams = self.num_devices, self._streams
        streams.restart(idx)
        if self.mode == "train":
            low, high = self._distance_low_m, self._distance_high_m
            distance = streams.draw("distance", idx, lambda rng, rows: rng.uniform(low, high, size=(rows.size, N)))
            fixed_count = None
        else:
            distance = np.broadcast_to(self._eval_distance_m, (idx.size, N)).copy()
            fixed_count = self.scenario.evaluation.tasks_per_device
        counts, arrival = streams.draw("tasks", idx, lambda rng, rows: self.arrivals.draw(rng, (rows.size, N), fixed_count))
        self.distance_m[idx] = distance
        self.gain[idx] = streams.draw("fading", idx, lambda rng, rows: self.channel.gains(distance[rows], rng))
        self._download_bps[idx] = self.server.download_rate_bps(distance ** (-self.scenario.network.path_loss_exponent), self.scenario.network.noise_w)
        self.num_tasks[idx] = counts
        self.arrival_s[idx] = arrival
        self.completion_s[idx] = np.inf
        for name in ("started", "finished", "slot_finished"):
            getattr(self, name)[idx] = 0
        for name in ("work", "_task", "episode_energy_j", "slot_energy_j"):
            getattr(self, name)[idx] = 0.0
        self.phase[idx] = IDLE
        self.next_point[idx] = self._initial_point
        self.next_channel[idx] = self._default_channel
        self.power_w[idx] = self.power_low_w
        self.now_s[idx] = 0.0
        self.slot[idx] = 0
        self.episode_reward[idx] = 0.0
        events.start_tasks(np.repeat(idx, N), np.tile(self._device_index, idx.size), self._stream, *self._task_state())
        self._channel_changed()  # the new episodes' gains and powers
        self._update_phase_rates()

    # -----------------------------------------------------------------------------------------
    # One slot

    def step(self, points: np.ndarray, channels: np.ndarray, powers_w: np.ndarray) -> SlotOutcome:
        """Apply one decision per device in every environment and simulate one slot."""
        points, channels, powers_w = self._check_actions(points, channels, powers_w)
        self._decide(points, channels, powers_w)
        self._begin_slot()
        self._run_until_slot_end()
        reward = self._reward()
        self.slot += 1
        self.episode_reward += reward
        self.episode_energy_j += self.slot_energy_j
        terminated = (self.finished >= self.num_tasks).all(axis=1)
        truncated = ~terminated & (self.slot >= self.max_slots)
        return SlotOutcome(reward, self.slot_finished.copy(), self.slot_energy_j.copy(), terminated, truncated)

    def _check_actions(self, points, channels, powers_w) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        shape = (self.num_envs, self.num_devices)
        out = []
        for name, value, is_int in (("split point", points, True), ("sub-channel", channels, True), ("power_w", powers_w, False)):
            arr = np.asarray(value)
            if arr.shape != shape:
                try:
                    arr = np.broadcast_to(arr, shape)
                except ValueError:
                    raise InvalidInput(f"{name} actions must have shape {shape} (envs, devices), got {np.shape(value)}") from None
            if is_int:
                if not (np.issubdtype(arr.dtype, np.integer) or np.all(np.mod(arr, 1) == 0)):
                    e, n = np.argwhere(np.mod(arr, 1) != 0)[0]
                    raise InvalidInput(f"device {n}{self._env_label(e)}: {name} must be an integer, got {arr[e, n]!r}")
                arr = arr.astype(np.int64)
            else:
                arr = arr.astype(float)
            out.append(arr)
        points, channels, powers_w = out
        for name, arr, high in (("split point", points, self.num_points), ("sub-channel", channels, self.num_subchannels)):
            bad = (arr < 0) | (arr >= high)
            if bad.any():
                e, n = np.argwhere(bad)[0]
                raise InvalidInput(f"device {n}{self._env_label(e)}: {name} {arr[e, n]} is outside 0..{high - 1}")
        slack = 1e-9 * self.power_high_w
        bad = ~np.isfinite(powers_w) | (powers_w < self.power_low_w - slack) | (powers_w > self.power_high_w + slack)
        if bad.any():
            e, n = np.argwhere(bad)[0]
            raise InvalidInput(
                f"device {n}{self._env_label(e)}: power_w {float(powers_w[e, n])!r} is outside "
                f"[{self.power_low_w[n]:g}, {self.power_high_w[n]:g}] W"
            )
        return points, channels, np.clip(powers_w, self.power_low_w, self.power_high_w)

    def _env_label(self, e: int) -> str:
        return f" (environment {e})" if self.num_envs > 1 else ""

    def _decide(self, points: np.ndarray, channels: np.ndarray, powers_w: np.ndarray) -> None:
        self.next_point[:] = points
        self.next_channel[:] = channels
        self.power_w[:] = powers_w

    def _begin_slot(self) -> None:
        self.slot_energy_j[:] = 0.0
        self.slot_finished[:] = 0
        if self.channel.redraw_each_slot:
            distance = self.distance_m
            self.gain[:] = self._streams.draw("fading", np.arange(self.num_envs), lambda rng, rows: self.channel.gains(distance[rows], rng))
        self._channel_changed()  # new powers (and gains) apply at once
        self._update_phase_rates()

    def _run_until_slot_end(self) -> None:
        """Jump from event to event until the slot ends in every environment (`coinfer.rl.sim.events`).

        An environment whose slot has ended waits, untouched, for the others: its trajectory is
        the one it would have alone.
        """
        net = self.scenario.network
        events.run_slot(self.slot_s, self.num_subchannels, net.subchannel_bandwidth_hz, net.noise_w, self.server.enabled,
                        self.scenario.server.receive_power_w, self._stream, *self._task_state(), self._power_now_w, self._speed,
                        self._download_bps, self.completion_s, self.finished, self.slot_finished, self.slot_energy_j)

    def _task_state(self) -> tuple:
        """What starting a task reads and writes, in the order `events.start_task` takes it."""
        return (self.now_s, self.started, self.num_tasks, self.arrival_s, self.work, self.phase, self.next_point, self.next_channel,
                self._task, self._task_table, self.point, self.channel_index, self._received_w, self.power_w, self.gain,
                self._following_stage)

    def _reward(self) -> np.ndarray:
        r = self.scenario.reward
        done_per_device = np.maximum(self.slot_finished.mean(axis=1), r.min_finished)
        energy_per_device = self.slot_energy_j.mean(axis=1)
        return -(self.slot_s / done_per_device) - r.beta * energy_per_device / done_per_device

    # -----------------------------------------------------------------------------------------
    # Events

    def _update_phase_rates(self) -> None:
        """Device power and the speed of every stage but the upload and the shared tail (all devices)."""
        events.stage_rates(self.scenario.server.receive_power_w, self.server.enabled, self.phase, self._task, self.power_w,
                           self._download_bps, self._power_now_w, self._speed)

    def _channel_changed(self) -> None:
        """Refresh what depends on the current sub-channels, gains and powers (all devices)."""
        self._received_w = self.power_w * self.gain[self._ei, self._ni, self.channel_index]

    # -----------------------------------------------------------------------------------------
    # Views of the state

    @property
    def feature_names(self) -> tuple[str, ...]:
        """Names of the per-device features of the global state, in order."""
        return feature_names(self.scenario)

    @property
    def num_features(self) -> int:
        return len(self.feature_names)

    def feature_high(self) -> np.ndarray:
        """(N, F) upper bound of every per-device feature (all features are >= 0)."""
        tables = self._stage_table
        cols = [
            np.ones(self.num_devices),
            tables[..., HEAD].max(axis=1) / self._local_latency_s,
            tables[..., UPLOAD].max(axis=1) / self._raw_bits,
            np.maximum(self._eval_distance_m, self._distance_high_m) / self._distance_high_m,
        ]
        if self.server.enabled:
            cols += [tables[..., SERVER].max(axis=1) / self._local_latency_s, np.ones(self.num_devices)]
        if self.scenario.tasks.arrivals == "poisson-stream":
            cols += [np.ones(self.num_devices)]
        return np.stack(cols, axis=-1)

    def feature_scales(self) -> FeatureScales:
        """The features' names, the per-device constants that scale them, and their bounds (copies)."""
        return FeatureScales(
            names=self.feature_names,
            stage_work=self._stage_table.copy(),
            local_latency_s=self._local_latency_s.copy(),
            raw_bits=self._raw_bits.copy(),
            distance_high_m=self._distance_high_m.copy(),
            high=self.feature_high(),
        )

    def device_features(self) -> np.ndarray:
        """(E, N, F) per-device features, each scaled to about [0, 1]."""
        stage = np.arange(NUM_STAGES)
        phase = self.phase[..., None]
        left = np.where(stage < phase, 0.0, np.where(stage == phase, self.work[..., None], self.stage_work))
        total = np.maximum(self.num_tasks, 1)
        cols = [
            (self.num_tasks - self.finished) / total,
            left[..., HEAD] / self._local_latency_s,
            left[..., UPLOAD] / self._raw_bits,
            self.distance_m / self._distance_high_m,
        ]
        if self.server.enabled:
            cols += [left[..., SERVER] / self._local_latency_s, left[..., DOWNLOAD] / self._result_bits]
        if self.scenario.tasks.arrivals == "poisson-stream":
            arrived = (self.arrival_s <= self.now_s[:, None, None] + TIME_TOL_S).sum(axis=2)
            cols += [(arrived - self.started) / total]
        return np.stack(cols, axis=-1)

    def global_state(self) -> np.ndarray:
        """(E, N * F) the state of every device, device by device (the critic's input)."""
        f = self.device_features()
        return f.reshape(self.num_envs, -1)

    def local_observations(self) -> np.ndarray:
        """(E, N, 2F) each device's own features and the mean features of the other devices."""
        return local_from_global(self.global_state(), self.num_devices)

    def episode_metrics(self, env: int = 0) -> EpisodeMetrics:
        """Metrics of the episode in ``env`` so far (call at its end)."""
        done = self.finished[env]
        latencies = [self.completion_s[env, n, : done[n]] - self.arrival_s[env, n, : done[n]] for n in range(self.num_devices)]
        return episode_metrics(
            slots=int(self.slot[env]),
            slot_s=self.slot_s,
            num_devices=self.num_devices,
            finished=done,
            total_tasks=int(self.num_tasks[env].sum()),
            energy_j=float(self.episode_energy_j[env].sum()),
            reward=float(self.episode_reward[env]),
            task_latencies_s=np.concatenate(latencies) if latencies else np.zeros(0),
            truncated=bool((self.finished[env] < self.num_tasks[env]).any()),
        )

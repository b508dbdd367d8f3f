"""The event loop inside a decision slot, compiled with numba.

`coinfer.rl.sim.core.Simulator` keeps the state as (E, N) arrays; these functions advance it in
place. The loop runs environment by environment (their arithmetic never mixes) and, inside one,
jumps from event to event: a stage ends, a task arrives, the slot ends. After every event the
upload rates (Shannon, interfered by the other uploads on the same sub-channel) and the server
shares are recomputed, so they change exactly when an upload or a tail starts or stops.

Why compiled: a slot holds about 150 events and each touches one or two devices. Stepped with
numpy over all environments at once, every event cost about 50 array calls of a few microseconds
each (about 100 us an event; 27 % of a MAHPPO training profile, more as the policy learns); as
plain loops the whole slot costs 3 % (docs/rl.md). The arithmetic is the numpy version's,
operation for operation (division by zero gives inf, as numpy's does: ``error_model="numpy"``).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from coinfer.rl.sim.channel import cell_uplink_rates_bps

# Stages of a task, in order, then the two states between tasks.
HEAD, UPLOAD, SERVER, DOWNLOAD, DONE, IDLE = 0, 1, 2, 3, 4, 5
NUM_STAGES = 4
TIME_TOL_S = 1e-12
"""Events closer than this are simultaneous."""
HEAD_POWER = NUM_STAGES
"""Column of a task row (`Simulator._task`) holding the head's power; the first stage's work is the last column."""

_JIT = {"cache": True, "nogil": True, "error_model": "numpy"}


@njit(**_JIT)
def start_task(e, n, stream, now_s, started, num_tasks, arrival_s, work, phase, next_point, next_channel, task, task_table,
               point, channel_index, received_w, power_w, gain, following):
    """Device (e, n) takes its next task if it has arrived, else waits idle for it."""
    more = started[e, n] < num_tasks[e, n]
    if stream:
        capacity = arrival_s.shape[2]
        next_arrival = arrival_s[e, n, min(started[e, n], capacity - 1)] if more else np.inf
        if not next_arrival <= now_s[e] + TIME_TOL_S:
            work[e, n] = next_arrival - now_s[e]
            phase[e, n] = IDLE
            return
    elif not more:
        work[e, n] = np.inf
        phase[e, n] = IDLE
        return
    p = next_point[e, n]
    task[e, n, :] = task_table[n, p, :]  # stages, head power, first stage and its work
    point[e, n] = p
    k = next_channel[e, n]
    channel_index[e, n] = k
    received_w[e, n] = power_w[e, n] * gain[e, n, k]
    started[e, n] += 1
    phase[e, n] = following[n, p, 0]
    work[e, n] = task[e, n, task.shape[2] - 1]


@njit(**_JIT)
def start_tasks(envs, devices, stream, now_s, started, num_tasks, arrival_s, work, phase, next_point, next_channel, task, task_table,
                point, channel_index, received_w, power_w, gain, following):
    """`start_task` for each pair (envs[i], devices[i])."""
    for i in range(envs.shape[0]):
        start_task(envs[i], devices[i], stream, now_s, started, num_tasks, arrival_s, work, phase, next_point, next_channel, task,
                   task_table, point, channel_index, received_w, power_w, gain, following)


@njit(**_JIT)
def run_slot(slot_s, num_subchannels, bandwidth_hz, noise_w, server_enabled, receive_w, stream,
             now_s, started, num_tasks, arrival_s, work, phase, next_point, next_channel, task, task_table,
             point, channel_index, received_w, power_w, gain, following,
             power_now_w, speed_other, download_bps, completion_s, finished, slot_finished, slot_energy_j):
    """Run every environment from its current time to the end of the slot, event by event.

    ``speed_other`` (E, N) is each device's progress per second in the stages other than the upload
    and the shared tail; ``power_now_w`` its power in the current stage. Both are kept current for
    the devices an event touches.
    """
    E, N = work.shape
    uploading = np.zeros(N, dtype=np.bool_)
    rate = np.zeros(N)
    speed = np.zeros(N)
    ttl = np.zeros(N)
    for e in range(E):
        left = slot_s
        while left > TIME_TOL_S:
            serving = 0
            for n in range(N):
                uploading[n] = phase[e, n] == UPLOAD
                serving += phase[e, n] == SERVER
            cell_uplink_rates_bps(received_w[e], uploading, channel_index[e], num_subchannels, bandwidth_hz, noise_w, rate)
            # Time to the next event: the first stage to end, or the slot's end.
            soonest = np.inf
            unordered = False
            for n in range(N):
                if phase[e, n] == UPLOAD:
                    speed[n] = rate[n]
                elif server_enabled and phase[e, n] == SERVER:  # tails running at once share the server equally
                    speed[n] = 1.0 / max(serving, 1)
                else:
                    speed[n] = speed_other[e, n]
                ttl[n] = work[e, n] / speed[n]
                if math.isnan(ttl[n]):
                    unordered = True
                elif ttl[n] < soonest:
                    soonest = ttl[n]
            dt = np.nan if unordered else max(min(soonest, left), 0.0)
            for n in range(N):
                slot_energy_j[e, n] += power_now_w[e, n] * dt
                work[e, n] -= speed[n] * dt
            now_s[e] += dt
            left -= dt
            for n in range(N):
                if ttl[n] <= dt + TIME_TOL_S:
                    _end_stage(e, n, stream, receive_w, server_enabled, now_s, started, num_tasks, arrival_s, work, phase, next_point,
                               next_channel, task, task_table, point, channel_index, received_w, power_w, gain, following,
                               power_now_w, speed_other, download_bps, completion_s, finished, slot_finished)


@njit(**_JIT)
def _end_stage(e, n, stream, receive_w, server_enabled, now_s, started, num_tasks, arrival_s, work, phase, next_point,
               next_channel, task, task_table, point, channel_index, received_w, power_w, gain, following,
               power_now_w, speed_other, download_bps, completion_s, finished, slot_finished):
    """Device (e, n)'s stage ended (or, idle in a stream, its next task arrived)."""
    current = phase[e, n]
    if not stream or current < DONE:  # only streams wake idle devices
        following_stage = following[n, point[e, n], current + 1]
        phase[e, n] = following_stage
        work[e, n] = task[e, n, min(following_stage, NUM_STAGES - 1)]
        if following_stage == DONE:
            completion_s[e, n, finished[e, n]] = now_s[e]
            finished[e, n] += 1
            slot_finished[e, n] += 1
            start_task(e, n, stream, now_s, started, num_tasks, arrival_s, work, phase, next_point, next_channel, task, task_table,
                       point, channel_index, received_w, power_w, gain, following)
    elif current == IDLE:
        start_task(e, n, stream, now_s, started, num_tasks, arrival_s, work, phase, next_point, next_channel, task, task_table,
                   point, channel_index, received_w, power_w, gain, following)
    _stage_rates(e, n, receive_w, server_enabled, phase, task, power_w, download_bps, power_now_w, speed_other)


@njit(**_JIT)
def _stage_rates(e, n, receive_w, server_enabled, phase, task, power_w, download_bps, power_now_w, speed_other):
    """Device (e, n)'s power and its progress per second (outside the upload and the shared tail) in its current stage."""
    now = phase[e, n]
    if now == HEAD:
        power_now_w[e, n] = task[e, n, HEAD_POWER]
    elif now == UPLOAD:
        power_now_w[e, n] = power_w[e, n]
    elif now == DOWNLOAD:
        power_now_w[e, n] = receive_w
    else:
        power_now_w[e, n] = 0.0
    if server_enabled:
        speed_other[e, n] = download_bps[e, n] if now == DOWNLOAD else 1.0


@njit(**_JIT)
def stage_rates(receive_w, server_enabled, phase, task, power_w, download_bps, power_now_w, speed_other):
    """`_stage_rates` for every device (new powers or new episodes: once a slot)."""
    E, N = phase.shape
    for e in range(E):
        for n in range(N):
            _stage_rates(e, n, receive_w, server_enabled, phase, task, power_w, download_bps, power_now_w, speed_other)

"""``coinfer simulate``: one evaluation episode told slot by slot, for people, not for training."""

from __future__ import annotations

import sys
from typing import TextIO


from coinfer.rl.policy import Policy
from coinfer.rl.scenario import Scenario
from coinfer.rl.sim.core import STAGE_NAMES, Simulator
from coinfer.rl.sim.metrics import EpisodeMetrics


def narrate_episode(scenario: Scenario, policy: Policy, seed: int = 0, out: TextIO | None = None, max_slots: int | None = None) -> EpisodeMetrics:
    """Run one evaluation episode and write, per slot and device, the decision and the queue (to stdout by default)."""
    out = sys.stdout if out is None else out  # read at call time: a stream bound at import outlives a redirection
    sim = Simulator(scenario, num_envs=1, mode="eval", seed=seed)
    names = [p.name for p in scenario.devices[0].profile.points]
    policy.reset()
    out.write(f"scenario {scenario.name}: {scenario.num_devices} devices, {scenario.num_subchannels} sub-channels, "
              f"slots of {scenario.episode.slot_s:g} s; policy {policy.name}\n")
    for n, d in enumerate(scenario.devices):
        out.write(f"  device {n}: {d.profile.name} at {sim.distance_m[0, n]:.1f} m, power {d.power_range_w[0]:g}..{d.power_range_w[1]:g} W, "
                  f"{sim.num_tasks[0, n]} tasks\n")
    while True:
        action = policy.act(sim.global_state()[0]).batched()
        slot = int(sim.slot[0])
        outcome = sim.step(action.points, action.channels, action.powers_w)
        out.write(f"slot {slot:3d}  t={sim.now_s[0]:6.2f} s  reward {outcome.reward[0]:8.4f}  "
                  f"finished {int(outcome.finished_tasks[0].sum()):3d}  energy {outcome.energy_j[0].sum():7.4f} J\n")
        for n in range(scenario.num_devices):
            p = int(action.points[0, n])
            left = int(sim.num_tasks[0, n] - sim.finished[0, n])
            out.write(f"    device {n}: point {p} ({names[p]:>7s})  channel {int(action.channels[0, n])}  "
                      f"power {action.powers_w[0, n]:9.3g} W  finished {int(outcome.finished_tasks[0, n]):2d}  "
                      f"queue {left:4d}  now {STAGE_NAMES[int(sim.phase[0, n])]}\n")
        if outcome.terminated[0] or outcome.truncated[0] or (max_slots is not None and slot + 1 >= max_slots):
            break
    m = sim.episode_metrics(0)
    out.write(
        f"done after {m.slots} slots: {m.finished_tasks}/{m.total_tasks} tasks, reward {m.reward:.4f}, "
        f"{m.latency_per_task_s:.4f} s and {m.energy_per_task_j:.4f} J per task (paper metrics), "
        f"task latency mean {m.task_latency_mean_s:.3f} s, p95 {m.task_latency_p95_s:.3f} s\n"
    )
    return m

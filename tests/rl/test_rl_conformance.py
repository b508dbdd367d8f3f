"""Conformance: fixed policies in the paper scenario reproduce the paper simulator's figures.

Reference figures (ANCHORS.md, MAHPPO section): 5 UEs at 50 m, 200 tasks each, ResNet18, in
evaluation mode. Metric: time = slots x slot length x N / finished tasks; energy per finished task.
"""

from __future__ import annotations

import numpy as np
import pytest

from coinfer.rl.scenario import load_scenario
from coinfer.rl.sim.core import Simulator

REFERENCE = {
    # name: (point, power_w, latency_per_task_s, energy_per_task_j)
    "all local": (5, 0.1, 0.0475, 0.0984),
    "all at point 3, 0.1 W": (3, 0.1, 0.0700, 0.0771),
    "all at point 1, 0.1 W": (1, 0.1, 0.1775, 0.0247),
}


def run_fixed(point: int, power_w: float):
    scenario = load_scenario("mahppo-paper-resnet18")
    sim = Simulator(scenario, num_envs=1, mode="eval", seed=0)
    N, K = scenario.num_devices, scenario.num_subchannels
    channels = (np.arange(N) % K)[None]  # UE i on sub-channel i mod 2
    while True:
        out = sim.step(np.full((1, N), point), channels, np.full((1, N), power_w))
        if out.terminated[0] or out.truncated[0]:
            return sim.episode_metrics(0)


@pytest.mark.parametrize("name", list(REFERENCE))
def test_paper_reference_figures_within_one_percent(name):
    point, power_w, latency_s, energy_j = REFERENCE[name]
    m = run_fixed(point, power_w)
    assert m.finished_tasks == 1000 and not m.truncated
    assert m.latency_per_task_s == pytest.approx(latency_s, rel=0.01)
    assert m.energy_per_task_j == pytest.approx(energy_j, rel=0.01)


def test_paper_time_metric_counts_the_last_partial_slot():
    # All local: 200 x 45.887 ms = 9.18 s of work, so 19 slots (18 full and one partial).
    m = run_fixed(5, 0.1)
    assert m.slots == 19
    assert m.latency_per_task_s == pytest.approx(19 * 0.5 * 5 / 1000)

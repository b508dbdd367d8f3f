"""Shared fixtures of the rl tests: a tiny scenario that simulates in milliseconds."""

from __future__ import annotations

from pathlib import Path

import pytest

TINY_TOML = """
name = "tiny"
description = "3 ResNet18 devices, 2 sub-channels, 12 tasks each"

[network]
num_subchannels = 2
subchannel_bandwidth_hz = 1.0e6
path_loss_exponent = 3.0
noise_w = 1.0e-9

[episode]
slot_s = 0.5
max_slots = 8

[tasks]
arrivals = "batch"
mean_tasks_per_device = 12

[reward]
beta = 1.0

[evaluation]
tasks_per_device = 12
max_slots = 40

[[devices]]
count = 3
profile = "jetson-nano-resnet18"
power_range_w = [1.0e-10, 1.0]
distance_range_m = [1.0, 100.0]
eval_distance_m = 50.0
"""


@pytest.fixture
def tiny_toml(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(TINY_TOML)
    return path


@pytest.fixture
def tiny(tiny_toml: Path):
    from coinfer.rl.scenario import load_scenario

    return load_scenario(tiny_toml)

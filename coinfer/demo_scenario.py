"""The demo's offloading scenario: the paper's cell, rescaled to the profile measured here.

The MAHPPO paper's setting (`mahppo-paper-resnet18`) pairs a Jetson Nano running resnet18 on
224 x 224 images with 1 MHz sub-channels and 0.5 s slots: a local inference takes about a tenth
of a slot and uploading the first split point's latent about a sixth of a local inference, so a
scheduler has a real choice between computing and transmitting. The demo's network runs on 8 x 8
digits on a server core: it is about 30 times faster and its latents about 150 times smaller. With
the paper's cell unchanged every task of an episode would end within the first slot and every
policy would score the same. So the demo keeps the paper's proportions instead: the slot scales
with the measured local latency, and the sub-channel bandwidth is chosen so that uploading the
first split point takes the same share of a local inference as in the paper.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from coinfer.core.errors import InvalidInput
from coinfer.core.profile import DeviceProfile, load_profile

REFERENCE_SCENARIO = "mahppo-paper-resnet18"
"""The built-in scenario whose proportions the demo's cell keeps."""
REFERENCE_PROFILE = "jetson-nano-resnet18"
"""The device profile that scenario runs."""


@dataclass(frozen=True)
class ScaledCell:
    """Slot length and sub-channel bandwidth of the demo's cell."""

    slot_s: float
    """Decision slot: the reference slot times the ratio of local latencies."""
    subchannel_bandwidth_hz: float
    """Sub-channel bandwidth that keeps the reference ratio of upload time to local latency."""
    time_scale: float
    """Measured local latency / reference local latency."""


def scale_cell(profile: DeviceProfile) -> ScaledCell:
    """The reference cell rescaled so that ``profile`` sees the reference's compute/upload balance."""
    from coinfer.rl.scenario import load_scenario

    reference = load_scenario(REFERENCE_SCENARIO)
    ref_profile = load_profile(REFERENCE_PROFILE)
    if profile.num_points < 3:
        raise InvalidInput(f"profile {profile.name!r} has {profile.num_points} points; the demo needs a split point between input and local")
    local_s, first_bits = profile.local_latency_s, profile.points[1].uplink_bits
    if not local_s > 0 or first_bits <= 0:
        raise InvalidInput(
            f"profile {profile.name!r}: local latency {local_s} s and first split point uplink {first_bits} bits must be positive"
        )
    time_scale = local_s / ref_profile.local_latency_s
    bits_scale = first_bits / ref_profile.points[1].uplink_bits
    # Upload time ~ bits / bandwidth: scale the bandwidth so it shrinks exactly as the compute time does.
    return ScaledCell(
        slot_s=reference.episode.slot_s * time_scale,
        subchannel_bandwidth_hz=reference.network.subchannel_bandwidth_hz * bits_scale / time_scale,
        time_scale=time_scale,
    )


def write_scenario(profile_path: Path, out: Path, devices: int) -> Path:
    """Write a scenario TOML for ``devices`` devices that all run the profile at ``profile_path``."""
    profile = load_profile(profile_path)
    cell = scale_cell(profile)
    out.write_text(
        f'''# Built by `coinfer demo` from the profile measured on this machine.
# The cell of {REFERENCE_SCENARIO}, with the slot and the sub-channel bandwidth rescaled so that
# this profile sees the paper's balance of compute and upload (see coinfer/demo_scenario.py).
name = "demo-{profile_path.stem}"
description = "{devices} devices running the split CNN profiled here; 2 sub-channels of {cell.subchannel_bandwidth_hz / 1e3:.0f} kHz, {cell.slot_s * 1e3:.1f} ms slots"

[network]
num_subchannels = 2
subchannel_bandwidth_hz = {cell.subchannel_bandwidth_hz!r}
path_loss_exponent = 3.0
noise_w = 1.0e-9
channel_model = "path-loss"

[episode]
slot_s = {cell.slot_s!r}
max_slots = 60

[tasks]
arrivals = "batch"
mean_tasks_per_device = 200

[reward]
beta = 1.0
min_finished = 0.8

[evaluation]
tasks_per_device = 200
max_slots = 400

[server]
model = "none"

[[devices]]
count = {devices}
profile = {json.dumps(str(profile_path.resolve()))}
power_range_w = [1.0e-10, 1.0]
distance_range_m = [1.0, 100.0]
eval_distance_m = 50.0
'''
    )
    return out

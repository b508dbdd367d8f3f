"""The simulation core: dynamics against closed-form task times, decisions, validation, seeding."""

from __future__ import annotations

import math

import numpy as np
import pytest

from coinfer.core.errors import InvalidInput
from coinfer.core.profile import load_profile
from coinfer.rl.envs.batched import BatchedEnv
from coinfer.rl.actions import JointAction
from coinfer.rl.scenario import load_scenario
from coinfer.rl.sim.core import HEAD, UPLOAD, Simulator, feature_names

RESNET = load_profile("jetson-nano-resnet18")
W, NOISE, ALPHA = 1e6, 1e-9, 3.0


def shannon_bps(power_w, distance_m, interference_w=0.0):
    return W * math.log2(1 + power_w * distance_m**-ALPHA / (interference_w + NOISE))


def make(tiny_toml, tmp_path, replace: dict[str, str] | None = None, extra: str = ""):
    text = tiny_toml.read_text()
    for old, new in (replace or {}).items():
        assert old in text
        text = text.replace(old, new)
    path = tmp_path / "case.toml"
    path.write_text(text + extra)
    return load_scenario(path)


def run_fixed(scenario, point, channels, power_w, slots=None, mode="eval"):
    sim = Simulator(scenario, num_envs=1, mode=mode, seed=0)
    N = scenario.num_devices
    for _ in range(slots or sim.max_slots):
        out = sim.step(np.full((1, N), point), np.asarray(channels)[None], np.full((1, N), power_w))
        if out.terminated[0] or out.truncated[0]:
            break
    return sim


def task_gaps(sim, device):
    done = sim.finished[0, device]
    return np.diff(sim.completion_s[0, device, :done])


def test_task_time_alone_is_head_plus_shannon_upload(tiny_toml, tmp_path):
    s = make(tiny_toml, tmp_path, {"count = 3": "count = 1"})
    sim = run_fixed(s, point=3, channels=[0], power_w=0.1)
    p3 = RESNET.points[3]
    expected = p3.head_latency_s + p3.uplink_bits / shannon_bps(0.1, 50.0)
    assert np.allclose(task_gaps(sim, 0), expected, rtol=1e-9)
    # The first task starts at reset, before any decision, at the initial (local) point.
    assert sim.completion_s[0, 0, 0] == pytest.approx(RESNET.points[-1].head_latency_s)


def test_simultaneous_uploads_on_one_subchannel_interfere(tiny_toml, tmp_path):
    s = make(tiny_toml, tmp_path, {"count = 3": "count = 2"})
    apart = run_fixed(s, point=3, channels=[0, 1], power_w=0.1)
    together = run_fixed(s, point=3, channels=[0, 0], power_w=0.1)
    p3 = RESNET.points[3]
    signal = 0.1 * 50.0**-ALPHA
    assert np.allclose(task_gaps(apart, 0), p3.head_latency_s + p3.uplink_bits / shannon_bps(0.1, 50.0), rtol=1e-9)
    assert np.allclose(task_gaps(together, 0), p3.head_latency_s + p3.uplink_bits / shannon_bps(0.1, 50.0, signal), rtol=1e-9)
    assert together.episode_metrics(0).latency_per_task_s > apart.episode_metrics(0).latency_per_task_s


def test_rates_change_when_an_upload_stops(tiny_toml, tmp_path):
    # Device 0 uploads the raw image while device 1 uploads short features on the same sub-channel:
    # device 0's rate rises whenever device 1 is computing, so its first raw upload ends earlier
    # than it would under constant interference, and later than alone.
    s = make(tiny_toml, tmp_path, {"count = 3": "count = 2", "max_slots = 40": "max_slots = 12"})
    sim = Simulator(s, num_envs=1, mode="eval", seed=0)
    for _ in range(12):
        sim.step(np.array([[0, 3]]), np.array([[0, 0]]), np.array([[0.1, 0.1]]))
    raw = RESNET.points[0].uplink_bits
    t_first_raw = sim.completion_s[0, 0, 1] - sim.completion_s[0, 0, 0]
    alone = raw / shannon_bps(0.1, 50.0)
    constant = raw / shannon_bps(0.1, 50.0, 0.1 * 50.0**-ALPHA)
    assert alone < t_first_raw < constant


def test_new_point_applies_from_next_task_and_power_at_once(tiny_toml, tmp_path):
    s = make(tiny_toml, tmp_path, {"count = 3": "count = 1"})
    sim = Simulator(s, num_envs=1, mode="eval", seed=0)
    # Slot 0: the local first task ends, then raw uploads at a tiny power (they take ages).
    sim.step(np.array([[0]]), np.array([[0]]), np.array([[1e-6]]))
    assert sim.phase[0, 0] == UPLOAD and sim.point[0, 0] == 0
    # Slot 1: ask for local and 4x the power: the upload in progress keeps point 0 and its
    # sub-channel, and the whole slot is spent uploading at the new power.
    out = sim.step(np.array([[5]]), np.array([[1]]), np.array([[4e-6]]))
    assert sim.point[0, 0] == 0 and sim.channel_index[0, 0] == 0 and sim.next_point[0, 0] == 5
    assert out.energy_j[0, 0] == pytest.approx(4e-6 * 0.5, rel=1e-9)


def test_actions_outside_the_space_name_device_and_component(tiny):
    sim = Simulator(tiny, num_envs=1, mode="eval")
    ok_p, ok_c, ok_w = np.array([[5, 5, 5]]), np.array([[0, 1, 0]]), np.array([[0.1, 0.1, 0.1]])
    with pytest.raises(InvalidInput, match=r"device 2.*split point 6 .*0\.\.5"):
        sim.step(np.array([[5, 5, 6]]), ok_c, ok_w)
    with pytest.raises(InvalidInput, match=r"device 1.*sub-channel -1"):
        sim.step(ok_p, np.array([[0, -1, 0]]), ok_w)
    with pytest.raises(InvalidInput, match=r"device 0.*power_w 2\.0.*\[1e-10, 1\] W"):
        sim.step(ok_p, ok_c, np.array([[2.0, 0.1, 0.1]]))
    with pytest.raises(InvalidInput, match=r"device 1.*power_w nan"):
        sim.step(ok_p, ok_c, np.array([[0.1, np.nan, 0.1]]))
    with pytest.raises(InvalidInput, match=r"shape"):
        sim.step(np.zeros((1, 4), dtype=int), ok_c, ok_w)


def test_same_seed_same_trajectory_and_other_seed_differs(tiny):
    def trajectory(seed):
        sim = Simulator(tiny, num_envs=4, mode="train", seed=seed)
        rng = np.random.default_rng(123)
        rewards, states = [], []
        for _ in range(20):
            out = sim.step(rng.integers(0, 6, (4, 3)), rng.integers(0, 2, (4, 3)), rng.uniform(1e-10, 1, (4, 3)))
            rewards.append(out.reward)
            states.append(sim.global_state())
            done = out.terminated | out.truncated
            sim.reset(np.flatnonzero(done))
        return np.array(rewards), np.array(states)

    r1, s1 = trajectory(7)
    r2, s2 = trajectory(7)
    r3, _ = trajectory(8)
    assert np.array_equal(r1, r2) and np.array_equal(s1, s2)
    assert not np.array_equal(r1, r3)


def test_batched_environments_equal_single_ones(tiny):
    actions = [(5, 0.1), (3, 0.1), (1, 0.5)]
    env = BatchedEnv(tiny, num_envs=3, mode="eval")
    env.reset()
    N = tiny.num_devices
    joint = JointAction(
        np.array([[p] * N for p, _ in actions]), np.tile(np.arange(N) % 2, (3, 1)), np.array([[w] * N for _, w in actions])
    )
    batched = {}
    while len(batched) < 3:
        for e, m in env.step(joint).episodes:
            batched.setdefault(e, m)
    for e, (point, power) in enumerate(actions):
        single = run_fixed(tiny, point, np.arange(N) % 2, power).episode_metrics(0)
        assert batched[e] == single


def test_edge_server_adds_tail_and_download(tiny_toml, tmp_path):
    server = """
[server]
model = "shared"
speedup = 4.0
result_bits = 3232
downlink_bandwidth_hz = 1.0e6
downlink_power_w = 1.0
receive_power_w = 0.5
"""
    replace = {"count = 3": "count = 2"}
    s = make(tiny_toml, tmp_path, replace, extra=server)
    p3 = RESNET.points[3]
    tail = (RESNET.local_latency_s - p3.head_latency_s) / 4.0
    download = 3232 / (1e6 * math.log2(1 + 1.0 * 50.0**-ALPHA / NOISE))
    upload = p3.uplink_bits / shannon_bps(0.1, 50.0)
    # Different sub-channels: no interference, but both tails run at once and share the server.
    sim = run_fixed(s, point=3, channels=[0, 1], power_w=0.1)
    assert np.allclose(task_gaps(sim, 0), p3.head_latency_s + upload + 2 * tail + download, rtol=1e-9)
    m = sim.episode_metrics(0)
    per_task_j = p3.head_energy_j + 0.1 * upload + 0.5 * download
    local_first_j = RESNET.points[-1].head_energy_j
    assert m.energy_per_task_j == pytest.approx((per_task_j * 11 + local_first_j) / 12, rel=1e-9)
    # Local tasks never touch the server: the same figures as without a server.
    plain = make(tiny_toml, tmp_path, replace)
    assert run_fixed(s, 5, [0, 1], 0.1).episode_metrics(0) == run_fixed(plain, 5, [0, 1], 0.1).episode_metrics(0)


def test_stream_arrivals_idle_between_tasks_and_latency_counts_from_arrival(tiny_toml, tmp_path):
    s = make(tiny_toml, tmp_path, {"count = 3": "count = 1", 'arrivals = "batch"': 'arrivals = "poisson-stream"\narrival_rate_per_s = 2.0'})
    sim = run_fixed(s, point=5, channels=[0], power_w=0.1)
    m = sim.episode_metrics(0)
    assert m.finished_tasks == 12
    # At 2 tasks/s a 46 ms task rarely waits: latency is close to the service time, and the
    # device spends energy only while computing.
    assert m.task_latency_mean_s < 3 * RESNET.local_latency_s
    assert m.energy_per_task_j == pytest.approx(RESNET.points[-1].head_energy_j, rel=1e-9)
    assert "waiting_frac" in sim.feature_names


def test_rayleigh_fading_is_seeded(tiny_toml, tmp_path):
    s = make(tiny_toml, tmp_path, {"noise_w = 1.0e-9": 'noise_w = 1.0e-9\nchannel_model = "rayleigh"'})

    def reward(seed):
        env = BatchedEnv(s, num_envs=1, mode="eval", seed=seed)
        env.reset()
        step = env.step(JointAction(np.full((1, 3), 1), np.array([[0, 1, 0]]), np.full((1, 3), 0.1)))
        return step.rewards[0]

    assert reward(1) == reward(1) and reward(1) != reward(2)


def test_training_mode_draws_distances_and_tasks_and_truncates(tiny):
    sim = Simulator(tiny, num_envs=64, mode="train", seed=0)
    assert sim.distance_m.min() >= 1.0 and sim.distance_m.max() <= 100.0 and sim.distance_m.std() > 10
    assert sim.num_tasks.min() >= 1 and sim.num_tasks.std() > 0
    offload_slowly = (np.zeros((64, 3), dtype=int), np.zeros((64, 3), dtype=int), np.full((64, 3), 1e-10))
    for _ in range(tiny.episode.max_slots):
        out = sim.step(*offload_slowly)
    assert out.truncated.all() and not out.terminated.any()


def test_observations_stay_within_declared_bounds(tiny):
    sim = Simulator(tiny, num_envs=8, mode="train", seed=3)
    high = sim.feature_high()
    rng = np.random.default_rng(0)
    for _ in range(10):
        sim.step(rng.integers(0, 6, (8, 3)), rng.integers(0, 2, (8, 3)), rng.uniform(1e-10, 1, (8, 3)))
        f = sim.device_features()
        assert (f >= 0).all() and (f <= high + 1e-9).all()
    assert sim.local_observations().shape == (8, 3, 2 * sim.num_features)


def test_feature_scales_rebuild_the_features_from_the_state(tiny):
    # Readers outside the simulator (the runtime's live observation) scale by these constants.
    sim = Simulator(tiny, num_envs=4, mode="train", seed=5)
    scales = sim.feature_scales()
    assert scales.names == feature_names(tiny) and np.array_equal(scales.high, sim.feature_high())
    rng = np.random.default_rng(1)
    for _ in range(3):
        sim.step(rng.integers(0, 6, (4, 3)), rng.integers(0, 2, (4, 3)), rng.uniform(1e-3, 1, (4, 3)))
    f, col = sim.device_features(), {name: i for i, name in enumerate(scales.names)}
    head_left = np.where(sim.phase == HEAD, sim.work, 0.0)
    upload_left = np.where(sim.phase == UPLOAD, sim.work, np.where(sim.phase < UPLOAD, sim.stage_work[..., UPLOAD], 0.0))
    np.testing.assert_allclose(f[..., col["head_left_frac"]], head_left / scales.local_latency_s)
    np.testing.assert_allclose(f[..., col["upload_left_frac"]], upload_left / scales.raw_bits)
    np.testing.assert_allclose(f[..., col["distance_frac"]], sim.distance_m / scales.distance_high_m)
    np.testing.assert_array_equal(scales.stage_work[..., HEAD][:, -1], scales.local_latency_s)
    scales.raw_bits[:] = 0.0  # a copy: the simulator's own constants are untouched
    assert np.all(sim.feature_scales().raw_bits >= 1.0)

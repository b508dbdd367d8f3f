"""The paper code's agent under our protocol (coinfer.bench.paper_code): its weights load under its
own parameter names, its state is mapped onto ours, and the harness that trains a checkout writes
what the evaluation reads. A small stand-in checkout plays the paper code (which is not ours)."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from coinfer.bench import paper_code
from coinfer.core.errors import InvalidInput, NotFound
from coinfer.rl.episodes import EpisodeSet
from coinfer.rl.evaluation import evaluate_policy
from coinfer.rl.scenario import load_scenario

SCENARIO = load_scenario(paper_code.SCENARIO)


def write_actors(path, seed=0):
    torch.manual_seed(seed)
    n, f = SCENARIO.num_devices, 4
    tensors = {}
    for i in range(n):
        actor = paper_code.PaperCodeActor(n * f, SCENARIO.num_points, SCENARIO.num_subchannels, 1.0)
        tensors.update({f"actor{i}.{k}": v.detach().contiguous() for k, v in actor.state_dict().items()})
    save_file(tensors, str(path))
    return tensors


def test_weights_load_under_the_paper_codes_names_and_greedy_is_the_argmax(tmp_path):
    tensors = write_actors(tmp_path / "a.safetensors")
    policy = paper_code.PaperCodePolicy.load(tmp_path / "a.safetensors", SCENARIO)
    assert set(policy.actors[0].state_dict()) == {k.split(".", 1)[1] for k in tensors if k.startswith("actor0.")}
    rng = np.random.default_rng(0)
    states = rng.random((3, policy.state_dim))
    action = policy.act(states)
    for e in range(3):
        with torch.no_grad():
            point_p, channel_p, mean_w, _ = policy.actors[2](torch.as_tensor(policy.paper_state(states[e])))
        assert action.points[e, 2] == int(point_p.argmax()) and action.channels[e, 2] == int(channel_p.argmax())
        assert action.powers_w[e, 2] == pytest.approx(float(mean_w), rel=1e-6)
    # A row's action does not depend on its batch.
    single = policy.act(states[1])
    assert np.array_equal(single.points, action.points[1]) and np.allclose(single.powers_w, action.powers_w[1])


def test_the_distance_is_rescaled_to_the_paper_codes_range():
    policy = paper_code.PaperCodePolicy([paper_code.PaperCodeActor(20, 6, 2, 1.0) for _ in range(5)], SCENARIO)
    low, high = SCENARIO.devices[0].distance_range_m
    row = np.tile([0.5, 0.25, 0.75, 50.0 / high], 5)  # ours: distance / far end
    mapped = policy.paper_state(row).reshape(5, 4)
    assert np.allclose(mapped[:, 3], (50.0 - low) / (high - low))  # the paper code's: (d - dmin) / (dmax - dmin)
    assert np.allclose(mapped[:, :3], row.reshape(5, 4)[:, :3])


def test_sampled_episodes_repeat_and_stay_in_the_power_range(tmp_path):
    write_actors(tmp_path / "a.safetensors", seed=1)
    policy = paper_code.PaperCodePolicy.load(tmp_path / "a.safetensors", SCENARIO)
    episodes = EpisodeSet.of(SCENARIO, 2, cell="evaluation")
    first = evaluate_policy(policy, SCENARIO, episodes, deterministic=False)
    again = evaluate_policy(policy, SCENARIO, episodes, deterministic=False, batch_size=1)
    assert [m.reward for m in first.per_episode] == [m.reward for m in again.per_episode]
    action = policy.act(np.random.default_rng(0).random((4, policy.state_dim)), deterministic=False,
                        rngs=[np.random.default_rng(i) for i in range(4)])
    assert (action.powers_w >= 1e-10).all() and (action.powers_w <= 1.0).all()


def test_a_file_without_an_actor_per_device_is_refused(tmp_path):
    tensors = write_actors(tmp_path / "a.safetensors")
    save_file({k: v for k, v in tensors.items() if not k.startswith("actor4.")}, str(tmp_path / "b.safetensors"))
    with pytest.raises(InvalidInput, match="actor 4"):
        paper_code.PaperCodePolicy.load(tmp_path / "b.safetensors", SCENARIO)
    with pytest.raises(NotFound, match="no paper-code actors"):
        paper_code.PaperCodePolicy.load(tmp_path / "missing.safetensors", SCENARIO)


def test_seeds_without_runs_need_a_checkout(tmp_path):
    with pytest.raises(InvalidInput, match="--code"):
        paper_code.main(["--seeds", "3", "--out", str(tmp_path)])
    with pytest.raises(NotFound, match="not a checkout"):
        paper_code.main(["--seeds", "3", "--out", str(tmp_path), "--code", str(tmp_path)])
    with pytest.raises(InvalidInput, match="--seeds"):
        paper_code.main(["--seeds", "a", "--out", str(tmp_path)])


STAND_IN = '''
"""A stand-in for the paper code's train_agent.py: an agent and a test environment of three slots."""
import sys
import numpy as np
import torch
from coinfer.bench.paper_code import PaperCodeActor

steps = int(sys.argv[sys.argv.index("--max_global_step") + 1])
draw = float(np.random.random())  # the harness seeds numpy: equal seeds, equal runs


class Actor(PaperCodeActor):
    def forward(self, x):  # the paper code's actor returns (points, channels, (mean, spread))
        pp, pc, mu, sig = super().forward(x)
        return pp, pc, (mu[..., None], sig[..., None])


class Agent:
    pmax = 1.0

    def __init__(self):
        self.actors = [Actor(20, 6, 2, 1.0).cuda() for _ in range(5)]  # .cuda() must be harmless

    def select_action(self, state, test=False):
        with torch.no_grad():
            out = []
            for actor in self.actors:
                pp, pc, (mu, sig) = actor(torch.tensor(state, dtype=torch.float32))
                out.append((int(torch.multinomial(pp, 1)), int(torch.multinomial(pc, 1)), float(mu)))
        return out


class Env:
    def reset(self):
        self.t = 0
        return [draw] * 20

    def step(self, actions):
        self.t += 1
        return [draw] * 20, -0.1 * self.t, self.t >= 3, {"total_time_used": 0.5, "total_energy_used": 0.01, "total_finished": 10}


agent, test_env = Agent(), Env()
open("steps.txt", "w").write(str(steps))
'''


def test_the_harness_trains_a_checkout_and_writes_what_the_evaluation_reads(tmp_path):
    code = tmp_path / "code"
    (code / "agent").mkdir(parents=True)
    (code / "agent" / "hppo.py").write_text("")
    (code / "train_agent.py").write_text(textwrap.dedent(STAND_IN))
    run_dir = paper_code.train_seed(code, 7, tmp_path / "out", steps=123)
    assert (run_dir / "steps.txt").read_text() == "123"
    own = json.loads((run_dir / paper_code.CELL_FILE).read_text())
    assert own["greedy"]["reward"] == pytest.approx(-0.6) and own["greedy"]["latency_per_task_s"] == pytest.approx(0.05)
    assert own["sampled"]["energy_per_task_j"] == pytest.approx(0.001)
    assert not list(run_dir.glob("*.tmp"))
    policy = paper_code.PaperCodePolicy.load(run_dir / paper_code.ACTOR_FILE, SCENARIO)
    assert len(policy.actors) == 5
    # Trained once: a second call finds the run and does not train again.
    (run_dir / "steps.txt").unlink()
    assert paper_code.train_seed(code, 7, tmp_path / "out", steps=123) == run_dir and not (run_dir / "steps.txt").exists()


def test_a_failing_checkout_is_reported_with_its_last_lines(tmp_path):
    code = tmp_path / "code"
    (code / "agent").mkdir(parents=True)
    (code / "agent" / "hppo.py").write_text("")
    (code / "train_agent.py").write_text("raise SystemExit('no GPU here, says the stand-in')\n")
    with pytest.raises(RuntimeError, match="seed 1 failed.*no GPU here"):
        paper_code.train_seed(code, 1, tmp_path / "out", steps=10)
    assert not (tmp_path / "out" / "seed1" / paper_code.ACTOR_FILE).exists()

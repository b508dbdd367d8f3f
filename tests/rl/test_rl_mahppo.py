"""MAHPPO: GAE, the per-component clipped loss, the hybrid distribution, training, files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from coinfer.core.errors import InvalidInput
from coinfer.rl.mahppo import MahppoConfig, clipped_surrogate_loss, compute_gae, powers_from_unit, train_mahppo
from coinfer.rl.mahppo_policy import MahppoPolicy
from coinfer.rl.networks import HybridActor, HybridParams, hybrid_entropy, hybrid_log_prob, hybrid_sample
from coinfer.rl.policy import load_policy, make_policy
from coinfer.rl.scenario import load_scenario


def gae_by_sums(rewards, values, ends, last_values, gamma, lam, decay=None):
    """A_t = sum_l (gamma lam)^l delta_{t+l}, stopping at the end of the episode (the sum form);
    ``decay`` replaces gamma lam (the paper code's recursion decays by lam alone)."""
    T, E = rewards.shape
    nxt = np.vstack([values[1:], last_values[None]])
    delta = rewards + gamma * nxt * (1 - ends) - values
    adv = np.zeros_like(rewards)
    for e in range(E):
        for t in range(T):
            total, weight = 0.0, 1.0
            for k in range(t, T):
                total += weight * delta[k, e]
                if ends[k, e]:
                    break
                weight *= gamma * lam if decay is None else decay
            adv[t, e] = total
    return adv


def test_gae_equals_the_sum_of_discounted_td_errors():
    rng = np.random.default_rng(0)
    T, E = 12, 3
    rewards, values, last = rng.normal(size=(T, E)), rng.normal(size=(T, E)), rng.normal(size=E)
    ends = (rng.random((T, E)) < 0.2).astype(float)
    for gamma, lam in [(0.95, 0.95), (0.9, 0.0), (1.0, 1.0)]:
        adv, ret = compute_gae(*(torch.tensor(a) for a in (rewards, values, ends, last)), gamma, lam)
        expected = gae_by_sums(rewards, values, ends, last, gamma, lam)
        assert np.allclose(adv.numpy(), expected)
        assert np.allclose(ret.numpy(), expected + values)


def test_the_paper_codes_trace_decays_by_lambda_alone_and_its_critic_learns_one_step_targets():
    rng = np.random.default_rng(1)
    T, E = 10, 2
    rewards, values, last = rng.normal(size=(T, E)), rng.normal(size=(T, E)), rng.normal(size=E)
    ends = (rng.random((T, E)) < 0.2).astype(float)
    gamma, lam = 0.9, 0.8
    args = [torch.tensor(a) for a in (rewards, values, ends, last)]
    adv, target = compute_gae(*args, gamma, lam, trace_decay="lambda", critic_target="one-step")
    assert np.allclose(adv.numpy(), gae_by_sums(rewards, values, ends, last, gamma, lam, decay=lam))
    assert not np.allclose(adv.numpy(), gae_by_sums(rewards, values, ends, last, gamma, lam))
    nxt = np.vstack([values[1:], last[None]])
    assert np.allclose(target.numpy(), rewards + gamma * nxt * (1 - ends))
    # Each choice on its own: the defaults' advantages with one-step targets, and the reverse.
    adv_default, _ = compute_gae(*args, gamma, lam)
    adv_one_step, _ = compute_gae(*args, gamma, lam, critic_target="one-step")
    assert torch.equal(adv_default, adv_one_step)
    _, target_lambda = compute_gae(*args, gamma, lam, trace_decay="lambda")
    assert np.allclose(target_lambda.numpy(), adv.numpy() + values)


def test_unknown_trace_decay_or_critic_target_is_refused():
    with pytest.raises(InvalidInput, match="trace_decay"):
        MahppoConfig(trace_decay="gamma").validate()
    with pytest.raises(InvalidInput, match="critic_target"):
        MahppoConfig(critic_target="td0").validate()


def test_gae_does_not_bootstrap_across_an_episode_end():
    rewards = torch.tensor([[1.0], [1.0]])
    values = torch.zeros(2, 1)
    adv, _ = compute_gae(rewards, values, torch.tensor([[1.0], [0.0]]), torch.tensor([100.0]), 0.9, 1.0)
    assert adv[0, 0] == pytest.approx(1.0)  # the 100 after the end does not leak back
    assert adv[1, 0] == pytest.approx(1.0 + 0.9 * 100.0)


def test_clipped_loss_has_one_ratio_per_component():
    old = torch.zeros(1, 1, 3)
    # Component 0 moved far beyond the clip range, components 1 and 2 inside it.
    new = torch.tensor([[[0.5, 0.05, -0.05]]], requires_grad=True)
    loss = clipped_surrogate_loss(new, old, torch.tensor([1.0]), clip_coef=0.2)
    loss.backward()
    grad = new.grad[0, 0]
    assert grad[0] == 0.0  # clipped: no push further
    assert grad[1] < 0 and grad[2] < 0  # still improving the other two
    expected = -(min(np.exp(0.5), 1.2) + np.exp(0.05) + np.exp(-0.05)) / 3
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_hybrid_log_prob_and_entropy_match_torch_distributions():
    torch.manual_seed(0)
    params = HybridParams(torch.randn(4, 2, 6), torch.randn(4, 2, 3), torch.rand(4, 2), torch.rand(4, 2) + 0.1)
    points, channels, power_u = hybrid_sample(params, deterministic=False)
    lp = hybrid_log_prob(params, points, channels, power_u)
    cat_p, cat_c = torch.distributions.Categorical(logits=params.point_logits), torch.distributions.Categorical(logits=params.channel_logits)
    normal = torch.distributions.Normal(params.power_mean, params.power_std)
    assert torch.allclose(lp, torch.stack([cat_p.log_prob(points), cat_c.log_prob(channels), normal.log_prob(power_u)], -1), atol=1e-5)
    ent = hybrid_entropy(params)
    assert torch.allclose(ent, torch.stack([cat_p.entropy(), cat_c.entropy(), normal.entropy()], -1), atol=1e-5)
    modes = hybrid_sample(params, deterministic=True)
    assert torch.equal(modes[0], params.point_logits.argmax(-1)) and torch.equal(modes[2], params.power_mean)


def test_power_samples_are_clamped_into_each_devices_range():
    low, high = np.array([1e-10, 0.2]), np.array([1.0, 0.5])
    out = powers_from_unit(np.array([[-0.3, 1.7], [0.5, 0.5]]), low, high)
    assert out[0, 0] == low[0] and out[0, 1] == high[1]
    assert out[1, 1] == pytest.approx(0.35)


def small_config(tiny_toml, **kw) -> MahppoConfig:
    base = dict(scenario=str(tiny_toml), total_steps=512, num_envs=8, rollout_steps=256, update_epochs=2, minibatch_size=128,
                eval_every_steps=256, checkpoint_every_steps=256, actor_hidden=(16, 16), critic_hidden=(16, 16), seed=3)
    base.update(kw)
    return MahppoConfig(**base)


def test_training_writes_policy_curve_and_checkpoints_and_is_deterministic(tiny_toml, tmp_path):
    first = train_mahppo(small_config(tiny_toml), tmp_path / "a")
    second = train_mahppo(small_config(tiny_toml), tmp_path / "b")
    assert first.steps == 512 and len(first.curve) == 2
    assert [p.eval_reward for p in first.curve] == [p.eval_reward for p in second.curve]
    assert [p.train_reward for p in first.curve] == [p.train_reward for p in second.curve]
    assert (tmp_path / "a" / "policy.json").read_text() == (tmp_path / "b" / "policy.json").read_text()
    assert (tmp_path / "a" / "policy.safetensors").read_bytes() == (tmp_path / "b" / "policy.safetensors").read_bytes()
    for name in ("train.csv", "eval.csv", "learning_curve.png"):
        assert (tmp_path / "a" / name).stat().st_size > 0
    assert list((tmp_path / "a" / "checkpoints").glob("*.safetensors"))
    assert first.best_eval_reward == max(p.eval_reward for p in first.curve) and first.best_policy_path.exists()
    other = train_mahppo(small_config(tiny_toml, seed=4, total_steps=256, eval_every_steps=0), None)
    assert other.curve[-1].eval_reward != first.curve[0].eval_reward or other.curve[-1].train_reward != first.curve[0].train_reward

    scenario = load_scenario(tiny_toml)
    policy = load_policy(tmp_path / "a", scenario)
    assert isinstance(policy, MahppoPolicy)
    state = np.random.default_rng(0).random((5, scenario.num_devices * 4))
    action = policy.act(state)
    assert action.points.shape == (5, 3) and ((0 <= action.points) & (action.points < 6)).all()
    assert ((1e-10 <= action.powers_w) & (action.powers_w <= 1.0)).all()
    assert np.array_equal(policy.act(state[0]).points, action.points[0])
    with pytest.raises(InvalidInput, match="expects global states of 12 values"):
        policy.act(np.zeros(10))


def test_policy_for_other_devices_or_points_is_refused(tiny_toml, tmp_path):
    scenario = load_scenario(tiny_toml)
    actor = HybridActor(3, 4, 6, 2, (8,))
    path = MahppoPolicy(actor, scenario).save(tmp_path / "p")
    with pytest.raises(InvalidInput, match=r"trained for 3 devices, scenario 'mahppo-paper-resnet18' has 5"):
        load_policy(path, "mahppo-paper-resnet18")
    spec = json.loads(path.read_text())
    spec["num_points"] = 4
    path.write_text(json.dumps(spec))
    with pytest.raises(InvalidInput, match=r"trained for 4 split points.*has 6"):
        make_policy(path, scenario)


def test_shared_actor_serves_another_number_of_devices(tiny_toml, tmp_path):
    scenario = load_scenario(tiny_toml)
    path = MahppoPolicy(HybridActor(3, 4, 6, 2, (8,), share=True, max_devices=8), scenario).save(tmp_path / "shared")
    five = load_policy(path, scenario.with_num_devices(5))
    assert five.act(np.zeros(5 * 4)).points.shape == (5,)
    with pytest.raises(InvalidInput, match=r"at most 8 devices"):
        load_policy(path, scenario.with_num_devices(9))


def test_shared_actor_trains(tiny_toml):
    result = train_mahppo(small_config(tiny_toml, share_actor=True, total_steps=256, eval_every_steps=0), None)
    assert np.isfinite(result.final_eval_reward)


def test_log_power_scale_spans_the_useful_powers_geometrically():
    low, high = np.array([1e-10]), np.array([1.0])
    out = powers_from_unit(np.array([[0.0], [0.5], [1.0], [2.0]]), low, high, "log")
    assert np.allclose(out[:, 0], [1e-3, 10**-1.5, 1.0, 1.0])
    with pytest.raises(InvalidInput, match="power scale"):
        powers_from_unit(np.zeros((1, 1)), low, high, "cubic")


def test_tanh_policy_is_rebuilt_with_tanh(tiny_toml, tmp_path):
    # The paper's nonlinearity: a saved tanh actor must act the same after loading, not as ReLU.
    scenario = load_scenario(tiny_toml)
    torch.manual_seed(0)
    actor = HybridActor(3, 4, 6, 2, (8,), activation="tanh")
    path = MahppoPolicy(actor, scenario).save(tmp_path / "tanh")
    assert json.loads(path.read_text())["activation"] == "tanh"
    state = np.random.default_rng(1).normal(size=(16, 12)) * 3
    loaded = load_policy(path, scenario)
    assert loaded.actor.activation == "tanh"
    assert np.allclose(loaded.act(state).powers_w, MahppoPolicy(actor, scenario).act(state).powers_w)
    as_relu = HybridActor(3, 4, 6, 2, (8,))
    as_relu.load_state_dict(actor.state_dict())
    assert not np.allclose(MahppoPolicy(as_relu, scenario).act(state).powers_w, loaded.act(state).powers_w)


def test_policy_files_without_activation_load_as_relu_and_unknown_ones_are_refused(tiny_toml, tmp_path):
    scenario = load_scenario(tiny_toml)
    path = MahppoPolicy(HybridActor(3, 4, 6, 2, (8,)), scenario).save(tmp_path / "p")
    spec = json.loads(path.read_text())
    del spec["activation"]  # written before the field existed: every such actor was ReLU
    path.write_text(json.dumps(spec))
    assert load_policy(path, scenario).actor.activation == "relu"
    for bad in ("gelu", ["relu"]):
        spec["activation"] = bad
        path.write_text(json.dumps(spec))
        with pytest.raises(InvalidInput, match=r"field 'activation' must be one of 'relu', 'tanh', got "):
            load_policy(path, scenario)


def test_tanh_training_runs_and_unknown_activation_is_refused(tiny_toml, tmp_path):
    result = train_mahppo(small_config(tiny_toml, activation="tanh", total_steps=256, eval_every_steps=0, checkpoint_every_steps=0), tmp_path)
    assert np.isfinite(result.final_eval_reward)
    assert load_policy(result.policy_path).actor.activation == "tanh"
    with pytest.raises(InvalidInput, match="activation must be one of"):
        train_mahppo(small_config(tiny_toml, activation="gelu"), None)


@pytest.mark.parametrize("cell, mode", [("random", "train"), ("evaluation", "eval")])
def test_train_cell_picks_the_training_episodes(tiny_toml, monkeypatch, cell, mode):
    import coinfer.rl.mahppo as mahppo_module

    built, real = [], mahppo_module.BatchedEnv

    def recording(scenario, num_envs, mode, seed):
        env = real(scenario, num_envs=num_envs, mode=mode, seed=seed)
        built.append(env)
        return env

    monkeypatch.setattr(mahppo_module, "BatchedEnv", recording)
    train_mahppo(small_config(tiny_toml, train_cell=cell, total_steps=256, eval_every_steps=0, checkpoint_every_steps=0), None)
    sim = built[0].sim
    assert sim.mode == mode
    if cell == "evaluation":  # every training episode is the evaluation cell: its distances and task counts
        scenario = load_scenario(tiny_toml)
        assert np.allclose(sim.distance_m, [d.eval_distance_m for d in scenario.devices])
        assert (sim.num_tasks == scenario.evaluation.tasks_per_device).all()
    with pytest.raises(InvalidInput, match="train_cell must be 'random' or 'evaluation'"):
        train_mahppo(small_config(tiny_toml, train_cell="fixed"), None)


@pytest.mark.parametrize("fused", [True, False])
def test_policy_acts_with_the_weights_an_optimiser_step_left(tiny, fused):
    # Fused Adam updates in place without bumping version counters: a float64 copy kept by
    # version acted with the initial weights through a whole training run.
    torch.manual_seed(0)
    actor = HybridActor(tiny.num_devices, 4, tiny.num_points, tiny.num_subchannels)
    policy = MahppoPolicy(actor, tiny)
    states = np.random.default_rng(0).random((6, actor.num_devices * actor.num_features)).astype(np.float32)

    before = policy.act(states).powers_w.copy()
    optimiser = torch.optim.Adam(actor.parameters(), lr=0.5, fused=fused)
    (-actor(torch.as_tensor(states)).power_mean.sum()).backward()  # push every device's power up
    optimiser.step()
    after = policy.act(states).powers_w
    assert not np.allclose(before, after)
    np.testing.assert_array_equal(after, MahppoPolicy(actor, tiny).act(states).powers_w)  # what a fresh copy gives


def test_training_evaluations_follow_the_actor(tiny_toml, tmp_path):
    train_mahppo(MahppoConfig(scenario=str(tiny_toml), total_steps=1536, num_envs=8, rollout_steps=256, eval_every_steps=256,
                              eval_episodes=4, checkpoint_every_steps=0, actor_lr=3e-3, critic_lr=3e-3), tmp_path)
    rows = (tmp_path / "eval.csv").read_text().splitlines()[1:]
    rewards = {row.split(",")[2] for row in rows}
    assert len(rows) == 6 and len(rewards) > 1  # six evaluations of a learning actor are not all the same

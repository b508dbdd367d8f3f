"""The commands: ``coinfer rl train|eval|scenarios`` and ``coinfer simulate``, run in-process."""

from __future__ import annotations

import json

from coinfer.cli import main

EVAL_KEYS = {"latency_per_task_s", "task_latency_mean_s", "task_latency_p95_s", "energy_per_task_j", "reward", "finished_tasks"}


def test_eval_writes_one_entry_per_policy_with_intervals(tiny_toml, tmp_path, capsys):
    out = tmp_path / "eval.json"
    code = main(["rl", "eval", "--scenario", str(tiny_toml), "--policy", "local", "--policy", "greedy", "--policy", "random", "--episodes", "3", "--out", str(out)])
    assert code == 0
    report = json.loads(out.read_text())
    assert set(report) == {"local", "greedy", "random"}
    for entry in report.values():
        assert EVAL_KEYS <= set(entry) and entry["episodes"] == 3
        assert entry["episode_set"]["cell"] == "random" and entry["episode_set"]["role"] == "held-out"
        for metric in ("reward", "latency_per_task_s", "energy_per_task_j", "task_latency_mean_s", "task_latency_p95_s"):
            low, high = entry["ci95"][metric]
            assert low <= entry[metric] <= high
    assert report["greedy"]["reward"] > report["local"]["reward"]
    assert "s/task" in capsys.readouterr().out


def test_eval_on_the_evaluation_cell_is_one_episode_without_interval(tiny_toml, tmp_path):
    out = tmp_path / "eval.json"
    assert main(["rl", "eval", "--scenario", str(tiny_toml), "--policy", "local", "--cell", "evaluation", "--episodes", "1", "--out", str(out)]) == 0
    entry = json.loads(out.read_text())["local"]
    assert entry["finished_tasks"] == 36 and entry["ci95"] is None


def test_eval_refuses_too_few_episodes_and_a_set_of_another_scenario(tiny_toml, tmp_path, capsys):
    assert main(["rl", "eval", "--scenario", str(tiny_toml), "--policy", "local", "--episodes", "1", "--out", str(tmp_path / "e.json")]) == 2
    assert "--episodes" in capsys.readouterr().err
    from coinfer.rl.episodes import EpisodeSet
    from coinfer.rl.scenario import load_scenario

    other = tmp_path / "set.json"
    other.write_text(json.dumps(EpisodeSet.of(load_scenario("dense"), 4).to_dict()))
    assert main(["rl", "eval", "--scenario", str(tiny_toml), "--policy", "local", "--episode-set", str(other), "--out", str(tmp_path / "e.json")]) == 2
    assert "episode set field 'scenario'" in capsys.readouterr().err


def test_train_then_eval_the_trained_policy(tiny_toml, tmp_path):
    run = tmp_path / "run"
    assert main(["rl", "train", "--scenario", str(tiny_toml), "--steps", "256", "--num-envs", "8", "--rollout-steps", "128", "--eval-every", "256", "--out", str(run), "--no-progress"]) == 0
    assert (run / "policy.safetensors").exists() and (run / "learning_curve.png").exists()
    out = tmp_path / "eval.json"
    assert main(["rl", "eval", "--scenario", str(tiny_toml), "--policy", str(run), "--out", str(out)]) == 0
    assert "mahppo" in json.loads(out.read_text())


def test_simulate_narrates_every_slot_and_device(tiny_toml, capsys):
    assert main(["simulate", "--scenario", str(tiny_toml), "--policy", "local"]) == 0
    text = capsys.readouterr().out
    assert "slot   0" in text and "device 2: point 5" in text and "done after" in text


def test_bad_scenario_is_reported_without_traceback(tmp_path, capsys):
    path = tmp_path / "broken.toml"
    path.write_text('name = "broken"\n[network]\nnum_subchannels = 2\n')
    assert main(["simulate", "--scenario", str(path)]) == 2
    err = capsys.readouterr().err
    assert "broken.toml" in err and "network.subchannel_bandwidth_hz" in err and "Traceback" not in err


def test_scenarios_lists_builtins(capsys):
    assert main(["rl", "scenarios"]) == 0
    assert "mahppo-paper-resnet18" in capsys.readouterr().out


def _captured_train_config(monkeypatch, module: str, function: str, argv: list[str]):
    """Run ``coinfer rl train`` with the trainer replaced by one that records its configuration."""
    import importlib
    from types import SimpleNamespace

    seen = []

    def fake_train(config, out, progress=False):
        seen.append(config)
        return SimpleNamespace(steps=config.total_steps, wall_s=1.0, steps_per_s=1.0, final_eval_reward=-1.0, policy_path=out)

    monkeypatch.setattr(importlib.import_module(module), function, fake_train)
    assert main(["rl", "train", *argv, "--no-progress"]) == 0
    return seen[0]


def test_train_without_sizes_repeats_the_bench_configuration(monkeypatch, tmp_path):
    # The bench builds its configurations from the defaults (bench/rl.py), so the command must too:
    # `coinfer rl train --seed K` is how a user repeats one of the bench's runs.
    from dataclasses import asdict

    from coinfer.rl.mahppo import MahppoConfig
    from coinfer.rl.sb3_ppo import Sb3PpoConfig

    args = ["--scenario", "edge-server", "--steps", "500000", "--seed", "2", "--out", str(tmp_path)]
    mahppo = _captured_train_config(monkeypatch, "coinfer.rl.mahppo", "train_mahppo", args)
    assert asdict(mahppo) == asdict(MahppoConfig(scenario="edge-server", total_steps=500_000, seed=2))
    sb3 = _captured_train_config(monkeypatch, "coinfer.rl.sb3_ppo", "train_sb3_ppo", [*args, "--algo", "sb3-ppo"])
    assert asdict(sb3) == asdict(Sb3PpoConfig(scenario="edge-server", total_steps=500_000, seed=2))


def test_train_sizes_given_on_the_command_line_apply(monkeypatch, tmp_path):
    args = ["--scenario", "edge-server", "--num-envs", "8", "--rollout-steps", "128", "--out", str(tmp_path)]
    mahppo = _captured_train_config(monkeypatch, "coinfer.rl.mahppo", "train_mahppo", args)
    assert (mahppo.num_envs, mahppo.rollout_steps, mahppo.minibatch_size) == (8, 128, 128)
    sb3 = _captured_train_config(monkeypatch, "coinfer.rl.sb3_ppo", "train_sb3_ppo", [*args, "--algo", "sb3-ppo"])
    assert (sb3.num_envs, sb3.n_steps, sb3.batch_size) == (8, 16, 128)


def test_train_activation_and_cell_flags_reach_mahppo_only(monkeypatch, tmp_path, capsys):
    args = ["--scenario", "edge-server", "--activation", "tanh", "--train-cell", "evaluation", "--out", str(tmp_path)]
    config = _captured_train_config(monkeypatch, "coinfer.rl.mahppo", "train_mahppo", args)
    assert (config.activation, config.train_cell) == ("tanh", "evaluation")
    for flag in (["--activation", "tanh"], ["--train-cell", "evaluation"]):
        assert main(["rl", "train", "--out", str(tmp_path), *flag, "--algo", "sb3-ppo", "--no-progress"]) != 0
        assert "apply to --algo mahppo only" in capsys.readouterr().err

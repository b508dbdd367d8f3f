"""Training the DEKD teacher on a chosen device: `coinfer teacher train --device` and the
benchmark's `--teacher-device` / `--teacher-epochs`, the early refusal of cuda without a GPU,
and a teacher cache that ignores the device it was trained on."""

import json
from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch

from coinfer.cli import build_parser, main
from coinfer.core.models.vit import VisionTransformer
from coinfer.bench import dekd as bench
from coinfer.bench.dekd import QUICK, _teacher, teacher_cache_key
from coinfer.server.dekd.teacher import load_teacher, save_teacher

from dekd_configs import tiny_vit_config

NO_GPU = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal of cuda on a machine without a GPU")
GPU = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
AUTO = "cuda" if torch.cuda.is_available() else "cpu"
"""What --device auto resolves to on this machine."""

TINY_TEACHER = ["teacher", "train", "--dataset", "digits", "--arch", "vit-nano", "--epochs", "1", "--batch-size", "64",
                "--depth", "1", "--threads", "1"]
"""A teacher that trains in a few seconds on digits."""

TINY_BENCH = replace(QUICK, teacher_epochs=1, distill_epochs=1, ensemble_epochs=1, hetero_distill_epochs=1,
                     hetero_ensemble_epochs=1)


@pytest.fixture
def record_teacher_training(monkeypatch):
    """Wrap train_teacher: record each TrainConfig and where the returned model's weights are."""
    from coinfer.server.dekd import teacher as teacher_module

    calls = []
    real = teacher_module.train_teacher

    def wrapped(splits, config, train):
        model, result = real(splits, config, train)
        calls.append({"train": train, "param_devices": {p.device.type for p in model.parameters()}})
        return model, result

    monkeypatch.setattr(teacher_module, "train_teacher", wrapped)
    return calls


def test_teacher_train_parses_device_with_cpu_as_default(capsys):
    parser = build_parser()
    assert parser.parse_args(["teacher", "train", "--out", "t"]).device == "cpu"
    for choice in ("cpu", "cuda", "auto"):
        assert parser.parse_args(["teacher", "train", "--out", "t", "--device", choice]).device == choice
    with pytest.raises(SystemExit) as exc:
        parser.parse_args(["teacher", "train", "--out", "t", "--device", "tpu"])
    assert exc.value.code == 2 and "--device" in capsys.readouterr().err


def test_teacher_train_trains_on_the_resolved_device_and_saves_a_cpu_teacher(tmp_path, capsys, record_teacher_training):
    out = tmp_path / "t"
    assert main([*TINY_TEACHER, "--device", "auto", "--out", str(out)]) == 0
    assert f"trained on {AUTO}" in capsys.readouterr().out
    [call] = record_teacher_training
    assert call["train"].device == AUTO and call["param_devices"] == {"cpu"}
    model, meta = load_teacher(out)
    assert meta["train_device"] == AUTO
    assert {p.device.type for p in model.parameters()} == {"cpu"}


@NO_GPU
def test_teacher_train_on_cuda_without_a_gpu_fails_first_and_writes_nothing(tmp_path, capsys, monkeypatch):
    from coinfer.core import data

    def no_data(*args, **kwargs):
        raise AssertionError("the dataset was loaded before the device was checked")

    monkeypatch.setattr(data, "load_dataset", no_data)
    out = tmp_path / "t"
    assert main([*TINY_TEACHER, "--device", "cuda", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "cuda" in err and "no CUDA GPU" in err, err
    assert not out.exists()


def test_bench_parses_teacher_device_and_epochs_into_run_benchmark(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(bench, "run_benchmark", lambda out, **kwargs: calls.append((out, kwargs)))
    assert bench.main(["--out", str(tmp_path / "b"), "--quick", "--no-progress"]) == 0
    assert calls[-1][1]["teacher_device"] == "auto" and calls[-1][1]["teacher_epochs"] is None
    assert bench.main(["--out", str(tmp_path / "b"), "--quick", "--teacher-device", "cpu", "--teacher-epochs", "3"]) == 0
    assert calls[-1][1]["teacher_device"] == "cpu" and calls[-1][1]["teacher_epochs"] == 3 and calls[-1][1]["quick"]


@pytest.mark.parametrize(
    "extra,needle",
    [(["--teacher-epochs", "0"], "--teacher-epochs must be at least 1"), (["--teacher-device", "tpu"], "--teacher-device")],
)
def test_bench_refuses_bad_teacher_flags(tmp_path, monkeypatch, capsys, extra, needle):
    monkeypatch.setattr(bench, "run_benchmark", lambda *a, **k: pytest.fail("ran despite a bad flag"))
    with pytest.raises(SystemExit) as exc:
        bench.main(["--out", str(tmp_path / "b"), *extra])
    assert exc.value.code == 2 and needle in capsys.readouterr().err


@NO_GPU
def test_bench_on_cuda_without_a_gpu_fails_first_and_writes_nothing(tmp_path, monkeypatch, capsys):
    from coinfer.core.errors import InvalidInput

    monkeypatch.setattr(bench, "run_benchmark", lambda *a, **k: pytest.fail("ran without a GPU"))
    with pytest.raises(SystemExit) as exc:
        bench.main(["--out", str(tmp_path / "b"), "--quick", "--teacher-device", "cuda"])
    assert exc.value.code == 2 and "cuda" in capsys.readouterr().err
    monkeypatch.undo()
    # Called directly, run_benchmark refuses too, before creating its folder.
    with pytest.raises(InvalidInput, match="cuda"):
        bench.run_benchmark(tmp_path / "direct", settings=TINY_BENCH, progress=False, teacher_device="cuda")
    assert not (tmp_path / "b").exists() and not (tmp_path / "direct").exists()


def test_the_teacher_cache_key_ignores_the_device_but_not_the_epochs():
    key = teacher_cache_key(TINY_BENCH)
    assert not any("device" in k for k in key)
    assert key["epochs"] == 1 and teacher_cache_key(replace(TINY_BENCH, teacher_epochs=2)) != key


@pytest.mark.parametrize("device", ["cpu", "auto", "cuda"])
def test_a_teacher_trained_on_a_gpu_is_reused_whatever_the_device_flag(tmp_path, digits, device):
    torch.manual_seed(0)
    cached = VisionTransformer(tiny_vit_config())
    meta = {"dataset": digits.name, "bench_settings": teacher_cache_key(TINY_BENCH), "train_device": "cuda"}
    save_teacher(cached, tmp_path / "teacher", meta)
    # Reused: no training (0 s), so cuda is never resolved, even on a machine without a GPU.
    model, got, seconds = _teacher(TINY_BENCH, tmp_path, digits, fresh=False, progress=False, device=device)
    assert seconds == 0.0 and got["train_device"] == "cuda"
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), cached.state_dict().values()))


class _StubReport:
    """Stands in for a DEKD report: this file checks the teacher's part of the benchmark only."""

    def to_dict(self):
        return {}


def test_bench_records_teacher_device_and_keeps_its_time_apart(tmp_path, monkeypatch, record_teacher_training):
    from coinfer.server.dekd import pipeline
    from coinfer.server.dekd import teacher as teacher_module

    # The benchmark's clock moves only where the test moves it: 2 s of teacher training and
    # 0.5 s per DEKD run (binary fractions, so the rounded figures are exact).
    clock = SimpleNamespace(now_s=100.0)
    monkeypatch.setattr(bench, "time", SimpleNamespace(perf_counter=lambda: clock.now_s))
    train_teacher = teacher_module.train_teacher

    def two_second_training(*args):
        clock.now_s += 2.0
        return train_teacher(*args)

    monkeypatch.setattr(teacher_module, "train_teacher", two_second_training)
    teachers = []

    def fake_decompose(teacher, splits, config, **kwargs):
        clock.now_s += 0.5
        teachers.append({p.device.type for p in teacher.parameters()})
        return _StubReport()

    monkeypatch.setattr(pipeline, "decompose", fake_decompose)
    monkeypatch.setattr(pipeline, "training_targets", lambda *a, **k: None)
    monkeypatch.setattr(bench, "_targets", lambda *a: [])
    settings = replace(TINY_BENCH, teacher_epochs=5)
    first = bench.run_benchmark(tmp_path, settings=settings, progress=False, teacher_device="auto", teacher_epochs=1)
    [call] = record_teacher_training
    assert call["train"].device == AUTO and call["train"].epochs == 1 and call["param_devices"] == {"cpu"}
    assert teachers == [{"cpu"}] * 3  # the DEKD stages get the teacher on the CPU
    written = json.loads((tmp_path / "results.json").read_text())
    assert written == json.loads(json.dumps(first))
    assert written["settings"]["teacher_epochs"] == 1 and written["teacher"]["bench_settings"]["epochs"] == 1
    assert written["teacher_device"] == AUTO and written["teacher_reused"] is False
    assert written["teacher_train_seconds"] == 2.0
    assert written["stages_wall_seconds"] == 1.5 and written["wall_seconds"] == 3.5
    # A later CPU run with the same settings reuses that teacher: no device, no teacher time.
    second = bench.run_benchmark(tmp_path, settings=settings, progress=False, teacher_device="cpu", teacher_epochs=1)
    assert len(record_teacher_training) == 1
    assert second["teacher_device"] is None and second["teacher_reused"] is True and second["teacher_train_seconds"] == 0.0
    assert second["stages_wall_seconds"] == second["wall_seconds"] == 1.5 and second["teacher"]["train_device"] == AUTO


@GPU
def test_teacher_train_on_cuda_saves_a_teacher_that_loads_on_the_cpu(tmp_path, capsys, record_teacher_training):
    out = tmp_path / "t"
    assert main([*TINY_TEACHER, "--device", "cuda", "--out", str(out)]) == 0
    [call] = record_teacher_training
    assert call["train"].device == "cuda" and call["param_devices"] == {"cpu"}
    model, meta = load_teacher(out)
    assert meta["train_device"] == "cuda" and meta["val_accuracy"] > 0.1
    assert {p.device.type for p in model.parameters()} == {"cpu"}


def test_teacher_only_trains_the_cached_teacher_and_stops(tmp_path, monkeypatch, record_teacher_training):
    from coinfer.server.dekd import pipeline

    monkeypatch.setattr(pipeline, "decompose", lambda *a, **k: pytest.fail("teacher_only ran the DEKD stages"))
    meta = bench.run_benchmark(tmp_path, settings=TINY_BENCH, progress=False, teacher_only=True)
    assert 0.0 <= meta["test_accuracy"] <= 1.0 and meta["bench_settings"] == teacher_cache_key(TINY_BENCH)
    assert (tmp_path / "teacher").is_dir() and not (tmp_path / "results.json").exists()
    again = bench.run_benchmark(tmp_path, settings=TINY_BENCH, progress=False, teacher_only=True)
    assert len(record_teacher_training) == 1 and again["test_accuracy"] == meta["test_accuracy"]

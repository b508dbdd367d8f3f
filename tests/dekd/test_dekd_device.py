"""Training on a chosen device: `coinfer teacher train --device`, `coinfer decompose --device` (every
stage: importance, targets, distillation, ensemble, single student, reference CNN) and the
benchmark's `--device`; the early refusal of cuda without a GPU; caches that ignore the device.
The GPU tests run where torch sees one (bf16 autocast, no host sync inside a training step)."""

import json
from dataclasses import replace

import pytest
import torch

from coinfer.cli import build_parser, main
from coinfer.core.models.vit import VisionTransformer
from coinfer.bench import dekd as bench
from coinfer.bench.dekd import QUICK, BenchData, _teacher, _write_key, teacher_cache_key, teacher_recipe_for
from coinfer.server.dekd.teacher import load_teacher, save_teacher, teacher_config

from dekd_configs import tiny_vit_config

NO_GPU = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal of cuda on a machine without a GPU")
GPU = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
AUTO = "cuda" if torch.cuda.is_available() else "cpu"
"""What --device auto resolves to on this machine."""

TINY_TEACHER = ["teacher", "train", "--dataset", "digits", "--arch", "vit-nano", "--epochs", "1", "--batch-size", "64",
                "--depth", "1", "--threads", "1"]
"""A teacher that trains in a few seconds on digits."""

TINY_BENCH = replace(QUICK, teacher_epochs=1, stage_epochs=1, teacher_arch="vit-nano")
DIGITS = BenchData("digits", "digits")


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


def test_bench_parses_device_and_datasets_into_run_benchmark(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(bench, "run_benchmark", lambda out, **kwargs: calls.append((out, kwargs)))
    assert bench.main(["--out", str(tmp_path / "b"), "--quick", "--no-progress"]) == 0
    assert calls[-1][1]["device"] == "auto" and calls[-1][1]["only"] is None and calls[-1][1]["quick"]
    assert bench.main(["--out", str(tmp_path / "b"), "--device", "cpu", "--only", "digits,fashion-mnist-2000"]) == 0
    assert calls[-1][1]["device"] == "cpu" and calls[-1][1]["only"] == ("digits", "fashion-mnist-2000")


@pytest.mark.parametrize(
    "extra,needle",
    [(["--only", "cifar"], "unknown dataset(s) ['cifar']"), (["--device", "tpu"], "--device"), (["--threads", "0"], "--threads")],
)
def test_bench_refuses_bad_flags(tmp_path, monkeypatch, capsys, extra, needle):
    monkeypatch.setattr(bench, "run_benchmark", lambda *a, **k: pytest.fail("ran despite a bad flag"))
    with pytest.raises(SystemExit) as exc:
        bench.main(["--out", str(tmp_path / "b"), *extra])
    assert exc.value.code == 2 and needle in capsys.readouterr().err


@NO_GPU
def test_bench_on_cuda_without_a_gpu_fails_first_and_writes_nothing(tmp_path, monkeypatch, capsys):
    from coinfer.core.errors import InvalidInput

    monkeypatch.setattr(bench, "run_benchmark", lambda *a, **k: pytest.fail("ran without a GPU"))
    with pytest.raises(SystemExit) as exc:
        bench.main(["--out", str(tmp_path / "b"), "--quick", "--device", "cuda"])
    assert exc.value.code == 2 and "cuda" in capsys.readouterr().err
    monkeypatch.undo()
    # Called directly, run_benchmark refuses too, before creating its folder.
    with pytest.raises(InvalidInput, match="cuda"):
        bench.run_benchmark(tmp_path / "direct", settings=TINY_BENCH, progress=False, device="cuda")
    assert not (tmp_path / "b").exists() and not (tmp_path / "direct").exists()


def _bench_teacher_config(digits, **overrides):
    return teacher_config(TINY_BENCH.teacher_arch, digits.image_shape, digits.num_classes, **overrides)


def test_the_teacher_cache_key_ignores_the_device_but_not_the_recipe_or_the_architecture(digits):
    config = _bench_teacher_config(digits)
    cpu = teacher_cache_key(TINY_BENCH, DIGITS, teacher_recipe_for(TINY_BENCH, digits, "cpu", False), config)
    gpu = teacher_cache_key(TINY_BENCH, DIGITS, teacher_recipe_for(TINY_BENCH, digits, "cuda", True), config)
    assert cpu == gpu and "device" not in json.dumps(cpu)
    longer = replace(TINY_BENCH, teacher_epochs=2)
    assert teacher_cache_key(longer, DIGITS, teacher_recipe_for(longer, digits, "cpu", False), config) != cpu
    # Same preset name, another patch size (a changed default): the cached teacher is not reused.
    other_patch = _bench_teacher_config(digits, patch_size=1 if config.patch_size != 1 else 2)
    assert teacher_cache_key(TINY_BENCH, DIGITS, teacher_recipe_for(TINY_BENCH, digits, "cpu", False), other_patch) != cpu


@pytest.mark.parametrize("device", ["cpu", "auto"])
def test_a_teacher_trained_on_a_gpu_is_reused_whatever_the_device(tmp_path, digits, device):
    torch.manual_seed(0)
    cached = VisionTransformer(tiny_vit_config())
    save_teacher(cached, tmp_path / "teacher", {"dataset": digits.name, "train_device": "cuda"})
    _write_key(tmp_path, {"teacher": teacher_cache_key(TINY_BENCH, DIGITS, teacher_recipe_for(TINY_BENCH, digits, "cuda", True),
                                                       _bench_teacher_config(digits))})
    model, got, seconds = _teacher(TINY_BENCH, DIGITS, digits, tmp_path, fresh=False, progress=False, device=device)
    assert seconds == 0.0 and got["train_device"] == "cuda"
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), cached.state_dict().values()))


@pytest.fixture
def record_stage_devices(monkeypatch):
    """Wrap the training loop: for every stage, where its module and batches are while it trains,
    whether bf16 autocast is on, and (on a GPU) that no step of its loss waits for the device."""
    from coinfer.core import training

    seen = []
    real = training.train_loop

    def wrapped(module, num_samples, loss_fn, config, *args, **kwargs):
        def watched(train_module, batch):
            entry = {"stage": config.desc, "module": next(module.parameters()).device.type,
                     "index": batch.index.device.type, "autocast": torch.is_autocast_enabled("cuda")}
            if torch.cuda.is_available():
                torch.cuda.set_sync_debug_mode("error")  # any host sync inside the loss raises
            try:
                loss = loss_fn(train_module, batch)
            finally:
                if torch.cuda.is_available():
                    torch.cuda.set_sync_debug_mode("default")
            entry["loss"] = loss.device.type
            seen.append(entry)
            return loss

        return real(module, num_samples, watched, config, *args, **kwargs)

    monkeypatch.setattr(training, "train_loop", wrapped)
    for name in ("distill", "ensemble", "baseline"):
        monkeypatch.setattr(f"coinfer.server.dekd.{name}.train_loop", wrapped)
    return seen


DECOMPOSE_FAST = ["--quick", "--distill-epochs", "1", "--ensemble-epochs", "1", "--baseline-epochs", "1", "--threads", "1",
                  "--no-progress"]


def _decompose_on(device, tiny_teacher_dir, out, seen):
    assert main(["decompose", "--teacher", str(tiny_teacher_dir), "--out", str(out), "--device", device, *DECOMPOSE_FAST]) == 0
    stages = {e["stage"].split(" device ")[0] for e in seen}
    assert stages == {"distill", "ensemble", "single student", "reference cnn"}
    report = json.loads((out / "report.json").read_text())
    return report


def test_decompose_trains_every_stage_on_the_resolved_device(tiny_teacher_dir, tmp_path, record_stage_devices):
    report = _decompose_on("auto", tiny_teacher_dir, tmp_path / "b", record_stage_devices)
    assert {(e["module"], e["index"], e["loss"]) for e in record_stage_devices} == {(AUTO, AUTO, AUTO)}
    assert report["recipe"]["device"] == AUTO and report["config"]["device"] == AUTO
    assert all(e["autocast"] == (AUTO == "cuda") for e in record_stage_devices)


@NO_GPU
def test_decompose_on_cuda_without_a_gpu_fails_first_and_writes_nothing(tiny_teacher_dir, tmp_path, capsys, monkeypatch):
    from coinfer.core import data

    monkeypatch.setattr(data, "load_dataset", lambda *a, **k: pytest.fail("the dataset was loaded before the device was checked"))
    out = tmp_path / "b"
    assert main(["decompose", "--teacher", str(tiny_teacher_dir), "--out", str(out), "--device", "cuda", *DECOMPOSE_FAST]) == 2
    assert "no CUDA GPU" in capsys.readouterr().err and not out.exists()


@GPU
def test_decompose_on_cuda_runs_every_stage_there_in_bf16_without_host_syncs(tiny_teacher_dir, tmp_path, record_stage_devices):
    report = _decompose_on("cuda", tiny_teacher_dir, tmp_path / "b", record_stage_devices)
    assert {(e["module"], e["index"], e["loss"], e["autocast"]) for e in record_stage_devices} == {("cuda", "cuda", "cuda", True)}
    assert report["recipe"]["device"].startswith("cuda") and 0.0 <= report["ensemble"]["accuracy"] <= 1.0
    from coinfer.core.devit_bundle import load_devit

    deployment = load_devit(tmp_path / "b")  # the bundle holds CPU tensors
    assert all(p.device.type == "cpu" for m in deployment.submodels for p in m.parameters())


@GPU
def test_importance_and_targets_run_on_the_gpu_and_agree_with_the_cpu(tiny_teacher, digits):
    from coinfer.server.dekd.prune import unit_importance
    from coinfer.server.dekd.targets import compute_targets

    x, y = digits.train.tensors()
    x, y = x[:256], y[:256]
    cpu = unit_importance(tiny_teacher, x, y)
    gpu_teacher = __import__("copy").deepcopy(tiny_teacher).cuda()
    gpu = unit_importance(gpu_teacher, x, y)
    assert gpu.heads.shape == cpu.heads.shape
    assert abs(float(gpu.heads.sum()) - float(cpu.heads.sum())) <= 1e-3 * float(cpu.heads.sum()) + 1e-6
    targets = compute_targets(gpu_teacher, x, with_cls=True, with_relations=True)
    assert targets.logits.device.type == "cpu" and targets.relations.shape[0] == 256
    torch.testing.assert_close(targets.logits, compute_targets(tiny_teacher, x).logits, atol=1e-3, rtol=1e-3)


@GPU
def test_teacher_train_on_cuda_saves_a_teacher_that_loads_on_the_cpu(tmp_path, capsys, record_teacher_training):
    out = tmp_path / "t"
    assert main([*TINY_TEACHER, "--device", "cuda", "--out", str(out)]) == 0
    [call] = record_teacher_training
    assert call["train"].device == "cuda" and call["param_devices"] == {"cpu"}
    model, meta = load_teacher(out)
    assert meta["train_device"] == "cuda" and meta["val_accuracy"] > 0.1
    assert {p.device.type for p in model.parameters()} == {"cpu"}



"""TrainConfig.device: where train_classifier runs, and that the model always comes back on the CPU."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from coinfer.core.data import load_dataset
from coinfer.core.errors import InvalidInput
from coinfer.core.parallel import training_device
from coinfer.core.training import TrainConfig, cpu_state_dict, evaluate, train_classifier

needs_no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error given on a machine without a GPU")
needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def test_device_defaults_to_cpu_and_explicit_cpu_trains_the_same_weights(digits) -> None:
    assert TrainConfig().device == "cpu"
    base = TrainConfig(epochs=2, lr=1e-2, batch_size=64, progress=False, seed=4)
    a, b = _mlp(), _mlp()
    ra = train_classifier(a, digits, base)
    rb = train_classifier(b, digits, dataclasses.replace(base, device="cpu"))
    assert ra == rb
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), name
    assert all(p.device.type == "cpu" for p in b.parameters())
    assert evaluate(b, digits.val) == rb.best_val_accuracy


def test_batches_and_model_are_on_the_resolved_device_during_training(digits) -> None:
    seen: set[tuple[str, str, str, torch.dtype]] = set()

    def loss_fn(model, x, y):
        seen.add((x.device.type, y.device.type, next(model.parameters()).device.type, x.dtype))
        return nn.functional.cross_entropy(model(x), y)

    model = _mlp()
    train_classifier(model, digits, TrainConfig(epochs=1, batch_size=256, progress=False), loss_fn=loss_fn)
    assert seen == {("cpu", "cpu", "cpu", torch.float32)}


@needs_no_gpu
def test_cuda_without_a_gpu_is_a_clear_error_and_leaves_the_model_alone(digits) -> None:
    model = _mlp()
    before = cpu_state_dict(model)
    with pytest.raises(InvalidInput, match="cuda"):
        train_classifier(model, digits, TrainConfig(epochs=1, progress=False, device="cuda"))
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name
    with pytest.raises(InvalidInput, match="device must be one of"):
        train_classifier(model, digits, TrainConfig(epochs=1, progress=False, device="tpu"))


def test_torchrun_with_cuda_uses_the_local_rank_gpu(monkeypatch) -> None:
    # A fake two-GPU machine: only the device bookkeeping runs, nothing is allocated on it.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert training_device("cuda") == torch.device("cuda:1")
    assert training_device("auto") == torch.device("cuda:1")
    assert training_device("cuda:0") == torch.device("cuda:0")  # an explicit index is kept
    assert training_device("cpu") == torch.device("cpu")
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert training_device("cuda") == torch.device("cuda")


def test_cpu_state_dict_is_a_copy_that_later_steps_do_not_change() -> None:
    model = _mlp()
    saved = cpu_state_dict(model)
    with torch.no_grad():
        model[1].weight.add_(1.0)
    assert not torch.equal(saved["1.weight"], model[1].weight)
    model.load_state_dict(saved)
    assert torch.equal(saved["1.weight"], model[1].weight)


@needs_gpu
def test_training_on_cuda_returns_the_model_on_the_cpu(digits) -> None:
    seen: set[str] = set()

    def loss_fn(model, x, y):
        seen.add(x.device.type + y.device.type)
        return nn.functional.cross_entropy(model(x), y)

    model = _mlp()
    result = train_classifier(model, digits, TrainConfig(epochs=6, lr=1e-2, batch_size=64, progress=False,
                                                         device="cuda"), loss_fn=loss_fn)
    assert seen == {"cudacuda"}
    assert all(t.device.type == "cpu" for t in model.state_dict().values())
    assert evaluate(model, digits.val) == result.best_val_accuracy > 0.8

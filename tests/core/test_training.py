import numpy as np
import torch
from torch import nn

from coinfer.core.data import load_dataset
from coinfer.core.measure import accuracy, measure_latency
from coinfer.core.training import TrainConfig, cosine_lr, evaluate, train_classifier


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))


def test_training_learns_digits_and_keeps_the_best_epoch():
    splits = load_dataset("digits")
    model = _mlp()
    before = evaluate(model, splits.test)
    result = train_classifier(model, splits, TrainConfig(epochs=8, lr=1e-2, batch_size=64, progress=False))
    after = evaluate(model, splits.test)
    assert len(result.val_accuracy_per_epoch) == 8
    assert result.best_val_accuracy == max(result.val_accuracy_per_epoch)
    # the model holds the best epoch's weights
    assert evaluate(model, splits.val) == result.best_val_accuracy
    assert after > before + 0.5 and after > 0.85


def test_training_is_deterministic_for_a_seed():
    splits = load_dataset("digits")
    a, b = _mlp(), _mlp()
    cfg = TrainConfig(epochs=1, progress=False, seed=5)
    ra = train_classifier(a, splits, cfg)
    rb = train_classifier(b, splits, cfg)
    assert ra.train_loss_per_epoch == rb.train_loss_per_epoch
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)


def test_cosine_schedule_shape():
    lrs = [cosine_lr(s, 100, 10, 1.0) for s in range(100)]
    assert lrs[9] == 1.0 and lrs[0] == 0.1
    assert all(x >= y for x, y in zip(lrs[10:], lrs[11:]))
    assert lrs[-1] < 0.01


def test_accuracy_and_latency_helpers():
    assert accuracy(np.array([[0.1, 0.9], [0.8, 0.2]]), np.array([1, 1])) == 0.5
    stats = measure_latency(lambda: sum(range(1000)), warmup=2, repeats=7)
    assert stats.runs == 7 and stats.min_ms <= stats.median_ms <= stats.p90_ms
    assert torch.get_num_threads() >= 1

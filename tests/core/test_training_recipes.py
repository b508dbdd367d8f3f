"""Budgets that scale with the data, the same optimisation for any number of processes, early
stopping, augmentation and the subsets the benchmark draws."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from coinfer.core.data import MixedImages, augment_images, load_dataset, mirror_safe, stratified_subset
from coinfer.core.errors import InvalidInput
from coinfer.core.training import Budget, TrainConfig, plan_steps, train_classifier, train_loop


def test_a_named_budget_scales_with_the_square_root_of_the_data():
    assert Budget("default").epochs(4000) == pytest.approx(40.0)
    assert Budget("default").epochs(16000) == pytest.approx(20.0)  # 4x the data: half the epochs, 2x the samples
    assert Budget("quick").epochs(4000) < Budget("default").epochs(4000) < Budget("thorough").epochs(4000)
    assert Budget("default", scale=0.25).epochs(4000) == pytest.approx(10.0)
    assert Budget("default", scale=0.001).epochs(4000) == 1.0  # a stage never gets less than one epoch
    assert Budget("thorough").epochs(10) == 300.0  # capped on tiny data
    with pytest.raises(InvalidInput, match="budget 'quick' fits 0.89 of one epoch of 500,000 training images"):
        Budget("quick").epochs(500_000)
    with pytest.raises(InvalidInput, match="budget must be one of"):
        Budget("huge")


def test_plans_resolve_budget_epochs_or_steps():
    cfg = TrainConfig(budget=Budget("default"), batch_size=100, warmup_fraction=0.05)
    plan = plan_steps(cfg, 4000)
    assert (plan.steps_per_epoch, plan.steps, plan.warmup_steps) == (40, 1600, 80)
    assert "40.0 epochs" in plan.why and "sqrt" in plan.why
    assert plan_steps(TrainConfig(epochs=3, batch_size=100), 4000).steps == 120
    assert plan_steps(TrainConfig(steps=50, budget=Budget(), batch_size=100), 4000).steps == 50  # steps win
    with pytest.raises(InvalidInput, match="39 steps cannot fit one epoch of 4,000 samples"):
        plan_steps(TrainConfig(steps=39, batch_size=100), 4000, whole_epoch=True)
    assert plan_steps(TrainConfig(steps=3, batch_size=100), 4000).steps == 3  # a short fine-tuning may


@pytest.mark.parametrize("config", [TrainConfig(budget=Budget("quick"), batch_size=128), TrainConfig(epochs=3, batch_size=64)])
def test_a_budget_means_the_same_steps_and_samples_for_one_or_two_processes(config):
    one, two = plan_steps(config, 1259, processes=1), plan_steps(config, 1259, processes=2)
    assert one.steps == two.steps and one.steps_per_epoch == two.steps_per_epoch
    assert two.batch_per_process * 2 == one.batch_per_process == config.batch_size


def _toy():
    torch.manual_seed(0)
    return nn.Linear(4, 2)


def _toy_loss(x):
    def loss(module, batch):
        return module(x[batch.index]).pow(2).mean()
    return loss


def test_early_stopping_ends_training_and_keeps_the_best_weights():
    x = torch.randn(64, 4)
    module = _toy()
    scores = iter([0.5, 0.9, 0.8, 0.7, 0.6, 0.95])
    snapshots = []

    def evaluate(m):
        snapshots.append({k: v.clone() for k, v in m.state_dict().items()})
        return next(scores)

    result = train_loop(module, 64, _toy_loss(x), TrainConfig(epochs=6, batch_size=16, patience=2, progress=False), evaluate)
    assert result.stopped_early_at_epoch == 3 and result.best_epoch == 1 and result.best_val_accuracy == 0.9
    assert result.steps == 16 and result.samples_seen == 4 * 64 and result.plan.steps == 24
    assert all(torch.equal(module.state_dict()[k], v) for k, v in snapshots[1].items())
    assert len(result.val_accuracy_per_epoch) == 4


def test_without_patience_the_whole_budget_runs():
    x = torch.randn(64, 4)
    scores = iter([0.9, 0.1, 0.1, 0.1])
    result = train_loop(_toy(), 64, _toy_loss(x), TrainConfig(epochs=4, batch_size=16, progress=False), lambda m: next(scores))
    assert result.stopped_early_at_epoch is None and result.steps == 16 and result.best_epoch == 0


def test_the_loop_reads_the_losses_once_per_epoch_not_every_step(monkeypatch):
    """Reading a value on the host waits for the device; the loop does it once per epoch (the
    optimiser's own step counters live on the CPU and are not counted)."""
    import sys

    from coinfer.core import training

    x = torch.randn(64, 4)
    reads = {"tolist": 0, "item": 0, "float": 0}

    def counting(name, real):
        def wrapped(self, *args):
            if sys._getframe(1).f_code.co_filename == training.__file__:
                reads[name] += 1
            return real(self, *args)
        return wrapped

    for name, attr in (("tolist", "tolist"), ("item", "item"), ("float", "__float__")):
        monkeypatch.setattr(torch.Tensor, attr, counting(name, getattr(torch.Tensor, attr)))
    result = train_loop(_toy(), 64, _toy_loss(x), TrainConfig(epochs=3, batch_size=8, progress=False))
    assert result.steps == 24 and len(result.train_loss_per_step) == 24
    assert reads == {"tolist": 3, "item": 0, "float": 0}


def test_a_custom_loss_cannot_be_mixed():
    splits = load_dataset("digits")
    with pytest.raises(InvalidInput, match="custom loss cannot be combined with mixup"):
        train_classifier(_toy(), splits, TrainConfig(mixup_alpha=0.8, progress=False), loss_fn=lambda m, x, y: x.sum())


def _batch(n=8, side=6):
    return torch.arange(n, dtype=torch.float32)[:, None, None, None].expand(n, 1, side, side) + \
        torch.linspace(0, 0.5, side)[None, None, None, :]


def test_without_augmentation_the_images_are_untouched():
    x = _batch()
    out = augment_images(x, torch.Generator().manual_seed(0), np.random.default_rng(0))
    assert torch.equal(out.x, x) and out.partner is None and out.lam == 1.0


def test_flips_mirror_about_half_the_images_and_nothing_else():
    x = _batch(n=400)
    out = augment_images(x, torch.Generator().manual_seed(0), np.random.default_rng(0), hflip=True).x
    same = (out == x).flatten(1).all(1)
    mirrored = (out == x.flip(-1)).flatten(1).all(1)
    assert bool((same | mirrored).all()) and 150 < int(mirrored.sum()) < 250


def test_shifts_move_images_by_at_most_max_shift():
    x = torch.zeros(16, 1, 8, 8)
    x[:, :, 4, 4] = 1.0
    out = augment_images(x, torch.Generator().manual_seed(0), np.random.default_rng(0), max_shift=1).x
    rows, cols = torch.nonzero(out[:, 0], as_tuple=True)[1:]
    assert out.sum() == 16 and rows.sub(4).abs().max() <= 1 and cols.sub(4).abs().max() <= 1 and (rows != 4).any()


def test_mixup_and_cutmix_weigh_the_labels_by_what_each_image_holds():
    x = _batch()
    mixed = augment_images(x, torch.Generator().manual_seed(0), np.random.default_rng(1), mixup_alpha=0.8)
    assert 0 < mixed.lam < 1 and mixed.partner.tolist() == list(range(7, -1, -1))
    torch.testing.assert_close(mixed.x, mixed.lam * x + (1 - mixed.lam) * x[mixed.partner])
    cut = augment_images(x, torch.Generator().manual_seed(0), np.random.default_rng(2), cutmix_alpha=1.0)
    own = (cut.x == x).flatten(1).float().mean(1)
    assert torch.allclose(own[:4], torch.full((4,), cut.lam))  # the partner differs everywhere
    loss = MixedImages(x, torch.tensor([1, 0]), 0.25).mix(lambda y: y.float().mean(), torch.tensor([0, 4]))
    assert loss.item() == pytest.approx(0.25 * 2 + 0.75 * 2)


def test_mirroring_is_on_only_where_the_classes_survive_it():
    assert mirror_safe("fashion-mnist") and not mirror_safe("digits") and not mirror_safe("npz")


def test_stratified_subsets_are_balanced_seeded_and_keep_the_test_split():
    splits = load_dataset("digits")
    sub = stratified_subset(splits, 500, seed=0)
    assert sub.name == "digits-500" and len(sub.train) + len(sub.val) == pytest.approx(500, abs=10)
    counts = np.bincount(sub.train.y, minlength=10)
    assert counts.max() - counts.min() <= 6 and sub.test is splits.test
    assert np.array_equal(stratified_subset(splits, 500, seed=0).train.x, sub.train.x)
    assert not np.array_equal(stratified_subset(splits, 500, seed=1).train.y, sub.train.y)
    with pytest.raises(InvalidInput, match="a subset of 5 images"):
        stratified_subset(splits, 5)

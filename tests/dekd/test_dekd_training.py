"""Losses, sub-task distillation and ensemble training on tiny models and the digits data."""

import pytest
import torch

from coinfer.core.measure import accuracy, predict
from coinfer.server.dekd.distill import DistillConfig, distill_submodel, group_rows, kd_loss, relation_kl
from coinfer.server.dekd.ensemble import (
    DeViTEnsemble,
    EnsembleConfig,
    ensemble_accuracy,
    init_fusion_from_teacher,
    sample_presence,
    strip_head,
    train_ensemble,
)
from coinfer.core.models.fusion import DeViTFusion, FusionConfig
from coinfer.core.training import TrainConfig
from coinfer.server.dekd.prune import architecture_cost, build_pruned_vit, plan_pruning, unit_importance
from coinfer.server.dekd.targets import compute_targets, token_relation


def test_relation_loss_is_zero_for_equal_relations_and_width_independent():
    torch.manual_seed(0)
    q_wide = torch.randn(2, 4, 17, 8)  # 4 heads
    q_narrow = torch.randn(2, 1, 17, 8)  # 1 head, same tokens
    r = token_relation(q_wide)
    assert r.shape == (2, 17, 17) and torch.allclose(r.sum(-1), torch.ones(2, 17))
    assert relation_kl(r, q_wide).abs().item() < 1e-5
    assert relation_kl(r, q_narrow).item() > 1e-3
    with pytest.raises(Exception, match="token"):
        relation_kl(r, torch.randn(2, 1, 9, 8))


def test_kd_loss_vanishes_only_when_the_student_agrees():
    t = torch.randn(4, 5)
    assert kd_loss(t, t, 2.0).abs().item() < 1e-6
    assert kd_loss(torch.randn(4, 5), t, 2.0).item() > 0


def test_group_rows_renumbers_labels():
    idx, local = group_rows(torch.tensor([3, 1, 4, 1, 5, 9]), [1, 9])
    assert idx.tolist() == [1, 3, 5] and local.tolist() == [0, 0, 1]


def test_presence_masks_drop_at_the_rate_and_never_everything():
    g = torch.Generator().manual_seed(0)
    m = sample_presence(20000, 4, 0.3, g)
    assert m.any(dim=1).all()
    assert abs(1 - m.float().mean().item() - 0.3) < 0.02
    assert sample_presence(10, 3, 0.0, g).all()


@pytest.fixture(scope="module")
def group_setup(tiny_teacher, digits):
    x, y = digits.train.tensors()
    xv, yv = digits.val.tensors()
    group = [0, 1, 7]
    idx, local = group_rows(y, group)
    vidx, vlocal = group_rows(yv, group)
    targets = compute_targets(tiny_teacher, x[idx], with_relations=True)
    targets.logits = targets.logits[:, group]
    imp = unit_importance(tiny_teacher, x[idx], local, classes=group)
    plan = plan_pruning(tiny_teacher.config, imp, 0.4 * architecture_cost(tiny_teacher.config, "macs"))
    return dict(x=x[idx], y=local, xv=xv[vidx], yv=vlocal, targets=targets, plan=plan, group=group)


def test_sub_task_distillation_learns_the_group(tiny_teacher, group_setup):
    s = group_setup
    torch.manual_seed(0)
    student = build_pruned_vit(tiny_teacher, s["plan"], classes=s["group"])
    before = accuracy(predict(student, s["xv"]), s["yv"].numpy())
    result = distill_submodel(
        student, s["x"], s["y"], s["targets"], s["xv"], s["yv"],
        DistillConfig(loop=TrainConfig(epochs=4, batch_size=32, lr=3e-3, warmup_epochs=0.3, progress=False)),
    )
    after = accuracy(predict(student, s["xv"]), s["yv"].numpy())
    assert result.train_loss_per_epoch[-1] < result.train_loss_per_epoch[0]
    assert after == result.best_val_accuracy and after > 0.6 and after >= before


def test_training_is_deterministic_for_a_seed(tiny_teacher, group_setup):
    s = group_setup
    losses = []
    for _ in range(2):
        student = build_pruned_vit(tiny_teacher, s["plan"], classes=s["group"])
        cfg = DistillConfig(loop=TrainConfig(epochs=1, batch_size=32, warmup_epochs=0.3, progress=False, seed=4))
        losses.append(distill_submodel(student, s["x"], s["y"], s["targets"], s["xv"], s["yv"], cfg).train_loss_per_epoch)
    assert losses[0] == losses[1]


def test_ensemble_start_and_training(tiny_teacher, digits):
    x, y = digits.train.tensors()
    xv, yv = digits.val.tensors()
    torch.manual_seed(0)
    subs = []
    for group in ([0, 1, 2, 3, 4], [5, 6, 7, 8, 9]):
        idx, local = group_rows(y, group)
        imp = unit_importance(tiny_teacher, x[idx][:256], local[:256], classes=group)
        plan = plan_pruning(tiny_teacher.config, imp, 0.4 * architecture_cost(tiny_teacher.config, "macs"))
        subs.append(strip_head(build_pruned_vit(tiny_teacher, plan, classes=group)))
    C = tiny_teacher.config.embed_dim
    ensemble = DeViTEnsemble(subs, DeViTFusion(FusionConfig((C, C), C, 10)))
    targets = compute_targets(tiny_teacher, x, with_cls=True)
    with torch.no_grad():
        h_random, _ = ensemble.fuse(x, torch.ones(len(x), 2, dtype=torch.bool))
    init_fusion_from_teacher(ensemble, x, targets.cls, tiny_teacher)
    with torch.no_grad():
        h_init, _ = ensemble.fuse(x, torch.ones(len(x), 2, dtype=torch.bool))
    mse = lambda h: torch.mean((h - targets.cls) ** 2).item()  # noqa: E731
    assert mse(h_init) < 0.5 * mse(h_random)
    teacher_acc = accuracy(predict(tiny_teacher, xv), yv.numpy())
    result = train_ensemble(
        ensemble, x, y, targets, xv, yv,
        EnsembleConfig(loop=TrainConfig(epochs=2, batch_size=64, lr=1e-3, warmup_epochs=0.3, progress=False), device_dropout=0.3),
    )
    full = ensemble_accuracy(ensemble, xv, yv)
    assert full == result.best_val_accuracy and full > 0.5 * teacher_acc
    # one device missing still answers, far above chance (0.1)
    assert min(ensemble_accuracy(ensemble, xv, yv, missing=[i]) for i in range(2)) > 0.4


def test_the_compact_baseline_is_dense_and_fills_its_parameter_budget():
    from coinfer.server.dekd.baseline import compact_vit_config
    from coinfer.server.dekd.prune import architecture_cost
    from coinfer.server.dekd.teacher import teacher_config

    teacher = teacher_config("vit-tiny", (1, 28, 28), 10)
    for budget in (200_000, 1_490_000):
        cfg = compact_vit_config(teacher, budget)
        params = architecture_cost(cfg, "params")
        assert 0.99 * budget <= params <= budget
        assert cfg.depth == teacher.depth and cfg.patch_size == teacher.patch_size and cfg.block_heads is None
        assert cfg.embed_dim % cfg.num_heads == 0


def test_the_single_student_gets_the_ensembles_training_compute():
    from coinfer.server.dekd.pipeline import _equal_compute_steps

    # 4 sub-models, each 1/4 of the student: 4 x 100 steps of 64 distillation are 100 student steps of 64
    distill = [{"planned_steps": 100, "batch_size": 64}] * 4
    assert _equal_compute_steps(distill, {"planned_steps": 50, "batch_size": 64}, 64) == 150
    assert _equal_compute_steps(distill, {"planned_steps": 50, "batch_size": 128}, 128) == 100


def test_distillation_from_the_online_teacher_on_augmented_images(tiny_teacher, digits, group_setup):
    from coinfer.server.dekd.targets import TeacherSignal

    s = group_setup
    x, y = digits.train.tensors()
    idx, _ = group_rows(y, s["group"])
    calls = []
    real_forward = tiny_teacher.forward_with_qkv

    def counting(images, layers):
        calls.append(images.shape[0])
        return real_forward(images, layers)

    tiny_teacher.forward_with_qkv = counting
    try:
        torch.manual_seed(0)
        student = build_pruned_vit(tiny_teacher, s["plan"], classes=s["group"])
        loop = TrainConfig(epochs=3, batch_size=32, lr=3e-3, warmup_epochs=0.3, progress=False, mixup_alpha=0.8,
                           cutmix_alpha=1.0)
        signal = TeacherSignal(teacher=tiny_teacher, classes=s["group"])
        result = distill_submodel(student, x[idx], s["y"], signal, s["xv"], s["yv"], DistillConfig(loop=loop))
    finally:
        del tiny_teacher.forward_with_qkv
    assert len(calls) == result.steps  # the teacher saw every (augmented) batch
    assert result.train_loss_per_epoch[-1] < result.train_loss_per_epoch[0] and result.best_val_accuracy > 0.6

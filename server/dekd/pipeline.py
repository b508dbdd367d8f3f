"""DEKD end to end: teacher + data in, deployable DeViT bundle and report out.

:func:`decompose` reads as its stages, one function each:

1. partition (:func:`_choose_partition`): classes into groups (affinity or random), larger groups
   to faster devices;
2. teacher targets (:func:`_teacher_targets`): the teacher's outputs on every training image;
3. prune and size (:func:`_prune_and_size`): per group, rank the teacher's units on the group's
   images, size every device's budget (latency-balanced for heterogeneous speeds), prune;
4. distill (:func:`_distill`): sub-task distillation of each sub-model on its group;
5. ensemble (:func:`_train_ensemble`): sub-models + fusion on all data, with device dropout;
6. baseline (:func:`_train_baseline`): the single student at the ensemble's total parameters;
7. evaluate (:func:`_evaluate`): test accuracies (all devices, each device missing) and
   interleaved latencies;
8. report (:func:`_report`) and artifact (:func:`_write_artifact`): report.json inside the bundle.

Under torchrun every rank trains its shard; rank 0 makes the decisions that must agree
(partition, plans; broadcast as tensors), measures, and writes the bundle. Bad input is
rejected before any training starts; the bundle is written atomically at the very end.
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import torch

from coinfer.core.codec import encode, to_bytes
from coinfer.core.data import DatasetSplits
from coinfer.core.errors import InvalidInput
from coinfer.core.measure import accuracy, predict
from coinfer.core.models.vit import VisionTransformer
from coinfer.core.training import with_loop
from coinfer.server.dekd import partition as part
from coinfer.server.dekd.artifact import write_devit_bundle
from coinfer.server.dekd.baseline import compact_vit_config, single_student_plan, train_single_student
from coinfer.server.dekd.config import DecomposeConfig
from coinfer.server.dekd.distill import distill_submodel, group_rows
from coinfer.server.dekd.ensemble import (
    DeViTEnsemble,
    ensemble_accuracy,
    init_fusion_from_teacher,
    strip_head,
    train_ensemble,
)
from coinfer.core.models.fusion import DeViTFusion, FusionConfig
from coinfer.server.dekd.latency import bound, measure_interleaved
from coinfer.core.parallel import broadcast_, is_main
from coinfer.server.dekd.prune import PrunePlan, build_pruned_vit, unit_importance
from coinfer.server.dekd.report import DEKDReport, DeviceFigures, EnsembleFigures, StudentFigures, TeacherFigures
from coinfer.server.dekd.sizing import DeviceBudget, size_submodels
from coinfer.server.dekd.targets import TeacherTargets, compute_targets
from coinfer.server.dekd.teacher import check_compatible

log = logging.getLogger(__name__)

# Relations for every training image at once when they fit in this much memory, else per group.
_RELATION_CACHE_BYTES = 1 << 29


def validate(teacher: VisionTransformer, splits: DatasetSplits, config: DecomposeConfig, out: Path | None, overwrite: bool) -> None:
    """Every check that can fail before training: a bad request costs nothing and writes nothing."""
    if not isinstance(teacher, VisionTransformer):
        raise InvalidInput(f"the teacher must be a ViT, got {type(teacher).__name__}")
    check_compatible(teacher.config, splits)
    part.check_group_count(splits.num_classes, config.num_devices)
    if out is not None and Path(out).exists() and not overwrite:
        raise InvalidInput(f"{out} already exists; choose another folder or pass --overwrite")
    for name, split in (("train", splits.train), ("test", splits.test)):
        missing = sorted(set(range(splits.num_classes)) - set(np.unique(split.y).tolist()))
        if missing:
            raise InvalidInput(f"the {name} split has no images of class(es) {missing}")


class _Clock:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        if is_main():
            log.info("stage %s", name)
        try:
            yield
        finally:
            self.seconds[name] = round(self.seconds.get(name, 0.0) + time.perf_counter() - started, 3)


def _choose_partition(teacher, splits, config, clock) -> tuple[list[list[int]], float]:
    """Groups in device order (rank 0 decides, every rank receives) and their within-group affinity."""
    speeds = config.speeds()
    ids = torch.zeros(splits.num_classes, dtype=torch.long)
    within = torch.zeros(1, dtype=torch.float64)
    with clock.stage("partition"):
        if is_main():
            # Held-out images show the teacher's real confusions; a tiny validation split may
            # miss a class, then the training images stand in.
            source = splits.val if _all_classes(splits.val.y, splits.num_classes) else splits.train
            x, y = source.tensors()
            targets = compute_targets(teacher, x, with_cls=True, batch_size=config.target_batch_size, distributed=False)
            affinity = part.class_affinity(
                targets.logits.numpy(), y.numpy(), targets.cls.numpy(), splits.num_classes, config.affinity_embedding_weight
            )
            if config.partition == "affinity":
                groups = part.affinity_partition(affinity, config.num_devices)
            else:
                groups = part.random_partition(splits.num_classes, config.num_devices, seed=config.seed)
            groups = part.order_groups_for_devices(groups, speeds)
            for device, group in enumerate(groups):
                ids[group] = device
            within[0] = part.within_group_affinity(affinity, groups)
        broadcast_(ids)
        broadcast_(within)
    groups = [sorted(torch.nonzero(ids == d).flatten().tolist()) for d in range(config.num_devices)]
    return groups, float(within[0])


def _all_classes(y: np.ndarray, num_classes: int) -> bool:
    return len(np.unique(y)) == num_classes


def _broadcast_plan(plan: PrunePlan | None, teacher: VisionTransformer) -> PrunePlan:
    """Rank 0's plan on every rank, sent as keep-masks."""
    cfg = teacher.config
    blocks = torch.zeros(cfg.depth, dtype=torch.uint8)
    heads = torch.zeros(cfg.depth, cfg.num_heads, dtype=torch.uint8)
    neurons = torch.zeros(cfg.depth, cfg.mlp_hidden(0), dtype=torch.uint8)
    if plan is not None:
        for slot, b in enumerate(plan.blocks):
            blocks[b] = 1
            heads[b, list(plan.heads[slot])] = 1
            neurons[b, list(plan.neurons[slot])] = 1
    for t in (blocks, heads, neurons):
        broadcast_(t)
    kept = torch.nonzero(blocks).flatten().tolist()
    return PrunePlan(
        blocks=tuple(kept),
        heads=tuple(tuple(torch.nonzero(heads[b]).flatten().tolist()) for b in kept),
        neurons=tuple(tuple(torch.nonzero(neurons[b]).flatten().tolist()) for b in kept),
    )


def training_targets(teacher: VisionTransformer, splits: DatasetSplits, config: DecomposeConfig) -> TeacherTargets:
    """The teacher's logits and CLS tokens on every training image, and its middle-layer relations
    when they fit in memory (else each group computes its own during distillation)."""
    x_train = splits.train.tensors()[0]
    T = teacher.config.num_tokens
    with_relations = len(x_train) * 3 * T * T * 2 <= _RELATION_CACHE_BYTES
    return compute_targets(
        teacher, x_train, with_cls=True, with_relations=with_relations,
        batch_size=config.target_batch_size, progress=config.progress,
    )


@dataclass
class _Data:
    """The splits as float tensors, made once and read by every stage."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor

    @classmethod
    def of(cls, splits: DatasetSplits) -> "_Data":
        return cls(*splits.train.tensors(), *splits.val.tensors(), *splits.test.tensors())


@dataclass
class _Measured:
    """What the evaluation stage measured on rank 0."""

    teacher_accuracy: float
    ensemble_accuracy: float
    missing_one: list[float]
    student_accuracy: float | None
    latency_ms: dict[str, float]


def decompose(
    teacher: VisionTransformer,
    splits: DatasetSplits,
    config: DecomposeConfig,
    out: str | Path | None = None,
    overwrite: bool = False,
    metadata: Mapping[str, Any] | None = None,
    targets: TeacherTargets | None = None,
) -> DEKDReport | None:
    """Run the pipeline; on rank 0 return the report (and write the bundle when ``out`` is given).

    ``targets`` reuses :func:`training_targets` of the same teacher and data (several runs).
    """
    out = Path(out) if out is not None else None
    validate(teacher, splits, config, out, overwrite)
    torch.manual_seed(config.seed)
    teacher.eval()
    clock = _Clock()
    data = _Data.of(splits)

    groups, within = _choose_partition(teacher, splits, config, clock)
    targets = _teacher_targets(teacher, splits, config, targets, clock)
    students = _prune_and_size(teacher, data, groups, config, clock)
    group_acc = _distill(teacher, data, groups, students, targets, config, clock)
    ensemble = _train_ensemble(teacher, data, students, targets, config, clock)
    student = _train_baseline(teacher, data, ensemble, targets, config, clock)
    if not is_main():
        return None
    measured = _evaluate(teacher, ensemble, student, data, config, clock)
    report = _report(teacher, splits, data, config, groups, within, ensemble, student, group_acc, measured, clock)
    if out is not None:
        _write_artifact(out, splits, config, ensemble, groups, report, metadata, overwrite)
    return report


def _teacher_targets(teacher, splits, config, targets: TeacherTargets | None, clock: _Clock) -> TeacherTargets:
    """The teacher's outputs on every training image: computed here, or checked when given."""
    with clock.stage("teacher targets"):
        if targets is None:
            return training_targets(teacher, splits, config)
        if len(targets.logits) != len(splits.train):
            raise InvalidInput(f"{len(targets.logits)} rows of teacher targets for {len(splits.train)} training images")
        return targets


def _prune_and_size(teacher, data: _Data, groups: list[list[int]], config, clock: _Clock) -> list[VisionTransformer]:
    """Each group's pruned sub-model: rank 0 ranks the teacher's units on the group's images and
    sizes every device's budget; the plans are broadcast."""
    rows = [group_rows(data.y_train, g) for g in groups]
    budgets: list[DeviceBudget] | None = None
    with clock.stage("prune"):
        if is_main():
            pick = torch.Generator().manual_seed(config.seed)
            importances = []
            for g, (idx, local) in zip(groups, rows):
                sample = torch.randperm(len(idx), generator=pick)[: config.importance_samples]
                importances.append(unit_importance(teacher, data.x_train[idx[sample]], local[sample], classes=g))
            budgets = size_submodels(teacher.config, importances, config.speeds(), config.macs_ratio)
        plans = [_broadcast_plan(budgets[i].plan if budgets else None, teacher) for i in range(len(groups))]
        return [build_pruned_vit(teacher, plan, classes=g) for plan, g in zip(plans, groups)]


def _distill(teacher, data: _Data, groups, students, targets: TeacherTargets, config, clock: _Clock) -> list[float]:
    """Sub-task distillation of every sub-model on its group; returns each one's test accuracy on its classes."""
    group_acc = []
    with clock.stage("distill"):
        for i, (g, student) in enumerate(zip(groups, students)):
            idx, local = group_rows(data.y_train, g)
            group_targets = targets.rows(idx)
            if targets.relations is None:  # too many images to cache them all: this group's only
                group_targets.relations = compute_targets(
                    teacher, data.x_train[idx], with_relations=True, batch_size=config.target_batch_size
                ).relations
            group_targets.logits = group_targets.logits[:, g]
            vi, vl = group_rows(data.y_val, g)
            stage = with_loop(config.distill, desc=f"distill device {i}")
            distill_submodel(student, data.x_train[idx], local, group_targets, data.x_val[vi], vl, stage)
            ti, tl = group_rows(data.y_test, g)
            group_acc.append(accuracy(predict(student, data.x_test[ti]), tl.numpy()))
    return group_acc


def _train_ensemble(teacher, data: _Data, students, targets: TeacherTargets, config, clock: _Clock) -> DeViTEnsemble:
    """The head-less sub-models and a fusion head (started in closed form from the teacher), trained together."""
    submodels = [strip_head(s) for s in students]
    torch.manual_seed(config.seed)
    widths = tuple(m.config.embed_dim for m in submodels)
    fusion = DeViTFusion(FusionConfig(widths, teacher.config.embed_dim, teacher.config.num_classes))
    ensemble = DeViTEnsemble(submodels, fusion)
    with clock.stage("ensemble"):
        if config.fusion_init_samples > 0:
            sample = torch.randperm(len(data.x_train), generator=torch.Generator().manual_seed(config.seed))
            sample = sample[: config.fusion_init_samples]
            init_fusion_from_teacher(ensemble, data.x_train[sample], targets.cls[sample], teacher)
        train_ensemble(ensemble, data.x_train, data.y_train, targets, data.x_val, data.y_val, config.ensemble)
    return ensemble


def _train_baseline(teacher, data: _Data, ensemble: DeViTEnsemble, targets, config, clock: _Clock):
    """The single student at the ensemble's parameters (None when the config skips it)."""
    if config.baseline is None:
        return None
    params = ensemble_params(ensemble)
    with clock.stage("single student"):
        if config.baseline.init == "scratch":
            torch.manual_seed(config.seed)
            student = VisionTransformer(compact_vit_config(teacher.config, params))
        else:
            plan = None
            if is_main():
                sample = torch.randperm(len(data.x_train), generator=torch.Generator().manual_seed(config.seed))
                sample = sample[: config.importance_samples]
                importance = unit_importance(teacher, data.x_train[sample], data.y_train[sample])
                plan = single_student_plan(teacher.config, importance, params)
            student = build_pruned_vit(teacher, _broadcast_plan(plan, teacher))
        train_single_student(student, data.x_train, data.y_train, targets.logits, data.x_val, data.y_val, config.baseline)
    return student


def ensemble_params(ensemble: DeViTEnsemble) -> int:
    """Parameters of every sub-model plus the fusion head."""
    return sum(m.num_params() for m in ensemble.submodels) + ensemble.fusion.num_params()


def _evaluate(teacher, ensemble: DeViTEnsemble, student, data: _Data, config, clock: _Clock) -> _Measured:
    """Test accuracies (all devices, each device missing) and interleaved batch-1 latencies."""
    N = ensemble.num_devices
    with clock.stage("evaluate"):
        teacher_acc = accuracy(predict(teacher, data.x_test), data.y_test.numpy())
        ens_acc = ensemble_accuracy(ensemble, data.x_test, data.y_test)
        missing_one = [ensemble_accuracy(ensemble, data.x_test, data.y_test, missing=[i]) for i in range(N)]
        student_acc = accuracy(predict(student, data.x_test), data.y_test.numpy()) if student is not None else None
    with clock.stage("latency"):
        x1 = data.x_test[:1]
        feats = ensemble.features(x1).detach()
        present = torch.ones(1, N, dtype=torch.bool)
        fns = {"teacher": bound(teacher, x1), "fusion": bound(ensemble.fusion, feats, present)}
        fns.update({f"device-{i}": bound(m, x1) for i, m in enumerate(ensemble.submodels)})
        if student is not None:
            fns["single student"] = bound(student, x1)
        latency = measure_interleaved(fns, rounds=config.latency_rounds, repeats=config.latency_repeats)
    return _Measured(teacher_acc, ens_acc, missing_one, student_acc, latency)


def _report(teacher, splits, data: _Data, config, groups, within, ensemble, student, group_acc, measured: _Measured,
            clock: _Clock) -> DEKDReport:
    """The figures of the run (report.json)."""
    lat = measured.latency_ms
    speeds = config.speeds()
    x1 = data.x_test[:1]
    devices = []
    for i, m in enumerate(ensemble.submodels):
        feature = m(x1).detach().numpy()
        devices.append(
            DeviceFigures(
                device=i,
                classes=groups[i],
                params=m.num_params(),
                macs=m.macs(),
                latency_ms=lat[f"device-{i}"],
                payload_bytes=len(to_bytes(encode(feature))),
                speed=speeds[i],
                scaled_latency_ms=lat[f"device-{i}"] / speeds[i],
                depth=m.config.depth,
                heads=list(m.config.block_heads or ()),
                mlp_hidden=list(m.config.block_mlp_hidden or ()),
                group_accuracy=group_acc[i],
            )
        )
    scaled = [d.scaled_latency_ms for d in devices]
    ens_latency = max(scaled) + lat["fusion"]
    return DEKDReport(
        dataset=splits.name,
        num_classes=splits.num_classes,
        devices=ensemble.num_devices,
        partition=groups,
        partition_method=config.partition,
        class_names=list(splits.class_names),
        teacher=TeacherFigures(measured.teacher_accuracy, teacher.num_params(), teacher.macs(), lat["teacher"]),
        ensemble=EnsembleFigures(
            accuracy=measured.ensemble_accuracy,
            accuracy_missing_one=measured.missing_one,
            latency_ms=ens_latency,
            fusion_latency_ms=lat["fusion"],
            params=ensemble_params(ensemble),
            latency_balance=max(scaled) / min(scaled),
            devices=devices,
        ),
        single_student=None
        if student is None
        else StudentFigures(measured.student_accuracy, student.num_params(), student.macs(), lat["single student"],
                            config.baseline.init),
        speedup=lat["teacher"] / ens_latency,
        within_group_affinity=within,
        stage_seconds=clock.seconds,
        config=config.to_dict(),
    )


def _write_artifact(out: Path, splits, config, ensemble: DeViTEnsemble, groups, report: DEKDReport, metadata, overwrite: bool) -> None:
    """The deployable DeViT bundle with the report inside, written atomically."""
    meta = {
        **dict(metadata or {}),
        "devit": {
            "dataset": splits.name,
            "class_names": list(splits.class_names),
            "image_shape": list(splits.image_shape),
            "device_speeds": config.speeds(),
            "teacher": asdict(report.teacher),
        },
    }
    write_devit_bundle(out, list(ensemble.submodels), ensemble.fusion, groups, meta, report.to_json(), overwrite=overwrite)

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
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import torch

from coinfer.core.codec import encode, to_bytes
from coinfer.core.data import DatasetSplits
from coinfer.core.errors import InvalidInput
from coinfer.core.measure import accuracy, predict
from coinfer.core.models.vit import VisionTransformer
from coinfer.core.device import model_device
from coinfer.core.parallel import broadcast_, is_main, training_device, world
from coinfer.core.training import plan_steps, train_classifier, with_loop
from coinfer.server.dekd import partition as part
from coinfer.core.devit_bundle import write_devit_bundle
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
from coinfer.server.dekd.prune import PrunePlan, build_pruned_vit, unit_importance
from coinfer.server.dekd.recipes import REFERENCE_CNN
from coinfer.server.dekd.report import (
    DEKDReport,
    DeviceFigures,
    EnsembleFigures,
    ReferenceFigures,
    StudentFigures,
    TeacherFigures,
)
from coinfer.server.dekd.sizing import DeviceBudget, size_submodels
from coinfer.server.dekd.targets import TeacherSignal, TeacherTargets, compute_targets
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
    training_device(config.device)  # cuda without a GPU fails here, before anything runs
    # Every budget must fit one epoch of the data; a group is smaller, so it gets more epochs.
    for loop in (config.distill.loop, config.ensemble.loop, config.reference):
        if loop is not None:
            plan_steps(loop, len(splits.train), whole_epoch=True)
    if config.baseline is not None and not config.baseline.equal_compute:
        plan_steps(config.baseline.loop, len(splits.train), whole_epoch=True)


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
    """The splits as float tensors, made once and read by every stage: the training and validation
    images on the training device, the test images on the CPU (where evaluation and latency run)."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor

    @classmethod
    def of(cls, splits: DatasetSplits, device: torch.device) -> "_Data":
        x_train, y_train = (t.to(device) for t in splits.train.tensors())
        x_val, y_val = splits.val.tensors()
        return cls(x_train, y_train, x_val.to(device), y_val, *splits.test.tensors())


@dataclass
class _Trained:
    """What the training stages produced (on the CPU)."""

    ensemble: DeViTEnsemble
    student: VisionTransformer | None
    reference: Any
    group_accuracy: list[float]
    recipes: dict[str, Any]


@dataclass
class _Measured:
    """What the evaluation stage measured on rank 0."""

    teacher_accuracy: float
    ensemble_accuracy: float
    missing_one: list[float]
    student_accuracy: float | None
    reference_accuracy: float | None
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
    Training runs on ``config.device``; the teacher is back where it was afterwards.
    """
    out = Path(out) if out is not None else None
    validate(teacher, splits, config, out, overwrite)
    device = training_device(config.device)
    config = _stages_on(config, str(device))
    torch.manual_seed(config.seed)
    teacher.eval()
    clock = _Clock()
    data = _Data.of(splits, device)
    home = model_device(teacher)
    teacher.to(device)
    try:
        groups, within = _choose_partition(teacher, splits, config, clock)
        targets = _teacher_targets(teacher, splits, config, targets, clock)
        students = _prune_and_size(teacher, data, groups, config, clock)
        group_acc, distill_recipes = _distill(teacher, data, groups, students, targets, config, clock)
        ensemble, ensemble_recipe = _train_ensemble(teacher, data, students, targets, config, clock)
        student, student_recipe = _train_baseline(teacher, data, ensemble, targets, config, distill_recipes,
                                                  ensemble_recipe, clock)
    finally:
        teacher.to(home)
    reference, reference_recipe = _train_reference(splits, config, clock)
    recipes = {"distill": distill_recipes, "ensemble": ensemble_recipe, "single student": student_recipe,
               "reference cnn": reference_recipe}
    trained = _Trained(ensemble, student, reference, group_acc, recipes)
    if not is_main():
        return None
    teacher.cpu()
    measured = _evaluate(teacher, trained, data, config, clock)
    report = _report(teacher, splits, data, config, groups, within, trained, measured, metadata, clock)
    teacher.to(home)
    if out is not None:
        _write_artifact(out, splits, config, ensemble, groups, report, metadata, overwrite)
    return report


def _stages_on(config: DecomposeConfig, device: str) -> DecomposeConfig:
    """``config`` with every stage loop on ``device`` (the run's device, resolved, replaces theirs)."""
    return replace(
        config,
        device=device,
        distill=with_loop(config.distill, device=device),
        ensemble=with_loop(config.ensemble, device=device),
        baseline=None if config.baseline is None else with_loop(config.baseline, device=device),
        reference=None if config.reference is None else replace(config.reference, device=device),
    )


def _teacher_targets(teacher, splits, config, targets: TeacherTargets | None, clock: _Clock) -> TeacherTargets | None:
    """The teacher's outputs on every training image, when the stages read them cached (or they
    were given); an online teacher needs none."""
    with clock.stage("teacher targets"):
        if targets is None:
            return None if config.online_teacher else training_targets(teacher, splits, config)
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
                sample = torch.randperm(len(idx), generator=pick)[: config.importance_samples].to(idx.device)
                importances.append(unit_importance(teacher, data.x_train[idx[sample]], local[sample], classes=g))
            budgets = size_submodels(teacher.config, importances, config.speeds(), config.macs_ratio)
        plans = [_broadcast_plan(budgets[i].plan if budgets else None, teacher) for i in range(len(groups))]
        return [build_pruned_vit(teacher, plan, classes=g).cpu() for plan, g in zip(plans, groups)]


def _distill(teacher, data: _Data, groups, students, targets: TeacherTargets | None, config, clock: _Clock):
    """Sub-task distillation of every sub-model on its group; returns each one's test accuracy on
    its classes and the recipe each ran."""
    group_acc, recipes = [], []
    with clock.stage("distill"):
        for i, (g, student) in enumerate(zip(groups, students)):
            idx, local = group_rows(data.y_train, g)
            if targets is None:
                signal = TeacherSignal(teacher=teacher, classes=g)
            else:
                group_targets = targets.rows(idx.cpu())
                if group_targets.relations is None:  # too many images to cache them all: this group's only
                    group_targets.relations = compute_targets(
                        teacher, data.x_train[idx], with_relations=True, batch_size=config.target_batch_size
                    ).relations
                group_targets.logits = group_targets.logits[:, g]
                signal = TeacherSignal(cached=group_targets)
            vi, vl = group_rows(data.y_val, g)
            stage = with_loop(config.distill, desc=f"distill device {i}")
            result = distill_submodel(student, data.x_train[idx], local, signal, data.x_val[vi.to(data.x_val.device)], vl, stage)
            recipes.append(result.recipe(stage.loop))
            ti, tl = group_rows(data.y_test, g)
            group_acc.append(accuracy(predict(student, data.x_test[ti]), tl.numpy()))
    return group_acc, recipes


def _train_ensemble(teacher, data: _Data, students, targets: TeacherTargets | None, config, clock: _Clock):
    """The head-less sub-models and a fusion head (started in closed form from the teacher),
    trained together; returns the ensemble (on the CPU) and the recipe it ran."""
    submodels = [strip_head(s) for s in students]
    torch.manual_seed(config.seed)
    widths = tuple(m.config.embed_dim for m in submodels)
    fusion = DeViTFusion(FusionConfig(widths, teacher.config.embed_dim, teacher.config.num_classes))
    ensemble = DeViTEnsemble(submodels, fusion)
    with clock.stage("ensemble"):
        if config.fusion_init_samples > 0:
            sample = torch.randperm(len(data.x_train), generator=torch.Generator().manual_seed(config.seed))
            sample = sample[: config.fusion_init_samples]
            x_sample = data.x_train[sample.to(data.x_train.device)]
            if targets is not None:
                cls = targets.cls[sample]
            else:
                cls = compute_targets(teacher, x_sample, with_cls=True, batch_size=config.target_batch_size).cls
            ensemble.to(model_device(teacher))
            init_fusion_from_teacher(ensemble, x_sample, cls, teacher)
            ensemble.cpu()
        signal = TeacherSignal(teacher=teacher) if targets is None else TeacherSignal(cached=targets)
        result = train_ensemble(ensemble, data.x_train, data.y_train, signal, data.x_val, data.y_val, config.ensemble)
    return ensemble, result.recipe(config.ensemble.loop)


def _train_baseline(teacher, data: _Data, ensemble: DeViTEnsemble, targets, config, distill_recipes, ensemble_recipe,
                    clock: _Clock):
    """The single student at the ensemble's parameters, trained with the ensemble's training
    compute unless its config says otherwise; (None, None) when the config skips it."""
    if config.baseline is None:
        return None, None
    params = ensemble_params(ensemble)
    stage = config.baseline
    if stage.equal_compute:
        stage = with_loop(stage, steps=_equal_compute_steps(distill_recipes, ensemble_recipe, stage.loop.batch_size),
                          budget=None)
    with clock.stage("single student"):
        if stage.init == "scratch":
            torch.manual_seed(config.seed)
            student = VisionTransformer(compact_vit_config(teacher.config, params))
        else:
            plan = None
            if is_main():
                sample = torch.randperm(len(data.x_train), generator=torch.Generator().manual_seed(config.seed))
                sample = sample[: config.importance_samples]
                importance = unit_importance(teacher, data.x_train[sample.to(data.x_train.device)],
                                             data.y_train[sample.to(data.y_train.device)])
                plan = single_student_plan(teacher.config, importance, params)
            student = build_pruned_vit(teacher, _broadcast_plan(plan, teacher)).cpu()
        signal = TeacherSignal(teacher=teacher) if targets is None else TeacherSignal(cached=targets)
        result = train_single_student(student, data.x_train, data.y_train, signal, data.x_val, data.y_val, stage)
    return student, result.recipe(stage.loop)


def _equal_compute_steps(distill_recipes: list[dict], ensemble_recipe: dict, batch_size: int) -> int:
    """The single student's steps for the ensemble's training compute: each sub-model is about
    1/N of the student, so the samples of all distillations / N plus those of the ensemble."""
    distill_samples = sum(r["planned_steps"] * r["batch_size"] for r in distill_recipes) / len(distill_recipes)
    ensemble_samples = ensemble_recipe["planned_steps"] * ensemble_recipe["batch_size"]
    return max(1, round((distill_samples + ensemble_samples) / batch_size))


def _train_reference(splits: DatasetSplits, config: DecomposeConfig, clock: _Clock):
    """The reference CNN trained with the teacher's recipe; (None, None) when the config skips it."""
    if config.reference is None:
        return None, None
    from coinfer.core.models import build_model

    channels, size, _ = splits.image_shape
    with clock.stage("reference cnn"):
        torch.manual_seed(config.seed)
        model = build_model({**REFERENCE_CNN, "num_classes": splits.num_classes, "in_chans": channels, "image_size": size})
        result = train_classifier(model, splits, config.reference)
    return model, result.recipe(config.reference)


def ensemble_params(ensemble: DeViTEnsemble) -> int:
    """Parameters of every sub-model plus the fusion head."""
    return sum(m.num_params() for m in ensemble.submodels) + ensemble.fusion.num_params()


def _evaluate(teacher, trained: _Trained, data: _Data, config, clock: _Clock) -> _Measured:
    """Test accuracies (all devices, each device missing) and interleaved batch-1 latencies, on the CPU."""
    ensemble, student, reference = trained.ensemble, trained.student, trained.reference
    N = ensemble.num_devices
    x_test, y_test = data.x_test, data.y_test.numpy()
    with clock.stage("evaluate"):
        teacher_acc = accuracy(predict(teacher, x_test), y_test)
        ens_acc = ensemble_accuracy(ensemble, x_test, data.y_test)
        missing_one = [ensemble_accuracy(ensemble, x_test, data.y_test, missing=[i]) for i in range(N)]
        student_acc = accuracy(predict(student, x_test), y_test) if student is not None else None
        reference_acc = accuracy(predict(reference, x_test), y_test) if reference is not None else None
    with clock.stage("latency"):
        x1 = x_test[:1]
        feats = ensemble.features(x1).detach()
        present = torch.ones(1, N, dtype=torch.bool)
        fns = {"teacher": bound(teacher, x1), "fusion": bound(ensemble.fusion, feats, present)}
        fns.update({f"device-{i}": bound(m, x1) for i, m in enumerate(ensemble.submodels)})
        if student is not None:
            fns["single student"] = bound(student, x1)
        if reference is not None:
            fns["reference cnn"] = bound(reference, x1)
        latency = measure_interleaved(fns, rounds=config.latency_rounds, repeats=config.latency_repeats)
    return _Measured(teacher_acc, ens_acc, missing_one, student_acc, reference_acc, latency)


def _report(teacher, splits, data: _Data, config, groups, within, trained: _Trained, measured: _Measured, metadata,
            clock: _Clock) -> DEKDReport:
    """The figures of the run (report.json), with the recipe every stage ran and why."""
    ensemble, student, reference = trained.ensemble, trained.student, trained.reference
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
                group_accuracy=trained.group_accuracy[i],
            )
        )
    scaled = [d.scaled_latency_ms for d in devices]
    ens_latency = max(scaled) + lat["fusion"]
    teacher_meta = dict((metadata or {}).get("teacher_metadata") or {})
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
        reference=None
        if reference is None
        else ReferenceFigures(REFERENCE_CNN["arch"], REFERENCE_CNN["width_mult"], measured.reference_accuracy,
                              reference.num_params(), reference.macs(), lat["reference cnn"]),
        speedup=lat["teacher"] / ens_latency,
        within_group_affinity=within,
        stage_seconds=clock.seconds,
        config=config.to_dict(),
        recipe={
            "budget": config.budget,
            "train_images": len(splits.train),
            "device": config.device,
            "processes": world()[1],
            "online_teacher": config.online_teacher,
            "teacher": teacher_meta.get("recipe"),
            "stages": trained.recipes,
        },
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

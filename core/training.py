"""The one training loop of coinfer: the teacher, the split backbones, every DEKD stage and the
split-point bottlenecks all train through :func:`train_loop`, configured by one :class:`TrainConfig`.

The loop owns what every stage shares: the budget (a named :class:`Budget` that scales with the
data, epochs, or optimiser steps), AdamW with a linear warm-up then cosine decay (per parameter
group, scaled), the order of the samples, the device (bf16 autocast on CUDA), DistributedDataParallel
under torchrun, a progress bar, validation with early stopping, and the best weights kept. A stage
supplies what is its own: a loss over a batch of sample indices (:class:`Batch`), how it scores the
module, and a small config that holds a TrainConfig beside its own fields (``DistillConfig``,
``EnsembleConfig``, ``BaselineConfig``, ``BottleneckTrainConfig``, ``FinetuneConfig``).

Under torchrun a budget means the same optimisation as in one process: ``batch_size`` is the
global batch, each of the P processes takes 1/P of it from its shard of the epoch, so the number
of steps, the samples seen and the learning-rate schedule do not depend on P.

On a GPU the stage's data lives there (moved once), the batch indices are moved once per epoch,
and the losses stay there until the end of the epoch: nothing waits for the device step by step.

:func:`train_classifier` is the plain supervised stage on top of it (cross-entropy with label
smoothing over augmented images), used for teachers, backbones and the reference CNN.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from coinfer.core.data import DatasetSplits, ImageDataset, MixedImages, augment_images, to_float
from coinfer.core.errors import InvalidInput
from coinfer.core.measure import accuracy, predict
from coinfer.core.parallel import training_device, world

if TYPE_CHECKING:
    import torch
    from torch import nn

BUDGETS: dict[str, float] = {"quick": 10.0, "default": 40.0, "thorough": 100.0}
"""Epochs each named budget gives a training set of :data:`BUDGET_REFERENCE_IMAGES` images."""
BUDGET_REFERENCE_IMAGES = 4000
"""Other sizes get ``epochs * sqrt(4000 / n)``: a small set is seen many more times (a ViT needs
the steps), a large one fewer (each step already sees new images), and the samples seen grow as
sqrt(n). At the default budget: digits' 1,259 training images 71 epochs, 4,500 images 38,
18,000 images 19, Fashion-MNIST's 54,000 images 11."""
MAX_BUDGET_EPOCHS = 300.0
"""No named budget passes over a (tiny) training set more often than this."""


@dataclass(frozen=True)
class Budget:
    """A named training budget, resolved to optimiser steps from the number of training samples."""

    name: str = "default"
    """"quick", "default" or "thorough" (:data:`BUDGETS`)."""
    scale: float = 1.0
    """This stage's share of the named budget's epochs (a stage never gets less than one epoch)."""

    def __post_init__(self) -> None:
        if self.name not in BUDGETS:
            raise InvalidInput(f"budget must be one of {', '.join(BUDGETS)}, got {self.name!r}")
        if isinstance(self.scale, bool) or not isinstance(self.scale, (int, float)) or not self.scale > 0:
            raise InvalidInput(f"a budget's scale must be positive, got {self.scale!r}")

    def base_epochs(self, num_samples: int) -> float:
        """Epochs of the named budget for ``num_samples`` images, before this stage's scale."""
        return BUDGETS[self.name] * math.sqrt(BUDGET_REFERENCE_IMAGES / num_samples)

    def epochs(self, num_samples: int) -> float:
        """Epochs this stage gets; a budget that cannot fit one epoch of the data is an error."""
        base = self.base_epochs(num_samples)
        if base < 1:
            raise InvalidInput(
                f"budget {self.name!r} fits {base:.2f} of one epoch of {num_samples:,} training images "
                f"({BUDGETS[self.name]:g} epochs at {BUDGET_REFERENCE_IMAGES:,} images, scaled by sqrt(4000 / n)); "
                "choose a larger budget or give epochs"
            )
        return min(MAX_BUDGET_EPOCHS, max(1.0, base * self.scale))


@dataclass
class TrainConfig:
    """How one stage trains: the budget, the optimiser's schedule, augmentation, early stopping, the device.

    The budget is ``steps`` when given, else ``budget`` when given, else ``epochs``. Fields that
    are None are off (and left out of cache keys).
    """

    epochs: int = 10
    """Passes over the stage's training samples (the budget unless ``budget`` or ``steps`` is given)."""
    steps: int | None = None
    """Optimiser steps; when given, the budget (fewer than one epoch only where a stage allows it: fine-tuning)."""
    budget: Budget | None = None
    """A named budget that scales with the data; when given (and ``steps`` is not), the budget."""
    batch_size: int = 128
    """Samples per optimiser step, over all processes under torchrun."""
    lr: float = 1e-3
    """Peak learning rate after warm-up (each parameter group may scale it)."""
    weight_decay: float = 0.05
    """AdamW weight decay."""
    warmup_epochs: float = 1.0
    """Linear warm-up length, in epochs (at least one step)."""
    warmup_fraction: float | None = None
    """Warm-up as a fraction of the budget's steps; when given, replaces ``warmup_epochs``."""
    patience: int | None = None
    """Early stopping: stop after this many validations without a better score (the best weights are kept)."""
    label_smoothing: float = 0.1
    """Cross-entropy label smoothing of every stage's label term."""
    augment: bool = True
    """Random shifts by up to 1/8 of the image side; the stages that augment read this (classifiers always,
    DEKD stages when their recipe says so)."""
    hflip: bool | None = None
    """Random left-right flips of half the images (only where the data allows: :func:`coinfer.core.data.mirror_safe`)."""
    mixup_alpha: float | None = None
    """Mixup with weights ~ Beta(a, a) (DeViT / DeiT: 0.8)."""
    cutmix_alpha: float | None = None
    """CutMix with box areas ~ Beta(a, a) (DeiT: 1.0); with mixup too, each batch takes one of them."""
    seed: int = 0
    """Seeds shuffling, augmentation, initialisation order and any randomness the loss draws."""
    progress: bool = True
    """Show a progress bar and one line per validation."""
    desc: str = "train"
    """Label of the progress bar."""
    device: str = "cpu"
    """Where training runs: 'cpu', 'cuda' (or 'cuda:N') or 'auto'; the module ends on the CPU either way."""

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            _check_count(self.desc, name, getattr(self, name))
        for name in ("steps", "patience"):
            if getattr(self, name) is not None:
                _check_count(self.desc, name, getattr(self, name))
        if isinstance(self.lr, bool) or not isinstance(self.lr, (int, float)) or not self.lr > 0:
            raise InvalidInput(f"{self.desc}: lr must be positive, got {self.lr!r}")
        if self.warmup_fraction is not None and not 0 <= self.warmup_fraction < 1:
            raise InvalidInput(f"{self.desc}: warmup_fraction must be in [0, 1), got {self.warmup_fraction!r}")
        for name in ("mixup_alpha", "cutmix_alpha"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, (int, float)) and value >= 0):
                raise InvalidInput(f"{self.desc}: {name} must be >= 0, got {value!r}")
        if isinstance(self.budget, dict):  # from JSON
            self.budget = Budget(**self.budget)

    @property
    def mixes(self) -> bool:
        """Whether batches are mixed (mixup or cutmix): label losses then weigh two labels."""
        return bool(self.mixup_alpha or self.cutmix_alpha)


def with_loop(stage, **changes):
    """A copy of a stage config (any dataclass holding a ``loop: TrainConfig``) with loop fields changed."""
    return replace(stage, loop=replace(stage.loop, **changes))


def _check_count(desc: str, name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInput(f"{desc}: {name} must be an integer >= 1, got {value!r}")


@dataclass(frozen=True)
class StepPlan:
    """A budget resolved for one training set and number of processes."""

    steps: int
    """Optimiser steps planned."""
    steps_per_epoch: int
    """Steps of one pass over the training samples (the same for any number of processes)."""
    epochs: float
    """Passes the budget gives (steps / steps_per_epoch)."""
    warmup_steps: int
    """Linear warm-up steps."""
    batch_per_process: int
    """Samples each process takes per step (the global batch over the processes)."""
    num_samples: int
    """Training samples the plan is for."""
    why: str
    """Where the number of steps came from, in words."""


def plan_steps(config: TrainConfig, num_samples: int, processes: int = 1, whole_epoch: bool = False) -> StepPlan:
    """The steps ``config`` takes on ``num_samples`` samples with ``processes`` processes, checked
    before training: too few samples, or a named budget that cannot fit one epoch, is an
    InvalidInput; with ``whole_epoch`` so are fixed steps that cannot (a model trained from scratch
    should see its data once; a short fine-tuning need not)."""
    if num_samples < 1:
        raise InvalidInput(f"{config.desc}: no training samples")
    shard = (num_samples - num_samples % processes) // processes
    if shard < 1:
        raise InvalidInput(f"{config.desc}: {num_samples} samples cannot be shared by {processes} processes")
    per_process = max(1, math.ceil(config.batch_size / processes))
    steps_per_epoch = math.ceil(shard / per_process)
    if config.steps is not None:
        if whole_epoch and config.steps < steps_per_epoch:
            raise InvalidInput(
                f"{config.desc}: {config.steps} steps cannot fit one epoch of {num_samples:,} samples "
                f"({steps_per_epoch} steps at batch {config.batch_size})"
            )
        steps, why = config.steps, f"{config.steps} steps as given"
    elif config.budget is not None:
        epochs = config.budget.epochs(num_samples)
        steps = max(steps_per_epoch, round(epochs * steps_per_epoch))
        scale = f" x {config.budget.scale:g}" if config.budget.scale != 1 else ""
        why = (f"budget {config.budget.name!r}{scale}: {BUDGETS[config.budget.name]:g} epochs at "
               f"{BUDGET_REFERENCE_IMAGES:,} images x sqrt({BUDGET_REFERENCE_IMAGES:,} / {num_samples:,}) = "
               f"{epochs:.1f} epochs of {steps_per_epoch} steps")
    else:
        steps, why = steps_per_epoch * config.epochs, f"{config.epochs} epochs as given"
    if config.warmup_fraction is not None:
        warmup = max(1, int(config.warmup_fraction * steps))
    else:
        warmup = max(1, int(config.warmup_epochs * steps_per_epoch))
    return StepPlan(steps, steps_per_epoch, steps / steps_per_epoch, warmup, per_process, num_samples, why)


@dataclass
class TrainResult:
    """What a training run produced."""

    best_val_accuracy: float
    best_epoch: int
    val_accuracy_per_epoch: list[float] = field(default_factory=list)
    """The validation score of every epoch that was validated (see ``validated_epochs``)."""
    train_loss_per_epoch: list[float] = field(default_factory=list)
    train_loss_per_step: list[float] = field(default_factory=list)
    validated_epochs: list[int] = field(default_factory=list)
    """Epochs (from 0) after which the module was validated."""
    plan: StepPlan | None = None
    """The budget as resolved."""
    steps: int = 0
    """Optimiser steps taken (fewer than planned when stopped early)."""
    samples_seen: int = 0
    """Training samples the optimiser saw, over all processes."""
    stopped_early_at_epoch: int | None = None
    """The epoch (from 0) after which early stopping ended training; None: the whole budget ran."""

    def recipe(self, config: TrainConfig) -> dict:
        """What ran and why, for reports: the config, the resolved budget and what early stopping did."""
        keep = ("batch_size", "lr", "weight_decay", "label_smoothing", "augment", "hflip", "mixup_alpha",
                "cutmix_alpha", "patience", "epochs", "steps")
        return {
            "stage": config.desc,
            "budget": None if config.budget is None else asdict(config.budget),
            **{k: getattr(config, k) for k in keep},
            "train_samples": None if self.plan is None else self.plan.num_samples,
            "planned_steps": None if self.plan is None else self.plan.steps,
            "planned_epochs": None if self.plan is None else round(self.plan.epochs, 2),
            "warmup_steps": None if self.plan is None else self.plan.warmup_steps,
            "why": None if self.plan is None else self.plan.why,
            "steps": self.steps,
            "samples_seen": self.samples_seen,
            "best_epoch": self.best_epoch,
            "best_val_accuracy": self.best_val_accuracy,
            "stopped_early_at_epoch": self.stopped_early_at_epoch,
        }


@dataclass
class Batch:
    """One optimiser step's share of the samples, as a stage's loss sees it."""

    index: "torch.Tensor"
    """This process's sample indices (int64) on the training device."""
    cpu_index: "torch.Tensor"
    """The same indices on the CPU, for data a stage keeps there."""
    step: int
    """Optimiser step, counted from 0."""
    generator: "torch.Generator"
    """This process's generator on the training device, for tensors the loss draws (augmentation, device dropout)."""
    rng: np.random.Generator
    """This process's host generator, for scalars the loss draws (mixing weights) without waiting for the device."""


LossFn = Callable[["nn.Module", Batch], "torch.Tensor"]
"""loss_fn(train_module, batch) -> scalar loss; the module may be DDP-wrapped."""


def augment_batch(x: "torch.Tensor", config: TrainConfig, batch: Batch) -> MixedImages:
    """``config``'s augmentation of the images ``x`` of one batch (on the training device)."""
    return augment_images(
        x, batch.generator, batch.rng,
        max_shift=max(1, x.shape[-1] // 8) if config.augment else 0,
        hflip=bool(config.hflip),
        mixup_alpha=config.mixup_alpha or 0.0,
        cutmix_alpha=config.cutmix_alpha or 0.0,
    )


def cpu_state_dict(model) -> dict:
    """A detached CPU copy of ``model``'s state dict (safe to keep while the model trains on a GPU)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def cosine_lr(step: int, total_steps: int, warmup_steps: int, peak_lr: float) -> float:
    """Linear warm-up to `peak_lr`, then cosine decay to zero."""
    if step < warmup_steps:
        return peak_lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return peak_lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


MAX_VALIDATIONS = 100
"""Validate after every epoch, or every k-th one where the budget has more than this many epochs."""


def train_loop(
    module: "nn.Module",
    num_samples: int,
    loss_fn: LossFn,
    config: TrainConfig,
    evaluate: Callable[["nn.Module"], float] | None = None,
    param_groups: Sequence[tuple[Sequence["nn.Parameter"], float]] | None = None,
) -> TrainResult:
    """Train ``module`` on sample indices 0..num_samples-1 for ``config``'s budget.

    ``loss_fn`` gets the module (DDP-wrapped under torchrun) and a :class:`Batch`; anything it
    reads must be on the training device (or read through ``Batch.cpu_index``). ``evaluate(module)``
    scores the plain module (higher is better) after every epoch; the module is left holding the
    best weights, and with ``config.patience`` training stops once that many validations in a
    row did not beat the best. Without ``evaluate`` the module keeps its final weights.
    ``param_groups`` pairs parameters with a learning-rate scale (default: every parameter at
    scale 1). The module trains on ``config.device`` (under bf16 autocast on CUDA) and is left on
    the CPU, in evaluation mode, also when training fails midway.
    """
    device = training_device(config.device)
    plan = plan_steps(config, num_samples, world(device)[1])
    module.to(device)
    try:
        return _train_on_device(module, num_samples, loss_fn, config, evaluate, param_groups, device, plan)
    finally:
        # Callers save, measure and deploy the module on the CPU.
        module.cpu()


def _train_on_device(module, num_samples, loss_fn, config, evaluate, param_groups, device, plan: StepPlan) -> TrainResult:
    """The body of :func:`train_loop`, with ``module`` already on ``device``."""
    import torch
    from torch import nn
    from tqdm.auto import tqdm

    rank, size = world(device)
    torch.manual_seed(config.seed)
    generator = torch.Generator(device=device).manual_seed(config.seed + 1000 * rank)
    rng = np.random.default_rng(config.seed + 1000 * rank)
    train_module = module
    if size > 1:
        device_ids = [device.index] if device.type == "cuda" else None
        train_module = nn.parallel.DistributedDataParallel(module, device_ids=device_ids)
    groups = param_groups or [(list(module.parameters()), 1.0)]
    optimiser = torch.optim.AdamW(
        [{"params": list(params), "scale": scale} for params, scale in groups],
        lr=config.lr,
        weight_decay=config.weight_decay,
    )
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()
    # Equal shards: a rank with one batch more than the others would hang DDP.
    shard = (num_samples - num_samples % size) // size
    epochs = math.ceil(plan.steps / plan.steps_per_epoch)
    validate_every = max(1, math.ceil(epochs / MAX_VALIDATIONS))
    result = TrainResult(best_val_accuracy=-1.0, best_epoch=-1, plan=plan)
    best_state = cpu_state_dict(module)
    since_best = 0
    show = config.progress and rank == 0
    bar = tqdm(total=plan.steps, desc=config.desc, disable=not show, leave=False)
    local_samples = 0
    for epoch in range(epochs):
        module.train()
        order = torch.randperm(num_samples, generator=torch.Generator().manual_seed(config.seed + epoch))
        order = order[: size * shard][rank::size]
        order_on_device = order.to(device)  # once per epoch
        losses = []  # kept on the device, read once per epoch: no host sync per step
        for start in range(0, shard, plan.batch_per_process):
            if result.steps == plan.steps:
                break
            stop = start + plan.batch_per_process
            lr = cosine_lr(result.steps, plan.steps, plan.warmup_steps, config.lr)
            for group in optimiser.param_groups:
                group["lr"] = lr * group["scale"]
            batch = Batch(order_on_device[start:stop], order[start:stop], result.steps, generator, rng)
            with autocast:
                loss = loss_fn(train_module, batch)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            losses.append(loss.detach())
            local_samples += len(batch.cpu_index)
            result.steps += 1
            bar.update(1)
        epoch_losses = torch.stack(losses).double().cpu().tolist() if losses else []
        result.train_loss_per_step.extend(epoch_losses)
        result.train_loss_per_epoch.append(sum(epoch_losses) / len(epoch_losses) if epoch_losses else float("nan"))
        if evaluate is None or ((epoch + 1) % validate_every and epoch + 1 < epochs):
            continue
        module.eval()
        score = float(evaluate(module))
        result.val_accuracy_per_epoch.append(score)
        result.validated_epochs.append(epoch)
        bar.set_postfix(epoch=epoch + 1, loss=f"{result.train_loss_per_epoch[-1]:.3f}", val=f"{score:.4f}")
        if show:
            bar.write(f"{config.desc}: epoch {epoch + 1}/{epochs} loss {result.train_loss_per_epoch[-1]:.4f} val_acc {score:.4f}")
        if score > result.best_val_accuracy:
            result.best_val_accuracy, result.best_epoch = score, epoch
            best_state = cpu_state_dict(module)
            since_best = 0
        else:
            since_best += 1
        # Every rank validates the same weights on the same images, so all stop together.
        if config.patience is not None and since_best >= config.patience and epoch + 1 < epochs:
            result.stopped_early_at_epoch = epoch
            if show:
                bar.write(f"{config.desc}: no better validation for {since_best} checks: stopped after epoch "
                          f"{epoch + 1}, keeping epoch {result.best_epoch + 1}")
            break
    bar.close()
    result.samples_seen = local_samples * size  # equal shards and batches on every rank
    if evaluate is not None:
        module.load_state_dict(best_state)
    module.eval()
    return result


# The classifier stage ----------------------------------------------------------------------------


def train_classifier(
    model,
    splits: DatasetSplits,
    config: TrainConfig,
    loss_fn: Callable | None = None,
) -> TrainResult:
    """Train `model` on `splits.train` over augmented images, keep the best validation weights.

    `loss_fn(model, x, y) -> loss` replaces plain cross-entropy (e.g. for distillation); it gets
    `x` and `y` on the training device (`config.device`), so anything else it uses must be there
    too, and it cannot be combined with mixing (mixup / cutmix). The data moves to that device
    once; the model is left on the CPU holding the best weights, in evaluation mode.
    """
    import torch.nn.functional as F

    if loss_fn is not None and config.mixes:
        raise InvalidInput(f"{config.desc}: a custom loss cannot be combined with mixup or cutmix")
    device = training_device(config.device)
    x_train, y_train = (t.to(device) for t in splits.train.tensors())
    x_val = to_float(splits.val.x).to(device)

    def batch_loss(module, batch: Batch):
        images = augment_batch(x_train[batch.index], config, batch)
        y = y_train[batch.index]
        if loss_fn is not None:
            return loss_fn(module, images.x, y)
        logits = module(images.x)
        return images.mix(lambda labels: F.cross_entropy(logits, labels, label_smoothing=config.label_smoothing), y)

    return train_loop(model, len(x_train), batch_loss, config, evaluate=lambda m: accuracy(predict(m, x_val), splits.val.y))


def evaluate(model, split: ImageDataset) -> float:
    """Top-1 accuracy of `model` on one split."""
    return accuracy(predict(model, to_float(split.x)), split.y)

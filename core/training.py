"""The one training loop of coinfer: the teacher, the split backbones, every DEKD stage and the
split-point bottlenecks all train through :func:`train_loop`, configured by one :class:`TrainConfig`.

The loop owns what every stage shares: the budget (epochs or optimiser steps), AdamW with a
linear warm-up then cosine decay (per parameter group, scaled), the order of the samples, the
device, DistributedDataParallel under torchrun (gloo on CPU, nccl on GPU; each rank takes its
shard of every epoch), a progress bar, a validation score after every epoch and the best
epoch's weights kept. A stage supplies what is its own: a loss over a batch of sample indices
(:class:`Batch`), how it scores the module, and a small config that holds a TrainConfig beside
its own fields (``DistillConfig``, ``EnsembleConfig``, ``BaselineConfig``, ``BottleneckTrainConfig``).

:func:`train_classifier` is the plain supervised stage on top of it (cross-entropy with label
smoothing and random shifts), used for teachers and backbones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Callable, Sequence

from coinfer.core.data import DatasetSplits, ImageDataset, to_float
from coinfer.core.errors import InvalidInput
from coinfer.core.measure import accuracy, predict
from coinfer.core.parallel import training_device, world

if TYPE_CHECKING:
    import torch
    from torch import nn


@dataclass
class TrainConfig:
    """How one stage trains: the budget, the optimiser's schedule, the device."""

    epochs: int = 10
    """Passes over the stage's training samples (the budget unless ``steps`` is given)."""
    steps: int | None = None
    """Optimiser steps; when given, the budget (``epochs`` is then ignored)."""
    batch_size: int = 128
    """Samples per optimiser step (per process under torchrun)."""
    lr: float = 1e-3
    """Peak learning rate after warm-up (each parameter group may scale it)."""
    weight_decay: float = 0.05
    """AdamW weight decay."""
    warmup_epochs: float = 1.0
    """Linear warm-up length, in epochs (at least one step)."""
    warmup_steps: int | None = None
    """Linear warm-up length in optimiser steps; when given, replaces ``warmup_epochs``."""
    label_smoothing: float = 0.1
    """Cross-entropy label smoothing of every stage's label term."""
    augment: bool = True
    """Random shifts by up to 1/8 of the image size (cheap and label-preserving); classifier stages."""
    seed: int = 0
    """Seeds shuffling, augmentation, initialisation order and any randomness the loss draws."""
    progress: bool = True
    """Show a progress bar and one line per epoch."""
    desc: str = "train"
    """Label of the progress bar."""
    device: str = "cpu"
    """Where training runs: 'cpu', 'cuda' (or 'cuda:N') or 'auto'; the module ends on the CPU either way."""

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            _check_count(self.desc, name, getattr(self, name))
        for name in ("steps", "warmup_steps"):
            if getattr(self, name) is not None:
                _check_count(self.desc, name, getattr(self, name))
        if isinstance(self.lr, bool) or not isinstance(self.lr, (int, float)) or not self.lr > 0:
            raise InvalidInput(f"{self.desc}: lr must be positive, got {self.lr!r}")


def with_loop(stage, **changes):
    """A copy of a stage config (any dataclass holding a ``loop: TrainConfig``) with loop fields changed."""
    return replace(stage, loop=replace(stage.loop, **changes))


def _check_count(desc: str, name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInput(f"{desc}: {name} must be an integer >= 1, got {value!r}")


@dataclass
class TrainResult:
    """What a training run produced."""

    best_val_accuracy: float
    best_epoch: int
    val_accuracy_per_epoch: list[float] = field(default_factory=list)
    train_loss_per_epoch: list[float] = field(default_factory=list)
    train_loss_per_step: list[float] = field(default_factory=list)


@dataclass
class Batch:
    """One optimiser step's share of the samples, as a stage's loss sees it."""

    index: "torch.Tensor"
    """This process's sample indices (int64, on the CPU)."""
    step: int
    """Optimiser step, counted from 0."""
    generator: "torch.Generator"
    """This process's generator, for randomness the loss draws (augmentation, device dropout)."""


LossFn = Callable[["nn.Module", Batch], "torch.Tensor"]
"""loss_fn(train_module, batch) -> scalar loss; the module may be DDP-wrapped."""


def cpu_state_dict(model) -> dict:
    """A detached CPU copy of ``model``'s state dict (safe to keep while the model trains on a GPU)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def cosine_lr(step: int, total_steps: int, warmup_steps: int, peak_lr: float) -> float:
    """Linear warm-up to `peak_lr`, then cosine decay to zero."""
    if step < warmup_steps:
        return peak_lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return peak_lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


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
    reads must be on the training device. ``evaluate(module)`` scores the plain module (higher is
    better) after every epoch, and the module is left holding the best epoch's weights; without
    ``evaluate`` it keeps its final weights. ``param_groups`` pairs parameters with a
    learning-rate scale (default: every parameter at scale 1). The module trains on
    ``config.device`` and is left on the CPU, in evaluation mode, also when training fails midway.
    """
    if num_samples < 1:
        raise InvalidInput(f"{config.desc}: no training samples")
    device = training_device(config.device)
    module.to(device)
    try:
        return _train_on_device(module, num_samples, loss_fn, config, evaluate, param_groups, device)
    finally:
        # Callers save, measure and deploy the module on the CPU.
        module.cpu()


def _train_on_device(module, num_samples, loss_fn, config, evaluate, param_groups, device) -> TrainResult:
    """The body of :func:`train_loop`, with ``module`` already on ``device``."""
    import torch
    from torch import nn
    from tqdm.auto import tqdm

    rank, size = world(device)
    torch.manual_seed(config.seed)
    # Shuffling and the loss's randomness draw from CPU generators, so a seed gives the same batches on every device.
    generator = torch.Generator().manual_seed(config.seed + 1000 * rank)
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
    # Equal shard sizes: a rank with one batch more than the others would hang DDP.
    shard = (num_samples - num_samples % size) // size
    if shard < 1:
        raise InvalidInput(f"{config.desc}: {num_samples} samples cannot be shared by {size} processes")
    steps_per_epoch = math.ceil(shard / config.batch_size)
    total_steps = config.steps or steps_per_epoch * config.epochs
    warmup_steps = config.warmup_steps or max(1, int(config.warmup_epochs * steps_per_epoch))
    result = TrainResult(best_val_accuracy=-1.0, best_epoch=-1)
    best_state = cpu_state_dict(module)
    show = config.progress and rank == 0
    bar = tqdm(total=total_steps, desc=config.desc, disable=not show, leave=False)
    epochs = math.ceil(total_steps / steps_per_epoch)
    step = 0
    for epoch in range(epochs):
        module.train()
        order = torch.randperm(num_samples, generator=torch.Generator().manual_seed(config.seed + epoch))
        order = order[: size * shard][rank::size]
        losses = []  # kept on the device, read once per epoch: no host sync per step
        for start in range(0, len(order), config.batch_size):
            if step == total_steps:
                break
            lr = cosine_lr(step, total_steps, warmup_steps, config.lr)
            for group in optimiser.param_groups:
                group["lr"] = lr * group["scale"]
            loss = loss_fn(train_module, Batch(order[start : start + config.batch_size], step, generator))
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            losses.append(loss.detach())
            step += 1
            bar.update(1)
        epoch_losses = torch.stack(losses).double().cpu().tolist() if losses else []
        result.train_loss_per_step.extend(epoch_losses)
        result.train_loss_per_epoch.append(sum(epoch_losses) / len(epoch_losses) if epoch_losses else float("nan"))
        if evaluate is None:
            continue
        module.eval()
        score = float(evaluate(module))
        result.val_accuracy_per_epoch.append(score)
        bar.set_postfix(epoch=epoch + 1, loss=f"{result.train_loss_per_epoch[-1]:.3f}", val=f"{score:.4f}")
        if show:
            bar.write(f"{config.desc}: epoch {epoch + 1}/{epochs} loss {result.train_loss_per_epoch[-1]:.4f} val_acc {score:.4f}")
        if score > result.best_val_accuracy:
            result.best_val_accuracy, result.best_epoch = score, epoch
            best_state = cpu_state_dict(module)
    bar.close()
    if evaluate is not None:
        module.load_state_dict(best_state)
    module.eval()
    return result


# The classifier stage ----------------------------------------------------------------------------


def random_shift(x, max_shift: int, generator):
    """Shift every image by a random offset in [-max_shift, max_shift], padding with zeros."""
    import torch
    import torch.nn.functional as F

    if max_shift <= 0:
        return x
    B, _, H, W = x.shape
    padded = F.pad(x, (max_shift,) * 4)
    dx = torch.randint(0, 2 * max_shift + 1, (B,), generator=generator)
    dy = torch.randint(0, 2 * max_shift + 1, (B,), generator=generator)
    rows = (dy[:, None] + torch.arange(H)[None, :])[:, None, :, None].expand(B, x.shape[1], H, W + 2 * max_shift)
    out = padded.gather(2, rows)
    cols = (dx[:, None] + torch.arange(W)[None, :])[:, None, None, :].expand(B, x.shape[1], H, W)
    return out.gather(3, cols)


def train_classifier(
    model,
    splits: DatasetSplits,
    config: TrainConfig,
    loss_fn: Callable | None = None,
) -> TrainResult:
    """Train `model` on `splits.train`, keep the weights of the best validation epoch.

    `loss_fn(model, x, y) -> loss` replaces plain cross-entropy (e.g. for distillation); it gets
    `x` and `y` on the training device (`config.device`), so anything else it uses must be there too.
    The model trains on that device and is left on the CPU holding the best weights, in evaluation mode.
    """
    import torch.nn.functional as F

    x_train, y_train = splits.train.tensors()
    x_val = to_float(splits.val.x)
    max_shift = max(1, x_train.shape[-1] // 8) if config.augment else 0
    device = training_device(config.device)
    if loss_fn is None:
        def loss_fn(m, x, y):
            return F.cross_entropy(m(x), y, label_smoothing=config.label_smoothing)

    def batch_loss(module, batch: Batch):
        # Shift on the CPU (where the generator lives), then move the batch.
        xb = random_shift(x_train[batch.index], max_shift, batch.generator).to(device)
        return loss_fn(module, xb, y_train[batch.index].to(device))

    return train_loop(model, len(x_train), batch_loss, config, evaluate=lambda m: accuracy(predict(m, x_val), splits.val.y))


def evaluate(model, split: ImageDataset) -> float:
    """Top-1 accuracy of `model` on one split."""
    return accuracy(predict(model, to_float(split.x)), split.y)

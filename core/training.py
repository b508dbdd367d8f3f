"""Supervised training of a classifier, shared by the teacher, backbone and baseline trainers.

One loop: AdamW with a linear warm-up then cosine decay, label smoothing, a progress bar, the
validation accuracy after every epoch, and the best epoch's weights kept. Runs under
DistributedDataParallel when launched by torchrun (gloo on CPU, nccl on GPU): each rank sees its
shard of every epoch and only rank 0 reports.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from coinfer.core.data import DatasetSplits, ImageDataset, to_float
from coinfer.core.measure import accuracy, predict


@dataclass
class TrainConfig:
    """How to train a classifier."""

    epochs: int = 10
    """Passes over the training split."""
    batch_size: int = 128
    """Images per optimiser step (per process under torchrun)."""
    lr: float = 1e-3
    """Peak learning rate after warm-up."""
    weight_decay: float = 0.05
    """AdamW weight decay."""
    warmup_epochs: float = 1.0
    """Linear warm-up length, in epochs."""
    label_smoothing: float = 0.1
    """Cross-entropy label smoothing."""
    augment: bool = True
    """Random shifts by up to 1/8 of the image size (cheap and label-preserving)."""
    seed: int = 0
    """Seeds shuffling, augmentation and initialisation order."""
    progress: bool = True
    """Show a progress bar."""
    desc: str = "train"
    """Label of the progress bar."""
    device: str = "cpu"
    """Where training runs: 'cpu', 'cuda' (or 'cuda:N') or 'auto'; the model ends on the CPU either way."""


@dataclass
class TrainResult:
    """What a training run produced."""

    best_val_accuracy: float
    best_epoch: int
    val_accuracy_per_epoch: list[float] = field(default_factory=list)
    train_loss_per_epoch: list[float] = field(default_factory=list)


def distributed_context(backend: str | None = None):
    """(rank, world_size) under torchrun, initialising the process group once; (0, 1) otherwise.

    ``backend`` picks the process group's backend when this call creates it ('gloo' for CPU
    tensors, 'nccl' for CUDA ones); None keeps the old choice (nccl when a GPU is present).
    """
    import torch
    import torch.distributed as dist

    if "WORLD_SIZE" not in os.environ or int(os.environ["WORLD_SIZE"]) <= 1:
        return 0, 1
    if not dist.is_initialized():
        dist.init_process_group(backend or ("nccl" if torch.cuda.is_available() else "gloo"))
    return dist.get_rank(), dist.get_world_size()


def training_device(name: str = "cpu"):
    """The ``torch.device`` training runs on for ``name`` (see :func:`coinfer.core.device.resolve_device`).

    Under torchrun a bare 'cuda' (or 'auto' on a GPU machine) becomes ``cuda:LOCAL_RANK`` so
    each process drives its own GPU; an explicit 'cuda:N' is kept as given.
    """
    from coinfer.core.device import resolve_device

    device = resolve_device(name)
    if device.type == "cuda" and device.index is None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        device = resolve_device(f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}")
    return device


def cpu_state_dict(model) -> dict:
    """A detached CPU copy of ``model``'s state dict (safe to keep while the model trains on a GPU)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


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


def cosine_lr(step: int, total_steps: int, warmup_steps: int, peak_lr: float) -> float:
    """Linear warm-up to `peak_lr`, then cosine decay to zero."""
    if step < warmup_steps:
        return peak_lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return peak_lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


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
    device = training_device(config.device)
    model.to(device)
    try:
        return _train_on_device(model, splits, config, loss_fn, device)
    finally:
        # Callers save, measure and deploy the model on the CPU, also when training failed midway.
        model.cpu()


def _train_on_device(model, splits: DatasetSplits, config: TrainConfig, loss_fn: Callable | None, device) -> TrainResult:
    """The body of :func:`train_classifier`, with ``model`` already on ``device``."""
    import torch
    import torch.nn.functional as F
    from tqdm.auto import tqdm

    rank, world = distributed_context("nccl" if device.type == "cuda" else "gloo")
    torch.manual_seed(config.seed)
    # Shuffling and augmentation draw from CPU generators, so a seed gives the same batches on every device.
    generator = torch.Generator().manual_seed(config.seed + 1000 * rank)
    x_train, y_train = splits.train.tensors()
    x_val = to_float(splits.val.x)
    train_model = model
    if world > 1:
        device_ids = [device.index] if device.type == "cuda" else None
        train_model = torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
    if loss_fn is None:
        def loss_fn(m, x, y):
            return F.cross_entropy(m(x), y, label_smoothing=config.label_smoothing)

    optimiser = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = max(1, math.ceil(len(x_train) / world / config.batch_size))
    total_steps = steps_per_epoch * config.epochs
    warmup_steps = max(1, int(config.warmup_epochs * steps_per_epoch))
    max_shift = max(1, x_train.shape[-1] // 8) if config.augment else 0
    result = TrainResult(best_val_accuracy=-1.0, best_epoch=-1)
    best_state = cpu_state_dict(model)
    step = 0
    bar = tqdm(total=total_steps, desc=config.desc, disable=not config.progress or rank != 0, leave=False)
    for epoch in range(config.epochs):
        model.train()
        order = torch.randperm(len(x_train), generator=torch.Generator().manual_seed(config.seed + epoch))
        order = order[rank::world]
        losses = []
        for start in range(0, len(order), config.batch_size):
            idx = order[start : start + config.batch_size]
            # Shift on the CPU (where the generator lives), then move the batch.
            xb = random_shift(x_train[idx], max_shift, generator).to(device)
            yb = y_train[idx].to(device)
            for group in optimiser.param_groups:
                group["lr"] = cosine_lr(step, total_steps, warmup_steps, config.lr)
            loss = loss_fn(train_model, xb, yb)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            losses.append(float(loss.detach()))
            step += 1
            bar.update(1)
        val_acc = accuracy(predict(model, x_val), splits.val.y)
        result.val_accuracy_per_epoch.append(val_acc)
        result.train_loss_per_epoch.append(float(np.mean(losses)) if losses else float("nan"))
        bar.set_postfix(epoch=epoch + 1, loss=f"{result.train_loss_per_epoch[-1]:.3f}", val_acc=f"{val_acc:.4f}")
        if rank == 0 and config.progress:
            bar.write(f"{config.desc}: epoch {epoch + 1}/{config.epochs} loss {result.train_loss_per_epoch[-1]:.4f} val_acc {val_acc:.4f}")
        if val_acc > result.best_val_accuracy:
            result.best_val_accuracy, result.best_epoch = val_acc, epoch
            best_state = cpu_state_dict(model)
    bar.close()
    model.load_state_dict(best_state)  # CPU copies; train_classifier moves the model back to the CPU
    model.eval()
    return result


def evaluate(model, split: ImageDataset) -> float:
    """Top-1 accuracy of `model` on one split."""
    return accuracy(predict(model, to_float(split.x)), split.y)

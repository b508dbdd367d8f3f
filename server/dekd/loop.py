"""The training loop of the distillation stages: batches by image index, so cached teacher
targets can be looked up, otherwise the shared loop of ``coinfer.core.training``.

AdamW with warm-up then cosine decay (per parameter group, scaled), a progress bar, a
validation score after every epoch and the best epoch's weights kept. Under torchrun the module
is wrapped in DistributedDataParallel (gloo on CPU, nccl on GPU) and every rank takes its shard
of each epoch's shuffled indices; the validation score is computed identically on every rank.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from coinfer.core.errors import InvalidInput
from coinfer.core.training import TrainResult, cosine_lr
from coinfer.server.dekd.parallel import world

LossFn = Callable[[nn.Module, torch.Tensor, torch.Generator], torch.Tensor]
"""loss_fn(train_module, batch_indices, generator) -> scalar loss; the module may be DDP-wrapped."""


@dataclass
class LoopConfig:
    """Schedule of one distillation stage."""

    epochs: int = 3
    """Passes over the stage's training images."""
    batch_size: int = 128
    """Images per optimiser step (per process under torchrun)."""
    lr: float = 1e-3
    """Peak learning rate after warm-up (each parameter group may scale it)."""
    weight_decay: float = 0.05
    """AdamW weight decay."""
    warmup_epochs: float = 0.3
    """Linear warm-up length, in epochs."""
    seed: int = 0
    """Seeds the shuffling and any randomness the loss draws from the generator."""
    progress: bool = True
    """Show a progress bar and one line per epoch."""
    desc: str = "distill"
    """Label of the progress bar."""

    def __post_init__(self) -> None:
        if isinstance(self.epochs, bool) or not isinstance(self.epochs, int) or self.epochs < 1:
            raise InvalidInput(f"{self.desc}: epochs must be an integer >= 1, got {self.epochs!r}")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise InvalidInput(f"{self.desc}: batch_size must be an integer >= 1, got {self.batch_size!r}")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0):
            raise InvalidInput(f"{self.desc}: lr must be positive, got {self.lr!r}")


def train_indexed(
    module: nn.Module,
    num_samples: int,
    loss_fn: LossFn,
    evaluate: Callable[[nn.Module], float],
    config: LoopConfig,
    param_groups: Sequence[tuple[Sequence[nn.Parameter], float]] | None = None,
) -> TrainResult:
    """Train ``module`` for ``config.epochs`` over sample indices 0..num_samples-1.

    ``evaluate(module)`` scores the plain module (higher is better) after every epoch; the
    module is left holding the best epoch's weights, in evaluation mode. ``param_groups`` pairs
    parameters with a learning-rate scale (default: every parameter at scale 1).
    """
    if num_samples < 1:
        raise InvalidInput(f"{config.desc}: no training images")
    rank, size = world()
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed + 1000 * rank)
    train_module: nn.Module = module
    if size > 1:
        train_module = nn.parallel.DistributedDataParallel(module)
    groups = param_groups or [(list(module.parameters()), 1.0)]
    optimiser = torch.optim.AdamW(
        [{"params": list(params), "scale": scale} for params, scale in groups],
        lr=config.lr,
        weight_decay=config.weight_decay,
    )
    steps_per_epoch = max(1, math.ceil(num_samples / size / config.batch_size))
    total_steps = steps_per_epoch * config.epochs
    warmup_steps = max(1, int(config.warmup_epochs * steps_per_epoch))
    result = TrainResult(best_val_accuracy=-1.0, best_epoch=-1)
    best_state = copy.deepcopy(module.state_dict())
    show = config.progress and rank == 0
    bar = tqdm(total=total_steps, desc=config.desc, disable=not show, leave=False)
    step = 0
    for epoch in range(config.epochs):
        module.train()
        order = torch.randperm(num_samples, generator=torch.Generator().manual_seed(config.seed + epoch))
        # Equal shard sizes: a rank with one batch more than the others would hang DDP.
        order = order[: len(order) - len(order) % size][rank::size]
        losses = []
        for start in range(0, len(order), config.batch_size):
            idx = order[start : start + config.batch_size]
            lr = cosine_lr(step, total_steps, warmup_steps, config.lr)
            for group in optimiser.param_groups:
                group["lr"] = lr * group["scale"]
            loss = loss_fn(train_module, idx, generator)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            losses.append(float(loss.detach()))
            step += 1
            bar.update(1)
        module.eval()
        score = float(evaluate(module))
        result.val_accuracy_per_epoch.append(score)
        result.train_loss_per_epoch.append(float(np.mean(losses)) if losses else float("nan"))
        bar.set_postfix(epoch=epoch + 1, loss=f"{result.train_loss_per_epoch[-1]:.3f}", val=f"{score:.4f}")
        if show:
            bar.write(
                f"{config.desc}: epoch {epoch + 1}/{config.epochs} loss {result.train_loss_per_epoch[-1]:.4f} "
                f"val_acc {score:.4f}"
            )
        if score > result.best_val_accuracy:
            result.best_val_accuracy, result.best_epoch = score, epoch
            best_state = copy.deepcopy(module.state_dict())
    bar.close()
    module.load_state_dict(best_state)
    module.eval()
    return result

"""Processes under torchrun: the process group, each process's GPU, and the few collectives the
training stages need (every function is a no-op in one process).

Decisions that must be identical on every rank (class partition, pruning plans, device budgets)
are made on rank 0 and broadcast as tensors; work that splits cleanly (teacher targets over the
training images) is sharded and gathered. Nothing is pickled between ranks.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch loads on first use: the CLI's parser imports the budgets beside this
    import torch


def world(device: torch.device | str | None = None) -> tuple[int, int]:
    """(rank, world size); (0, 1) outside torchrun.

    The first call under torchrun creates the process group: gloo, which carries CPU tensors (the
    DEKD decisions, gathered targets), and nccl beside it for CUDA tensors when ``device`` is a GPU.
    """
    import torch

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        on_gpu = device is not None and torch.device(device).type == "cuda"
        dist.init_process_group("cpu:gloo,cuda:nccl" if on_gpu else "gloo")
    return dist.get_rank(), dist.get_world_size()


def is_main() -> bool:
    """Whether this process reports and writes files (rank 0)."""
    return world()[0] == 0


def training_device(name: str = "cpu") -> torch.device:
    """The ``torch.device`` training runs on for ``name`` (see :func:`coinfer.core.device.resolve_device`).

    Under torchrun a bare 'cuda' (or 'auto' on a GPU machine) becomes ``cuda:LOCAL_RANK`` so
    each process drives its own GPU; an explicit 'cuda:N' is kept as given.
    """
    from coinfer.core.device import resolve_device

    device = resolve_device(name)
    if device.type == "cuda" and device.index is None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        device = resolve_device(f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}")
    return device


def broadcast_(tensor: torch.Tensor) -> torch.Tensor:
    """Overwrite ``tensor`` with rank 0's values (same shape and dtype on every rank)."""
    if world()[1] > 1:
        import torch.distributed as dist

        dist.broadcast(tensor, src=0)
    return tensor


def gather_rows(local: torch.Tensor, total: int) -> torch.Tensor:
    """Concatenate every rank's contiguous shard (see :func:`shard_range`) into ``total`` rows."""
    import torch

    size = world()[1]
    if size == 1:
        return local
    import torch.distributed as dist

    per = -(-total // size)
    padded = local.new_zeros((per, *local.shape[1:]))
    padded[: len(local)] = local
    pieces = [torch.empty_like(padded) for _ in range(size)]
    dist.all_gather(pieces, padded)
    out = []
    for r, piece in enumerate(pieces):
        lo, hi = shard_range(total, r, size)
        out.append(piece[: hi - lo])
    return torch.cat(out)


def shard_range(total: int, rank: int, size: int) -> tuple[int, int]:
    """Rows [lo, hi) of ``total`` that rank ``rank`` of ``size`` handles (contiguous, balanced)."""
    per = -(-total // size)
    return min(total, rank * per), min(total, (rank + 1) * per)

"""The few collective operations the DEKD pipeline needs under torchrun (no-ops in one process).

Decisions that must be identical on every rank (class partition, pruning plans, device budgets)
are made on rank 0 and broadcast as tensors; work that splits cleanly (teacher targets over the
training images) is sharded and gathered. Nothing is pickled between ranks.
"""

from __future__ import annotations

import os

import torch

from coinfer.core.training import distributed_context


def world() -> tuple[int, int]:
    """(rank, world size); (0, 1) outside torchrun.

    The DEKD stages keep their tensors on the CPU, so the process group is gloo's even where a
    GPU would make the shared helper pick nccl.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("gloo")
    return distributed_context()


def is_main() -> bool:
    """Whether this process reports and writes files (rank 0)."""
    return world()[0] == 0


def broadcast_(tensor: torch.Tensor) -> torch.Tensor:
    """Overwrite ``tensor`` with rank 0's values (same shape and dtype on every rank)."""
    if world()[1] > 1:
        import torch.distributed as dist

        dist.broadcast(tensor, src=0)
    return tensor


def gather_rows(local: torch.Tensor, total: int) -> torch.Tensor:
    """Concatenate every rank's contiguous shard (see :func:`shard_range`) into ``total`` rows."""
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

"""Measurements every report shares: accuracy on a split, and batch-1 latency on this machine.

Latency follows one protocol everywhere so figures compare: batch 1, a fixed number of threads
(one by default), warm-up runs first, then the median of repeated timed runs.
"""

from __future__ import annotations

import statistics
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np


@dataclass(frozen=True)
class LatencyStats:
    """Batch-1 latency of one callable, in milliseconds."""

    median_ms: float
    p90_ms: float
    min_ms: float
    runs: int
    threads: int


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Run a block with `threads` intra-op threads, restoring the previous setting after."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def measure_latency(
    fn: Callable[[], object],
    warmup: int = 5,
    repeats: int = 30,
    threads: int = 1,
    min_time_s: float = 0.0,
) -> LatencyStats:
    """Time `fn()` (already bound to a batch-1 input): warm-up, then the median of `repeats` runs.

    `min_time_s` keeps timing past `repeats` until that much time has been measured, for very
    fast callables whose single runs are near the clock's resolution.
    """
    import torch

    with torch_threads(threads), torch.inference_mode():
        for _ in range(warmup):
            fn()
        samples: list[float] = []
        started = time.perf_counter()
        while len(samples) < repeats or time.perf_counter() - started < min_time_s:
            t0 = time.perf_counter()
            fn()
            samples.append((time.perf_counter() - t0) * 1e3)
    ordered = sorted(samples)
    return LatencyStats(
        median_ms=statistics.median(ordered),
        p90_ms=ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))],
        min_ms=ordered[0],
        runs=len(ordered),
        threads=threads,
    )


def model_latency_ms(model, input_shape: tuple[int, ...], **kwargs) -> LatencyStats:
    """Batch-1 latency of `model` on a random input of `input_shape` (without the batch axis)."""
    import torch

    x = torch.rand(1, *input_shape)
    model.eval()
    return measure_latency(lambda: model(x), **kwargs)


def predict(model, x_float, batch_size: int = 256) -> np.ndarray:
    """Logits of `model` over a float tensor of images, in evaluation mode, as a numpy array.

    Batches go to the device holding the model (a GPU during training) and the logits come back to the CPU.
    """
    import torch

    from coinfer.core.device import model_device

    device = model_device(model)
    model.eval()
    outs = []
    with torch.inference_mode():
        for start in range(0, len(x_float), batch_size):
            outs.append(model(x_float[start : start + batch_size].to(device)).float().cpu())
    return torch.cat(outs).numpy()


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy in [0, 1]."""
    if len(labels) == 0:
        return 0.0
    return float((np.asarray(logits).argmax(axis=1) == np.asarray(labels)).mean())

"""Batch-1, one-thread latency of several models, measured interleaved.

Every figure follows ``coinfer.core.measure``: warm-up, then the median of repeated runs, one
thread, batch 1. Models that are compared with each other (teacher against sub-models,
sub-models against each other) are timed in alternating rounds and each gets the median of its
round medians, so a burst of load from another process lands on all of them alike instead of
on whichever happened to be timed at that moment.
"""

from __future__ import annotations

import statistics
from typing import Callable, Mapping

import torch

from coinfer.core.measure import measure_latency
from coinfer.core.models.vit import VisionTransformer, ViTConfig


def measure_interleaved(
    fns: Mapping[str, Callable[[], object]], rounds: int = 5, repeats: int = 20, warmup: int = 5
) -> dict[str, float]:
    """Median latency in ms of each zero-argument callable, over ``rounds`` alternating rounds."""
    per: dict[str, list[float]] = {name: [] for name in fns}
    for r in range(rounds):
        for name, fn in fns.items():
            stats = measure_latency(fn, warmup=warmup if r == 0 else 1, repeats=repeats, threads=1)
            per[name].append(stats.median_ms)
    return {name: statistics.median(values) for name, values in per.items()}


def bound(model: torch.nn.Module, *args: torch.Tensor) -> Callable[[], object]:
    """A zero-argument call of ``model`` on fixed inputs, in evaluation mode."""
    model.eval()
    return lambda: model(*args)


def _bound_architecture(config: ViTConfig) -> Callable[[], object]:
    torch.manual_seed(0)
    model = VisionTransformer(config).eval()
    return bound(model, torch.rand(1, config.in_chans, config.image_size, config.image_size))


def architecture_latency_ms(config: ViTConfig, rounds: int = 3, repeats: int = 15) -> float:
    """Latency of a randomly initialised ViT of ``config``: architecture alone decides it."""
    return measure_interleaved({"m": _bound_architecture(config)}, rounds=rounds, repeats=repeats)["m"]


def latency_ratio(config: ViTConfig, reference: ViTConfig, rounds: int = 11, repeats: int = 25) -> float:
    """Latency of ``config`` over that of ``reference``, timed in alternation so load drift cancels.

    Sizing keeps the largest candidate under a limit, so a candidate timed low by chance wins.
    With 5 x 15 runs on a shared 2-core machine a device sized to 0.525 of the reference measured
    0.59 afterwards (balance 1.28 against a target of 1.2); with these counts the Fashion-MNIST
    bench measured balances of 1.05 and 1.07.
    """
    lat = measure_interleaved(
        {"c": _bound_architecture(config), "r": _bound_architecture(reference)}, rounds=rounds, repeats=repeats
    )
    return lat["c"] / lat["r"]

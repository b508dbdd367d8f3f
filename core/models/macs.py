"""Count multiply-accumulates of one forward pass by watching the layers that do the work.

Convolutions and linear layers are counted from their output shapes; a module with matrix
products of its own (ViT attention: q @ k^T and attn @ v) declares them through a
``extra_macs(inputs, output) -> int`` method, which this counter calls. Normalisation,
activations, pooling and additions are not counted, the usual convention for MACs.

Only shapes are read, so the example input may live on the ``meta`` device: counting a
network at 224x224 then costs no arithmetic at all.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from coinfer.core.errors import InvalidInput


def conv2d_macs(module: nn.Conv2d, output: torch.Tensor) -> int:
    """MACs of one Conv2d call: every output element sums (C_in / groups) x kH x kW products."""
    kh, kw = module.kernel_size
    return output.numel() * (module.in_channels // module.groups) * kh * kw


def linear_macs(module: nn.Linear, output: torch.Tensor) -> int:
    """MACs of one Linear call: every output element sums in_features products."""
    return output.numel() * module.in_features


def count_macs(module: nn.Module, example_input: Any) -> int:
    """Multiply-accumulates of ``module(example_input)``.

    ``example_input`` is passed as the single positional argument (a tensor, usually with the
    batch size you want counted). The module is run once under ``no_grad``; its train/eval mode
    is left as it is.
    """
    return run_counting_macs(module, example_input)[0]


def run_counting_macs(module: nn.Module, example_input: Any) -> tuple[int, Any]:
    """``(macs, output)`` of one ``no_grad`` call of ``module(example_input)``."""
    if not isinstance(module, nn.Module):
        raise InvalidInput(f"count_macs needs an nn.Module, got {type(module).__name__}")
    total = 0

    def hook(mod: nn.Module, inputs: tuple, output: Any) -> None:
        nonlocal total
        if isinstance(mod, nn.Conv2d):
            total += conv2d_macs(mod, output)
        elif isinstance(mod, nn.Linear):
            total += linear_macs(mod, output)
        extra = getattr(mod, "extra_macs", None)
        if callable(extra):
            total += int(extra(inputs, output))

    handles = [m.register_forward_hook(hook) for m in module.modules()]
    try:
        with torch.no_grad():
            output = module(example_input)
    finally:
        for h in handles:
            h.remove()
    return total, output

"""Where training runs: ``--device cpu|cuda|auto``, resolved once and checked.

Training moves the model and each batch to the resolved device; everything that leaves training
(weights written to bundles, features sent through the codec, latencies) is on the CPU, so a
bundle trained on a GPU server deploys to CPU-only devices unchanged.
"""

from __future__ import annotations

from coinfer.core.errors import InvalidInput

DEVICE_CHOICES = ("cpu", "cuda", "auto")


def resolve_device(name: str = "cpu"):
    """The ``torch.device`` for ``name``: 'cpu', 'cuda' (or 'cuda:N'), or 'auto' (cuda when present).

    Asking for cuda on a machine without a usable GPU is an error that says so, not a silent CPU run.
    """
    import torch

    if not isinstance(name, str) or not (name in DEVICE_CHOICES or name.startswith("cuda:")):
        raise InvalidInput(f"device must be one of {', '.join(DEVICE_CHOICES)} (or cuda:N), got {name!r}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InvalidInput(f"device {name!r} asked for, but torch sees no CUDA GPU on this machine (use --device cpu or auto)")
        device = torch.device(name)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise InvalidInput(f"device {name!r} asked for, but this machine has {torch.cuda.device_count()} CUDA GPU(s)")
        return device
    return torch.device("cpu")


def model_device(model):
    """The device holding ``model``'s first parameter (CPU for a model without parameters)."""
    import torch

    for p in model.parameters():
        return p.device
    return torch.device("cpu")

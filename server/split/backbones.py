"""The backbones `coinfer split` cuts, sized for a dataset, and how they get their weights.

The three MAHPPO CNNs come from the shared model zoo at any ``width_mult``; the ViT gets a
patch size that suits small images (2 px under 16 px, else 4 px) and a width that follows
``width_mult`` (128 tokens wide at 1.0). Weights are trained here, or read from a safetensors
file (``--weights``), never unpickled.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from coinfer.core.data import DatasetSplits
from coinfer.core.errors import InvalidInput, NotFound

BACKBONES: tuple[str, ...] = ("vgg11", "resnet18", "mobilenetv2", "vit")
"""Backbones `coinfer split` accepts."""


def check_backbone(name: str) -> str:
    """``name`` if it is a split backbone, else NotFound listing the valid ones."""
    if name not in BACKBONES:
        raise NotFound(f"unknown backbone {name!r}; valid backbones: {', '.join(BACKBONES)}")
    return name


def backbone_config(name: str, splits: DatasetSplits, width_mult: float = 0.25) -> dict[str, Any]:
    """The ``build_model`` config of backbone ``name`` for images of ``splits``."""
    check_backbone(name)
    if isinstance(width_mult, bool) or not isinstance(width_mult, (int, float)) or width_mult <= 0:
        raise InvalidInput(f"width_mult must be a positive number, got {width_mult!r}")
    channels, height, width = splits.image_shape
    if height != width:
        raise InvalidInput(f"split backbones take square images, got {height}x{width}")
    if name != "vit":
        return {"arch": name, "num_classes": splits.num_classes, "in_chans": channels, "image_size": height,
                "width_mult": float(width_mult)}
    patch = 2 if height < 16 else 4
    if height % patch:
        raise InvalidInput(f"vit: image size {height} is not divisible by the patch size {patch}")
    heads = max(1, round(4 * width_mult))
    return {"arch": "vit", "num_classes": splits.num_classes, "in_chans": channels, "image_size": height,
            "patch_size": patch, "embed_dim": 32 * heads, "num_heads": heads, "depth": 8, "mlp_ratio": 2.0}


def load_weights(model, path: str | Path) -> None:
    """Load a safetensors state dict into ``model`` strictly; mismatches are named."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise NotFound(f"weights file {path} does not exist")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise InvalidInput(f"{path}: not a readable safetensors file ({exc})") from exc
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise InvalidInput(f"{path}: weights do not fit the {model.arch} backbone configured here ({exc})") from exc
    model.eval()

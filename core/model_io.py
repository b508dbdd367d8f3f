"""The tensor names and the batch limit that every bundle and every served model share.

Both front doors serve split and DeViT models with one UINT8 ``image`` input (N, C, H, W) and one
FP32 ``logits`` output; a bundle's parts record their inputs and outputs under the names below
(`coinfer.core.bundle.TensorSpec`).
"""

from __future__ import annotations

IMAGE_INPUT = "image"
"""Images in: uint8 at a front door, float in [0, 1] at a part that takes them."""
LOGITS_OUTPUT = "logits"
"""Class logits out, FP32 (N, classes)."""
FEATURE = "feature"
"""A split point's intermediate feature: the head's output, the tail's input."""
LATENT = "latent"
"""A split point's bottleneck latent: the encoder's output, the decoder's input."""
CLS_FEATURE = "cls_feature"
"""A DeViT sub-model's CLS feature, FP32 (N, width)."""
DEFAULT_MAX_BATCH = 256
"""Largest batch a served model takes unless its bundle says otherwise."""

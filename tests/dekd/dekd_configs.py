"""Model configurations the DEKD tests share (a module of its own: `from conftest import` would
take whichever conftest was imported first when several test folders run together)."""

from __future__ import annotations

from coinfer.core.models.vit import ViTConfig


def tiny_vit_config(num_classes: int = 10, **overrides) -> ViTConfig:
    """A 2-block ViT on 8x8 digits: 4 patches of 4x4 (5 tokens), width 32, 2 heads."""
    values = dict(image_size=8, in_chans=1, patch_size=4, embed_dim=32, depth=2, num_heads=2, num_classes=num_classes)
    values.update(overrides)
    return ViTConfig(**values)

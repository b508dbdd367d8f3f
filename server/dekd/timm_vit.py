"""ViT checkpoints in timm's format: the named real shapes, and seeded random ones to test with.

``coinfer teacher import`` reads a user's timm ViT state dict (:func:`teacher.import_timm_vit`).
Benchmarks and tests need such files at the real shapes without timm or a download, so this
module writes them: a seeded random initialisation of our ViT (whose parameter names are timm's)
saved as a safetensors state dict, keyed and shaped as timm's ``vision_transformer.py`` keys the
same architecture. What it writes tests shapes and costs, not accuracy.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from coinfer.core.errors import InvalidInput, NotFound


@dataclass(frozen=True)
class TimmViTShape:
    """One of timm's ViT architectures (class-token pooling, qkv bias, MLP ratio 4)."""

    embed_dim: int
    """Token width."""
    depth: int
    """Transformer blocks."""
    num_heads: int
    """Attention heads per block (timm's width / 64)."""
    patch_size: int
    """Side of a patch, pixels."""
    image_size: int
    """Side of the square input image, pixels (the position embedding's grid times the patch)."""

    def config(self, num_classes: int, in_chans: int = 3):
        """Our ViTConfig of this architecture with a head of ``num_classes``."""
        from coinfer.core.models.vit import ViTConfig

        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise InvalidInput(f"a teacher checkpoint needs a head of at least 2 classes, got {num_classes!r}")
        return ViTConfig(
            image_size=self.image_size, in_chans=in_chans, patch_size=self.patch_size, embed_dim=self.embed_dim,
            depth=self.depth, num_heads=self.num_heads, num_classes=num_classes,
        )


TIMM_VITS: dict[str, TimmViTShape] = {
    "vit_small_patch16_224": TimmViTShape(embed_dim=384, depth=12, num_heads=6, patch_size=16, image_size=224),
    "vit_base_patch16_224": TimmViTShape(embed_dim=768, depth=12, num_heads=12, patch_size=16, image_size=224),
}
"""timm's names for the ViT-S/16 and ViT-B/16 at 224 px."""


def timm_vit_config(name: str, num_classes: int, in_chans: int = 3):
    """Our ViTConfig of timm architecture ``name`` with a head of ``num_classes``."""
    if name not in TIMM_VITS:
        raise NotFound(f"unknown timm ViT {name!r}; known: {', '.join(TIMM_VITS)}")
    return TIMM_VITS[name].config(num_classes, in_chans)


def seeded_timm_vit_state(config, seed: int) -> dict:
    """A random initialisation of ``config`` (timm's recipe: truncated normal, std 0.02) as a
    timm-named state dict; the same seed gives the same tensors, and the global generator is untouched."""
    import torch

    from coinfer.core.models.vit import VisionTransformer

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = VisionTransformer(config)
    return {k: v.detach().contiguous() for k, v in model.state_dict().items()}


def write_timm_vit(path: str | Path, config, seed: int = 0, architecture: str = "") -> Path:
    """Write a seeded random ViT of ``config`` as a timm-named safetensors state dict at ``path`` (atomic)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    metadata = {"format": "pt", "seed": str(seed), "architecture": architecture or "vit"}
    save_file(seeded_timm_vit_state(config, seed), str(tmp), metadata=metadata)
    tmp.replace(path)
    return path


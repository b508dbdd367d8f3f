"""Shared fixtures of the DEKD tests: a tiny teacher trained once per session on digits."""

from __future__ import annotations

import pytest
import torch

from coinfer.core.data import load_dataset
from coinfer.core.models.vit import VisionTransformer, ViTConfig


def tiny_vit_config(num_classes: int = 10, **overrides) -> ViTConfig:
    """A 2-block ViT on 8x8 digits: 4 patches of 4x4 (5 tokens), width 32, 2 heads."""
    values = dict(image_size=8, in_chans=1, patch_size=4, embed_dim=32, depth=2, num_heads=2, num_classes=num_classes)
    values.update(overrides)
    return ViTConfig(**values)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models train fastest on one thread, and far faster than on two when other jobs share the cores."""
    from coinfer.core.measure import torch_threads

    with torch_threads(1):
        yield


@pytest.fixture(scope="session")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="session")
def tiny_teacher(digits) -> VisionTransformer:
    """A tiny ViT trained for a few epochs: well above chance, far from good (enough for the plumbing)."""
    from coinfer.core.measure import torch_threads
    from coinfer.core.training import TrainConfig, train_classifier

    torch.manual_seed(0)
    model = VisionTransformer(tiny_vit_config())
    with torch_threads(1):
        train_classifier(model, digits, TrainConfig(epochs=15, lr=3e-3, batch_size=32, progress=False, warmup_epochs=1))
    return model.eval()


@pytest.fixture(scope="session")
def tiny_teacher_dir(tmp_path_factory, tiny_teacher, digits):
    from coinfer.server.dekd.teacher import save_teacher

    path = tmp_path_factory.mktemp("teacher") / "teacher"
    save_teacher(tiny_teacher, path, {"dataset": digits.name, "class_names": list(digits.class_names)})
    return path

"""Shared fixtures of the DEKD tests: a tiny teacher trained once per session on digits."""

from __future__ import annotations

import pytest
import torch

from coinfer.core.data import load_dataset
from coinfer.core.models.vit import VisionTransformer
from dekd_configs import tiny_vit_config
from suite_threads import suite_threads


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models train fastest on one thread, and far faster than on two when other jobs share the cores."""
    from coinfer.core.measure import torch_threads

    with torch_threads(suite_threads(1)):
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
    with torch_threads(suite_threads(1)):
        train_classifier(model, digits, TrainConfig(epochs=15, lr=3e-3, batch_size=32, progress=False, warmup_epochs=1))
    return model.eval()


@pytest.fixture(scope="session")
def tiny_teacher_dir(tmp_path_factory, tiny_teacher, digits):
    from coinfer.server.dekd.teacher import save_teacher

    path = tmp_path_factory.mktemp("teacher") / "teacher"
    save_teacher(tiny_teacher, path, {"dataset": digits.name, "class_names": list(digits.class_names)})
    return path

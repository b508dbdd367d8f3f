"""Helpers shared by the split tests (a module of its own: conftest files are not importable)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from coinfer.core.training import TrainConfig, with_loop
from coinfer.server.split.pipeline import SplitConfig
from coinfer.server.split.train import BottleneckTrainConfig


def tiny_config(**changes) -> SplitConfig:
    """A split run that trains in seconds: thin ResNet18 on digits, a few steps per bottleneck."""
    config = SplitConfig(
        backbone="resnet18",
        dataset="digits",
        bits=4,
        compression=16.0,
        backbone_train=TrainConfig(epochs=3, lr=3e-3, batch_size=64, progress=False),
        bottleneck_train=with_loop(BottleneckTrainConfig(recon_steps=20, distill_steps=6), batch_size=64, progress=False),
        samples=8,
        latency_repeats=3,
    )
    return dataclasses.replace(config, **changes)


def fake_powercap(root: Path, packages: dict[str, int], max_range: int = 1_000_000) -> Path:
    for name, value in packages.items():
        folder = root / name
        folder.mkdir(parents=True)
        (folder / "energy_uj").write_text(f"{value}\n")
        (folder / "max_energy_range_uj").write_text(f"{max_range}\n")
    return root


def set_counter(root: Path, name: str, value: int) -> None:
    (root / name / "energy_uj").write_text(f"{value}\n")

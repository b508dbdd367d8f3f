"""Shared fixtures of the split tests: one tiny split bundle trained on digits in seconds."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from split_helpers import tiny_config


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # These models are tiny: one thread is fastest, and far faster on shared cores.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def split_run(tmp_path_factory) -> tuple[Path, object]:
    """(bundle path, report) of a tiny ResNet18 split on digits with both designs tried."""
    from coinfer.core.measure import torch_threads
    from coinfer.server.split.pipeline import run_split

    out = tmp_path_factory.mktemp("split") / "bundle"
    with torch_threads(1):  # session fixtures start before the module-scoped thread setting
        report = run_split(tiny_config(), out)
    return out, report

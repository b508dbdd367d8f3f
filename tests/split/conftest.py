"""Shared fixtures of the split tests: one tiny split bundle trained on digits in seconds."""

from __future__ import annotations

from pathlib import Path

import pytest

from split_helpers import tiny_config
from suite_threads import suite_threads


@pytest.fixture(autouse=True, scope="module")
def _one_thread(few_threads):
    # These models are tiny: one thread is fastest, and far faster on shared cores.
    yield


@pytest.fixture(scope="session")
def split_run(tmp_path_factory) -> tuple[Path, object]:
    """(bundle path, report) of a tiny ResNet18 split on digits with both designs tried."""
    from coinfer.core.measure import torch_threads
    from coinfer.server.split.pipeline import run_split

    out = tmp_path_factory.mktemp("split") / "bundle"
    with torch_threads(suite_threads(1)):  # session fixtures start before the module-scoped thread setting
        report = run_split(tiny_config(), out)
    return out, report

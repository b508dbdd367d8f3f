"""Fixtures of the testbed tests."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

import pytest

from coinfer.testbed import Testbed, TestbedConfig, make_config


@pytest.fixture
def testbed_factory(tmp_path: Path) -> Iterator[Callable[..., Testbed]]:
    """Make testbeds with a unique prefix and a state folder under tmp_path; all torn down after."""
    from testbed_helpers import unique_prefix

    made: list[TestbedConfig] = []

    def make(num_devices: int, **kwargs: object) -> Testbed:
        config = make_config(num_devices, prefix=unique_prefix(), state_dir=tmp_path / "state", **kwargs)
        made.append(config)
        return Testbed.up(config)

    yield make
    for config in made:
        Testbed.teardown(config.prefix, config.state_dir)

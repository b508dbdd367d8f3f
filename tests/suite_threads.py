"""How many intra-op threads the tests' own torch work uses: COINFER_TEST_THREADS, or each test's default.

Results of a model differ in their last bits between thread counts (another summation order),
so the suite is checked at more than one (see README, Testing). Tests that pin one thread for
speed pass their default through `suite_threads`, so the variable reaches them too. Daemons the
tests start as processes keep the thread count their command line gives them.
"""

from __future__ import annotations

import os

import pytest

THREADS_VARIABLE = "COINFER_TEST_THREADS"


def configured_threads() -> int | None:
    """The thread count COINFER_TEST_THREADS asks for, or None when it is unset or empty."""
    value = os.environ.get(THREADS_VARIABLE, "").strip()
    if not value:
        return None
    try:
        threads = int(value)
    except ValueError:
        threads = 0
    if threads < 1:
        raise pytest.UsageError(f"{THREADS_VARIABLE} must be a positive integer, got {value!r}")
    return threads


def suite_threads(default: int) -> int:
    """Threads for a test's torch work: COINFER_TEST_THREADS when set, else ``default``."""
    configured = configured_threads()
    return default if configured is None else configured

"""Settings of the whole suite: torch's thread count, and the CPU kernels a run used (in its header).

`COINFER_TEST_THREADS=N make test` runs the tests' torch work at N intra-op threads (see
tests/suite_threads.py); `ATEN_CPU_CAPABILITY=default|avx2|avx512` picks ATen's kernels and
`ONEDNN_MAX_CPU_ISA` oneDNN's (convolutions). The header names what the run got, so a report of a
failure says on which kernels and threads it happened.
"""

from __future__ import annotations

import os

import pytest

from suite_threads import THREADS_VARIABLE, configured_threads, suite_threads


def pytest_configure(config) -> None:
    threads = configured_threads()
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


def pytest_report_header(config) -> str:
    import torch

    onednn = os.environ.get("ONEDNN_MAX_CPU_ISA", "")
    threads = configured_threads()
    return (f"torch {torch.__version__}: {torch.get_num_threads()} intra-op threads "
            f"({THREADS_VARIABLE}={threads if threads is not None else 'unset: tests pin their own'}), "
            f"ATen CPU capability {torch.backends.cpu.get_cpu_capability()}"
            + (f", ONEDNN_MAX_CPU_ISA={onednn}" if onednn else ""))


@pytest.fixture(scope="module")
def few_threads():
    """Tiny models at one intra-op thread (or COINFER_TEST_THREADS) for a whole module.

    A second thread only adds synchronisation to such small work, and on a shared machine a
    waiting thread can stall a forward pass by seconds. Use with
    ``pytestmark = pytest.mark.usefixtures("few_threads")``.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(suite_threads(1))
    yield
    torch.set_num_threads(before)

"""What the runtime and reliability benchmarks share as scripts: the command line, the machine note, the JSON.

Each benchmark module keeps its phases and its summary; its ``main`` is one call::

    def main(argv: list[str] | None = None) -> int:
        return bench_main(argv, module=__name__, doc=__doc__, run=run_benchmark,
                          default_out="runs/bench/runtime", quick_help="shorter phases")
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any


def machine_snapshot(note: str) -> dict[str, Any]:
    """The machine a benchmark ran on and how busy it was (CPU sampled for 0.5 s), with ``note`` on what shared it."""
    import psutil

    return {
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "load_average_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "cpu_percent": psutil.cpu_percent(interval=0.5),
        "note": note,
    }


def write_report(report: dict[str, Any], path: Path, default: Callable[[Any], Any] = str) -> Path:
    """Write ``report`` as indented JSON (``default`` converts what JSON cannot hold); returns ``path``."""
    path.write_text(json.dumps(report, indent=2, default=default) + "\n")
    return path


def bench_main(
    argv: list[str] | None,
    *,
    module: str,
    doc: str | None,
    run: Callable[..., Any],
    default_out: str,
    quick_help: str,
) -> int:
    """Parse ``--out`` and ``--quick``, run ``run(out, quick=...)``; a coinfer error prints one line and gives 2.

    ``module`` is the benchmark's dotted name (the usage line and the error prefix); ``doc`` its
    module docstring, whose first line describes the command.
    """
    from coinfer.core.errors import CoinferError

    parser = argparse.ArgumentParser(prog=f"python -m {module}", description=(doc or "").split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path(default_out), help=f"output folder (default {default_out})")
    parser.add_argument("--quick", action="store_true", help=quick_help)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    label = module.rsplit(".", 1)[-1].replace("_", " ")  # "runtime bench"
    try:
        run(args.out, quick=args.quick)
    except CoinferError as exc:
        print(f"{label}: error: {exc}", file=sys.stderr)
        return 2
    return 0

"""The `coinfer` console command.

Each role contributes its subcommands through a ``register(subparsers)`` function in its own
``cli`` module; handlers import heavy dependencies (torch, grpc) only when they run, so
``coinfer --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Sequence

from coinfer import __version__
from coinfer.core.errors import CoinferError

# Modules that add subcommands, in the order `coinfer --help` lists them.
COMMAND_MODULES: tuple[str, ...] = (
    "coinfer.server.cli",
    "coinfer.server.dekd.cli",
    "coinfer.testbed.cli",
    "coinfer.server.split.cli",
    "coinfer.edge.cli",
    "coinfer.edge.profile_cli",
    "coinfer.rl.cli",
    "coinfer.demo",
    "coinfer.bench.suite",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="coinfer",
        description="Collaborative edge inference: decompose, split, schedule and serve vision models "
        "across devices and an edge server.",
    )
    parser.add_argument("--version", action="version", version=f"coinfer {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.handler(args) or 0)
    except CoinferError as exc:
        print(f"coinfer {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130

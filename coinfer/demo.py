"""`coinfer demo`: the main job on the embedded default data (filled in as the pipeline grows)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("demo", help="run the end-to-end demo on the digits data")
    p.add_argument("--runs", default="runs/demo", help="folder for everything the demo trains and writes")
    p.add_argument("--fresh", action="store_true", help="retrain everything instead of reusing runs/")
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from coinfer.server.demo_skeleton import run_walking_skeleton

    return run_walking_skeleton(args)

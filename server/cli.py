"""Subcommands of the server role."""

from __future__ import annotations

import argparse
from pathlib import Path

from coinfer.protos.cli_options import add_server_args

DEFAULT_LISTEN = "127.0.0.1:8001"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "serve",
        help="run the coordinator: Open Inference Protocol front door + device registry + split tails",
        description="Serve a split bundle: devices register, fetch their parts and offload features; "
        "clients may also call the model here directly (Open Inference Protocol).",
    )
    p.add_argument("--bundle", type=Path, required=True, help="split bundle directory (manifest.json + parts)")
    add_server_args(p, DEFAULT_LISTEN)
    p.add_argument("--heartbeat-s", type=float, default=2.0, help="heartbeat interval asked of devices (default 2 s)")
    p.set_defaults(handler=_serve)


def _serve(args: argparse.Namespace) -> int:
    from coinfer.core.errors import InvalidInput
    from coinfer.protos.cli_options import server_options_from_args, set_torch_threads, write_port_file
    from coinfer.protos.serving import run_until_signal
    from coinfer.server.coordinator import CoordinatorConfig
    from coinfer.server.serve import start_coordinator

    if args.heartbeat_s <= 0:
        raise InvalidInput(f"--heartbeat-s must be positive, got {args.heartbeat_s}")
    set_torch_threads(args.threads)
    config = CoordinatorConfig(heartbeat_interval_s=args.heartbeat_s, device_timeout_s=max(10.0, 5 * args.heartbeat_s))
    server = start_coordinator(args.bundle, server_options_from_args(args), config)
    print(f"coordinator serving {server.coordinator.deployment.model_name!r} on {server.address}", flush=True)
    write_port_file(args.port_file, server.address)
    return run_until_signal(server.running)

"""Subcommands of the edge role."""

from __future__ import annotations

import argparse
import socket
from pathlib import Path

from coinfer.serving.cli_options import add_server_args

DEFAULT_LISTEN = "127.0.0.1:8101"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "edge",
        help="run a device daemon: fetch the assigned parts, serve inference, offload tails, run DeViT sub-models",
        description="Register with a coordinator, download and verify the assigned parts, and serve the "
        "Open Inference Protocol: a split model's head runs here at the split point the scheduler assigns and the "
        "encoded feature goes to the coordinator's tail; DeViT requests are forwarded to the coordinator, which "
        "calls this device for its sub-models.",
    )
    p.add_argument("--coordinator", default="127.0.0.1:8001", help="host:port of the coordinator (default 127.0.0.1:8001)")
    p.add_argument("--name", default=socket.gethostname(), help="device name, unique among the coordinator's devices")
    add_server_args(p, DEFAULT_LISTEN, default_workers=16)
    p.add_argument("--advertise", help="host:port the coordinator should note for this device (default: the bound address)")
    p.add_argument("--cache-dir", type=Path, help="where parts are kept (default: ~/.cache/coinfer/edge/NAME)")
    p.add_argument("--rpc-timeout-s", type=float, default=10.0, help="deadline of each call to the coordinator (default 10 s)")
    p.add_argument("--coordinator-ca", type=Path, help="PEM CA to verify a TLS coordinator (with --tls-cert/--tls-key: mutual TLS)")
    p.add_argument("--distance-m", type=float, default=0.0, help="distance to the edge server told to the scheduler (default 0 = unknown)")
    p.add_argument("--speed", type=float, help="this device's speed relative to the reference workload (docs/runtime.md), "
                   "for an owner who knows it; default: measured at start and whenever the coordinator asks")
    p.add_argument("--calibration-s", type=float, default=1.0, help="how long the speed calibration runs (default 1 s)")
    p.set_defaults(handler=_edge)


def _edge(args: argparse.Namespace) -> int:
    from coinfer.edge.serve import serve_edge
    from coinfer.serving.cli_options import read_token, server_options_from_args, set_torch_threads, write_port_file
    from coinfer.serving.security import ClientSecurity
    from coinfer.serving.server import run_until_signal

    set_torch_threads(args.threads)
    mutual = args.coordinator_ca is not None
    security = ClientSecurity(
        ca_file=args.coordinator_ca,
        cert_file=args.tls_cert if mutual else None,
        key_file=args.tls_key if mutual else None,
        token=read_token(args.token_file),
    )
    server = serve_edge(
        args.coordinator, args.name, server_options_from_args(args), advertise=args.advertise or "", cache_dir=args.cache_dir,
        security=security, rpc_timeout_s=args.rpc_timeout_s, distance_m=args.distance_m, speed=args.speed,
        calibration_s=args.calibration_s, metrics_port=args.metrics_port,
    )
    print(f"edge {args.name!r} serving on {server.address}, coordinator {args.coordinator}", flush=True)
    write_port_file(args.port_file, server.address)
    return run_until_signal(server.running, on_stop=server.shutdown_helpers)

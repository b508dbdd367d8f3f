"""Command-line options every daemon shares: listening, transport security, threads, port file.

Only argparse and paths here (no grpc import), so `coinfer --help` stays fast; the handlers turn
the parsed values into `ServerOptions` / `ClientSecurity` when they run.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from coinfer.core.errors import InvalidInput, NotFound


def add_server_args(p: argparse.ArgumentParser, default_listen: str, default_workers: int = 8) -> None:
    """--listen, --insecure, TLS files, token, --threads, --workers, --port-file, --metrics-port, --max-message-mb."""
    p.add_argument("--listen", default=default_listen, help=f"host:port to serve on (default {default_listen}; port 0 = any free port)")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (default: torch's choice)")
    p.add_argument("--workers", type=int, default=default_workers, help=f"concurrent gRPC calls served (default {default_workers})")
    p.add_argument("--max-message-mb", type=int, default=64, help="largest gRPC message in MiB (default 64)")
    p.add_argument("--port-file", type=Path, help="write the bound host:port to this file once serving")
    p.add_argument(
        "--metrics-port", type=int, default=0,
        help="serve Prometheus metrics on this port of the --listen host (default 0 = no metrics endpoint)",
    )
    sec = p.add_argument_group("transport security")
    sec.add_argument("--tls-cert", type=Path, help="PEM certificate chain of this daemon (turns TLS on)")
    sec.add_argument("--tls-key", type=Path, help="PEM private key of this daemon")
    sec.add_argument("--tls-client-ca", type=Path, help="require client certificates signed by this CA (mutual TLS)")
    sec.add_argument(
        "--token-file", type=Path, help="file holding a bearer token every caller must send (or set COINFER_TOKEN)"
    )
    sec.add_argument("--insecure", action="store_true", help="allow plaintext on a non-loopback address (trusted networks only)")


def read_token(path: Path | None) -> str | None:
    """The bearer token from a file (stripped), else $COINFER_TOKEN, else None."""
    if path is not None:
        try:
            token = path.read_text().strip()
        except FileNotFoundError as exc:
            raise NotFound(f"token file {path} does not exist") from exc
        if not token:
            raise InvalidInput(f"token file {path} is empty")
        return token
    return os.environ.get("COINFER_TOKEN") or None


def server_options_from_args(args: argparse.Namespace):
    """`ServerOptions` from the parsed arguments of `add_server_args`."""
    from coinfer.serving.security import ServerSecurity
    from coinfer.serving.server import ServerOptions

    if args.max_message_mb < 1 or args.workers < 1:
        raise InvalidInput("--max-message-mb and --workers must be at least 1")
    if not 0 <= args.metrics_port <= 65535:
        raise InvalidInput(f"--metrics-port must be 0 (off) or a port number, got {args.metrics_port}")
    security = ServerSecurity(
        cert_file=args.tls_cert, key_file=args.tls_key, client_ca_file=args.tls_client_ca, token=read_token(args.token_file)
    )
    return ServerOptions(
        listen=args.listen,
        max_workers=args.workers,
        max_message_bytes=args.max_message_mb * 1024 * 1024,
        security=security,
        allow_plaintext_remote=args.insecure,
    )


def set_torch_threads(threads: int) -> None:
    if threads < 0:
        raise InvalidInput(f"--threads must be 0 (automatic) or positive, got {threads}")
    if threads:
        import torch

        torch.set_num_threads(threads)


def write_port_file(path: Path | None, address: str) -> None:
    """Write ``address`` atomically, so a reader never sees a half-written file."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(address + "\n")
    os.replace(tmp, path)

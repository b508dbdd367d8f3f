"""Subcommands of the server role: `coinfer serve` (the coordinator), `coinfer fleet` and `coinfer certs init`."""

from __future__ import annotations

import argparse
from pathlib import Path

from coinfer.serving.cli_options import add_server_args

DEFAULT_LISTEN = "127.0.0.1:8001"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "serve",
        help="run the coordinator: Open Inference Protocol front door, device registry, split tails, DeViT fusion, scheduler",
        description="Serve split and DeViT bundles: devices register, fetch their parts, run heads and sub-models, "
        "and offload features here; the scheduler (--policy) decides every device's split point, sub-channel and "
        "power each slot. Clients call models here or on any device (Open Inference Protocol).",
    )
    p.add_argument("--bundle", type=Path, action="append", required=True, help="bundle directory to serve (repeat for several; one split bundle at most)")
    add_server_args(p, DEFAULT_LISTEN, default_workers=32)
    p.add_argument("--heartbeat-s", type=float, default=2.0, help="heartbeat interval asked of devices (default 2 s; a scheduler shortens it to its slot)")
    p.add_argument("--device-timeout-s", type=float, default=0.0, help="a device silent this long is gone (default max(10 s, 5 heartbeats))")
    sched = p.add_argument_group("scheduler")
    sched.add_argument("--policy", help="MAHPPO policy file (policy.json) or baseline: local, offload, random, greedy, search (default: none, a fixed split point)")
    sched.add_argument("--scenario", help="scenario name or TOML file the policy acts on (default: the policy's own, or mahppo-paper-<backbone>)")
    sched.add_argument("--slot-ms", type=float, default=0.0, help="decision slot in milliseconds (default: the scenario's slot)")
    sched.add_argument("--split-point", type=int, help="split point of every device when no --policy is given (default: the bundle's)")
    sched.add_argument("--decision-log", type=Path, help="append every slot's observation and decisions here (JSON lines)")
    sched.add_argument("--seed", type=int, default=0, help="seed of the random baseline (default 0)")
    sched.add_argument("--testbed", metavar="PREFIX", help="shape each testbed device's uplink from the power the scheduler "
                       "picks (the testbed `coinfer testbed up --prefix PREFIX` made; root; needs --policy)")
    sched.add_argument("--testbed-state-dir", type=Path, help="state folder of that testbed (default: the testbed's default)")
    devit = p.add_argument_group("DeViT fan-out")
    devit.add_argument("--devit-timeout-ms", type=float, default=2000.0, help="longest a fan-out waits for sub-model features (default 2000 ms)")
    devit.add_argument("--min-devices", type=int, default=0, help="fewest sub-model features to answer with (default: half, rounded up)")
    devit.add_argument("--placement", choices=("speed", "count"), default="speed",
                       help="place sub-models to minimise the expected critical path from the devices' measured speeds "
                       "(default), or spread them by count in registration order")
    p.add_argument("--no-fallback", action="store_true", help="do not ship the whole split model to devices for answering alone")
    p.add_argument("--edge-ca", type=Path, help="PEM CA to verify TLS edge daemons (with --tls-cert/--tls-key: mutual TLS)")
    p.set_defaults(handler=_serve)

    f = subparsers.add_parser(
        "fleet",
        help="list a coordinator's live devices: measured speeds and the DeViT sub-models each holds",
        description="The devices a coordinator knows, with the speed it places by (measured by each device, refined by "
        "real requests), the sub-models each holds (model, index, the speed it was sized for) and how each DeViT model "
        "is placed. --out writes the speeds as a speeds file for `coinfer decompose --fleet FILE`.",
    )
    f.add_argument("--coordinator", default=DEFAULT_LISTEN, help=f"host:port of the coordinator (default {DEFAULT_LISTEN})")
    f.add_argument("--json", action="store_true", help="print the listing as JSON")
    f.add_argument("--out", type=Path, help="write the live devices' speeds to this speeds file")
    f.add_argument("--all", action="store_true", help="also list devices not heard from within the coordinator's timeout")
    f.add_argument("--calibrate", action="store_true", help="ask every live device to measure its speed again first, and wait for it")
    f.add_argument("--timeout-s", type=float, default=30.0, help="deadline of the calls and of --calibrate's wait (default 30 s)")
    f.add_argument("--ca", type=Path, help="PEM CA to verify a TLS coordinator")
    f.add_argument("--cert", type=Path, help="client certificate for mutual TLS (with --key)")
    f.add_argument("--key", type=Path, help="client private key for mutual TLS")
    f.add_argument("--token-file", type=Path, help="bearer token file (default: $COINFER_TOKEN)")
    f.set_defaults(handler=_fleet)

    c = subparsers.add_parser("certs", help="make TLS certificates for a deployment", description="Certificates for TLS and mutual TLS.")
    certs = c.add_subparsers(dest="certs_command", metavar="ACTION", required=True)
    init = certs.add_parser(
        "init",
        help="create a CA, a daemon certificate and a client certificate in DIR",
        description="Create ca.pem/ca.key, server.pem/server.key (coordinator and edges; server and client use) and "
        "client.pem/client.key in DIR.",
    )
    init.add_argument("dir", type=Path, help="folder for the PEM files")
    init.add_argument("--host", action="append", default=[], help="extra host name or IP address the daemons are reached at (repeat)")
    init.add_argument("--days", type=int, default=365, help="validity in days (default 365)")
    init.add_argument("--overwrite", action="store_true", help="replace existing files")
    init.set_defaults(handler=_certs_init)


def _serve(args: argparse.Namespace) -> int:
    from coinfer.serving.cli_options import read_token, server_options_from_args, set_torch_threads, write_port_file
    from coinfer.serving.security import ClientSecurity
    from coinfer.serving.server import run_until_signal
    from coinfer.server.serve import serve_coordinator

    set_torch_threads(args.threads)
    mutual = args.edge_ca is not None and args.tls_cert is not None
    edge_security = ClientSecurity(
        ca_file=args.edge_ca,
        cert_file=args.tls_cert if mutual else None,
        key_file=args.tls_key if mutual else None,
        token=read_token(args.token_file),
    )
    server = serve_coordinator(
        args.bundle, server_options_from_args(args), policy=args.policy, scenario=args.scenario, slot_ms=args.slot_ms,
        split_point=args.split_point, decision_log=args.decision_log, seed=args.seed, heartbeat_s=args.heartbeat_s,
        device_timeout_s=args.device_timeout_s or None, devit_timeout_ms=args.devit_timeout_ms, min_devices=args.min_devices,
        device_fallback=not args.no_fallback, placement=args.placement, edge_security=edge_security, testbed=args.testbed,
        testbed_state_dir=args.testbed_state_dir, metrics_port=args.metrics_port,
    )
    models = ", ".join(repr(n) for n in server.coordinator.catalog.model_names())
    print(f"coordinator serving {models} on {server.address}", flush=True)
    write_port_file(args.port_file, server.address)
    return run_until_signal(server.running, on_stop=server.shutdown_helpers)


def _fleet(args: argparse.Namespace) -> int:
    import json

    from coinfer.core.errors import InvalidInput
    from coinfer.serving.cli_options import read_token
    from coinfer.serving.security import ClientSecurity
    from coinfer.server.dekd.speeds import write_speeds_file
    from coinfer.server.fleet import calibrate_fleet, list_fleet, render_fleet

    if args.timeout_s <= 0:
        raise InvalidInput(f"--timeout-s must be positive, got {args.timeout_s}")
    if (args.cert is None) != (args.key is None):
        raise InvalidInput("--cert and --key go together (mutual TLS)")
    security = ClientSecurity(ca_file=args.ca, cert_file=args.cert, key_file=args.key, token=read_token(args.token_file))
    if args.calibrate:
        calibrate_fleet(args.coordinator, security=security, timeout_s=args.timeout_s)
    listing = list_fleet(args.coordinator, security, timeout_s=args.timeout_s, include_stale=args.all)
    if args.out is not None:
        write_speeds_file(args.out, listing.speeds_entries(), source=f"coinfer fleet --coordinator {args.coordinator}")
    if args.json:
        print(json.dumps(listing.to_json(), indent=2))
    else:
        print(render_fleet(listing))
        if args.out is not None:
            print(f"wrote the speeds of {len(listing.live)} device(s) to {args.out} (coinfer decompose --fleet {args.out})")
    return 0


def _certs_init(args: argparse.Namespace) -> int:
    from coinfer.serving.certs import init_certs

    paths = init_certs(args.dir, args.host, days=args.days, overwrite=args.overwrite)
    print(f"wrote a CA, a daemon certificate and a client certificate to {paths.directory}")
    for path in (paths.ca_cert, paths.server_cert, paths.server_key, paths.client_cert, paths.client_key):
        print(f"  {path}")
    return 0

"""`coinfer testbed up|down|status|exec`: the multi-device testbed from the shell (root)."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from coinfer.core.errors import InvalidInput

if TYPE_CHECKING:
    from coinfer.testbed import TestbedStatus


def _float_list(text: str) -> list[float]:
    try:
        values = [float(tok) for tok in text.split(",") if tok.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one number")
    return values


def _add_target(p: argparse.ArgumentParser) -> None:
    from coinfer.testbed.config import DEFAULT_PREFIX, DEFAULT_STATE_DIR

    p.add_argument("--prefix", default=DEFAULT_PREFIX,
                   help=f"name prefix of the testbed's namespaces and state file (default {DEFAULT_PREFIX})")
    p.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR,
                   help=f"folder of the state file (default {DEFAULT_STATE_DIR})")


def register(subparsers: argparse._SubParsersAction) -> None:
    testbed = subparsers.add_parser(
        "testbed", help="multi-device network on this host (namespaces, shaped links; root)",
        description="One network namespace per device joined to a server namespace by shaped veth pairs.")
    sub = testbed.add_subparsers(dest="testbed_command", metavar="ACTION", required=True)

    up = sub.add_parser("up", help="create the namespaces, links and shaping")
    up.add_argument("--devices", type=int, required=True, help="number of device namespaces")
    up.add_argument("--bandwidth-mbit", type=_float_list, metavar="B1,..",
                    help="rate of both directions in Mbit/s: one value for all devices or one per device (default 8)")
    up.add_argument("--uplink-mbit", type=_float_list, metavar="B1,..", help="device -> server rate, overrides --bandwidth-mbit")
    up.add_argument("--downlink-mbit", type=_float_list, metavar="B1,..", help="server -> device rate, overrides --bandwidth-mbit")
    up.add_argument("--delay-ms", type=_float_list, metavar="D1,..", help="one-way delay per direction (default 0)")
    up.add_argument("--loss-pct", type=_float_list, metavar="L1,..", help="packet loss in percent (default 0)")
    up.add_argument("--distance-m", type=_float_list, metavar="M1,..",
                    help="distance to the server, for transmit power -> rate (default 50)")
    up.add_argument("--cpu", type=_float_list, metavar="C1,..",
                    help="CPU quota of each device in cores (e.g. 0.5,0.5,0.25,0.25; one value for all): its daemons run "
                    "in a cgroup (v1 or v2, whichever this host has) held to it (default: no quota)")
    up.add_argument("--scenario", help="simulator scenario whose radio (bandwidth, path loss, noise) maps power to rate")
    up.add_argument("--server-port", type=int, action="append", default=[], metavar="PORT",
                    help="a server-side port the devices will dial; prints the address each device must use")
    up.add_argument("--device-port", type=int, action="append", default=[], metavar="PORT",
                    help="a port devices will listen on; prints the address the server side must dial")
    up.add_argument("--json", action="store_true", help="print the status as JSON")
    _add_target(up)
    up.set_defaults(handler=_up)

    down = sub.add_parser("down", help="remove everything the testbed made (also after a crash)")
    down.add_argument("--json", action="store_true", help="print what was removed as JSON")
    _add_target(down)
    down.set_defaults(handler=_down)

    status = sub.add_parser("status", help="show the testbed, its live rates and its delay mechanism")
    status.add_argument("--json", action="store_true", help="print as JSON")
    _add_target(status)
    status.set_defaults(handler=_status)

    run = sub.add_parser("exec", help="run a command inside a device's (or the server's) namespace")
    where = run.add_mutually_exclusive_group(required=True)
    where.add_argument("--device", type=int, metavar="I", help="device index")
    where.add_argument("--server", action="store_true", help="the server namespace")
    _add_target(run)
    run.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- COMMAND", help="command and its arguments")
    run.set_defaults(handler=_exec)


def _up(args: argparse.Namespace) -> int:
    from coinfer.testbed import Testbed, make_config, radio_from_scenario

    options: dict[str, object] = {"prefix": args.prefix, "state_dir": args.state_dir}
    if args.scenario:
        options["radio"] = radio_from_scenario(args.scenario)
    config = make_config(
        args.devices,
        uplink_mbit=args.uplink_mbit or args.bandwidth_mbit,
        downlink_mbit=args.downlink_mbit or args.bandwidth_mbit,
        delay_ms=args.delay_ms, loss_pct=args.loss_pct, distance_m=args.distance_m, cpu_cores=args.cpu, **options)
    tb = Testbed.up(config)
    try:
        endpoints = {
            "server_ports": {str(port): [str(tb.reach_server(i, port)) for i in range(tb.num_devices)]
                             for port in args.server_port},
            "device_ports": {str(port): [str(tb.reach_device(i, port)) for i in range(tb.num_devices)]
                             for port in args.device_port},
        }
    except BaseException:
        tb.down()
        raise
    status = tb.status()
    if args.json:
        print(json.dumps({**status.to_json(), **endpoints}, indent=2))
        return 0
    _print_status(status)
    for port, eps in endpoints["server_ports"].items():
        for i, ep in enumerate(eps):
            print(f"  device {i} reaches server port {port} at {ep}")
    for port, eps in endpoints["device_ports"].items():
        for i, ep in enumerate(eps):
            print(f"  server reaches device {i} port {port} at {ep}")
    print(f"run a command in device 0: coinfer testbed exec --prefix {tb.config.prefix} --device 0 -- CMD")
    return 0


def _down(args: argparse.Namespace) -> int:
    from coinfer.testbed import Testbed

    report = Testbed.teardown(args.prefix, args.state_dir)
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        print(f"testbed {report.prefix}: removed {len(report.namespaces_removed)} namespaces and "
              f"{len(report.cgroups_removed)} CPU groups, stopped {len(report.processes_stopped)} processes, "
              f"state file {'removed' if report.state_file_removed else 'absent'}")
    return 0


def _status(args: argparse.Namespace) -> int:
    from coinfer.testbed import Testbed

    status = Testbed.inspect(args.prefix, args.state_dir)
    if args.json:
        print(json.dumps(status.to_json(), indent=2))
    else:
        _print_status(status)
    return 0


def _print_status(s: "TestbedStatus") -> None:
    if s.phase == "down":
        print(f"testbed {s.prefix}: down" + (f"; leftover namespaces: {', '.join(s.leftovers)}" if s.leftovers else ""))
        return
    mechanism = {
        "netem": "netem qdisc",
        "relay": "the testbed's TCP relay (this kernel has no netem); dial the addresses reach_* gives",
        "none": "none (no delay or loss asked)",
    }[s.delay_mechanism]
    print(f"testbed {s.prefix}: {s.phase}; server {s.server_address} in namespace {s.server_namespace}")
    print(f"  delay/loss: {mechanism}")
    for d in s.devices:
        print(f"  device {d.index}: {d.address} in {d.namespace}, up {d.uplink_bps / 1e6:g} Mbit/s "
              f"(kernel: {d.live_uplink}), down {d.downlink_bps / 1e6:g} Mbit/s (kernel: {d.live_downlink}), "
              f"delay {d.delay_ms:g} ms, loss {d.loss_pct:g}%, qdiscs {'+'.join(d.uplink_qdiscs) or '-'}"
              + _cpu_text(d))
    for r in s.relays:
        print(f"  relay device {r.device} toward {r.toward}: {r.listen} -> {r.target} "
              f"(pid {r.pid}, {'running' if r.alive else 'GONE'})")
    if s.leftovers:
        print(f"  leftover namespaces: {', '.join(s.leftovers)}")


def _cpu_text(d) -> str:
    if d.cpu_cores is None:
        return ""
    g = d.cpu_group
    if g is None or not g.exists:
        return f", cpu {d.cpu_cores:g} core (cgroup MISSING)"
    live = f"{g.cores:g}" if g.cores is not None else "unlimited"
    used = f", used {g.usage_s:.1f} s" if g.usage_s is not None else ""
    return f", cpu {d.cpu_cores:g} core (kernel: {live}, {len(g.pids)} processes{used}, throttled {g.throttled_periods} times)"


def _exec(args: argparse.Namespace) -> int:
    from coinfer.testbed import Testbed

    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if not argv:
        raise InvalidInput("no command given: coinfer testbed exec --device I -- COMMAND [ARGS...]")
    tb = Testbed.attach(args.prefix, args.state_dir)
    ns = tb.server_namespace if args.server else tb.namespace(args.device)
    group = None if args.server else tb.cpu_group(args.device)
    if group is not None:
        from coinfer.testbed.cgroups import add_process

        add_process(group, os.getpid())  # the command inherits it across exec
    os.execvp("ip", ["ip", "netns", "exec", ns, *argv])
    return 0  # not reached: execvp replaces this process

"""`coinfer profile`: measure a split bundle's per-point costs on this machine."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "profile",
        help="measure every split point's latency, power, energy and wire bytes on this machine",
        description="Profile a split bundle on the machine it runs on and write a coinfer.profile/1 file "
        "(the schema of the built-in paper tables) for the simulator and the scheduler. Energy is measured "
        "from RAPL counters where readable, otherwise modelled from CPU time with a power model.",
    )
    p.add_argument("--bundle", required=True, help="split bundle written by `coinfer split`")
    p.add_argument("--threads", type=int, default=1, help="torch threads of the device side (default 1)")
    p.add_argument("--out", default="profile.json", help="profile file to write (default profile.json)")
    p.add_argument("--repeats", type=int, default=30, help="timed batch-1 runs per point (default 30)")
    p.add_argument("--warmup", type=int, default=5, help="untimed runs first (default 5)")
    p.add_argument("--energy-window", type=float, default=0.5, help="seconds of runs per energy reading")
    p.add_argument("--energy", choices=("auto", "measured", "modelled"), default="auto",
                   help="auto: RAPL where readable, else the power model (default)")
    p.add_argument("--power-model", default=None,
                   help="preset (server-core, laptop-core, jetson-nano) or JSON file with static_power_w "
                   "and active_power_per_core_w, used where energy is modelled")
    p.add_argument("--name", default=None, help="profile name (default <host>-<backbone>)")
    p.add_argument("--device", default=None, help="device description (default the CPU model)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from coinfer.edge.energy import load_power_model
    from coinfer.edge.profiling import ProfileConfig, profile_bundle

    config = ProfileConfig(
        threads=args.threads, warmup=args.warmup, repeats=args.repeats, energy_window_s=args.energy_window,
        power_model=load_power_model(args.power_model) if args.power_model else None, energy=args.energy,
        name=args.name, device=args.device, progress=not args.no_progress,
    )
    profile = profile_bundle(args.bundle, config)
    profile.save(args.out)
    print(f"{profile.name}: {profile.device}; energy {profile.energy_source}")
    print(f"{'pt':>2} {'name':<14} {'latency ms':>10} {'power W':>8} {'energy mJ':>9} {'uplink B':>9} {'MMAC':>8}")
    for p in profile.points:
        print(f"{p.index:>2} {p.name:<14} {p.head_latency_s * 1e3:>10.3f} {p.head_power_w:>8.2f} "
              f"{p.head_energy_j * 1e3:>9.3f} {p.uplink_bits // 8:>9} {p.head_macs / 1e6:>8.2f}")
    print(f"profile written to {args.out}")
    return 0

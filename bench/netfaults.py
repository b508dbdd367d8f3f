"""Network faults under a running deployment, on the testbed (root, `ip` and `tc` only).

The coordinator runs in the testbed's server namespace and one edge daemon in each device's,
each over its own shaped veth link; a request stream (`python -m coinfer.bench.faults`) runs in
the server namespace, where clients are. While it runs, device 0's link is cut (its server-side
end set down, as a pulled cable) and restored, device 1's link is throttled in both directions
and restored, and device 2's link has delay and loss throughout (netem where the kernel has it,
the testbed's relay otherwise). Every request's outcome is classified as in `faults.py`.
"""

from __future__ import annotations

import json
import select
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from coinfer.core.errors import FailedPrecondition

COORDINATOR_PORT, EDGE_PORT = 8001, 8101
DEVIT, SPLIT = "rel-devit", "rel-split"
LINK_MBIT = 8.0
THROTTLED_BPS = 100e3
DELAY_MS, LOSS_PCT = 50.0, 2.0


def _wait_line(proc: subprocess.Popen, timeout_s: float) -> str:
    ready, _, _ = select.select([proc.stdout], [], [], timeout_s)
    return proc.stdout.readline().strip() if ready else ""


def run_network_faults(bundles: tuple[Path, Path], run_dir: Path, *, step_s: float = 10.0, deadline_s: float = 5.0) -> dict[str, Any]:
    """Bring a 4-device testbed up, run the stream through the faults, tear everything down; the figures."""
    from coinfer.bench.faults import OUTCOMES, summarise
    from coinfer.bench.processes import DaemonProcess, coinfer_command
    from coinfer.testbed import Testbed, make_config, netns
    from coinfer.testbed.config import server_iface

    run_dir.mkdir(parents=True, exist_ok=True)
    config = make_config(
        4, uplink_mbit=[LINK_MBIT], downlink_mbit=[LINK_MBIT], delay_ms=[0.0, 0.0, DELAY_MS, 0.0], loss_pct=[0.0, 0.0, LOSS_PCT, 0.0],
        prefix=f"crel{uuid.uuid4().hex[:6]}", state_dir=run_dir / "state",
    )
    tb = Testbed.up(config)
    daemons: list[DaemonProcess] = []
    client = None
    stream_log = open(run_dir / "stream.log", "wb")
    events: list[dict[str, Any]] = []
    try:
        devit, split = bundles
        daemons.append(DaemonProcess(
            "coordinator",
            ["ip", "netns", "exec", tb.server_namespace, *coinfer_command(
                "serve", "--bundle", str(devit), "--bundle", str(split), "--listen", f"{tb.server_address}:{COORDINATOR_PORT}",
                "--insecure", "--port-file", str(run_dir / "coordinator.addr"), "--threads", "1", "--heartbeat-s", "0.5",
                "--device-timeout-s", "3", "--devit-timeout-ms", "1000")],
            run_dir / "coordinator.addr", run_dir / "coordinator.log",
        ))
        edges = []
        for i in range(tb.num_devices):
            edges.append(str(tb.reach_device(i, EDGE_PORT)))
            daemons.append(DaemonProcess(
                f"edge-{i}",
                ["ip", "netns", "exec", tb.namespace(i), *coinfer_command(
                    "edge", "--coordinator", str(tb.reach_server(i, COORDINATOR_PORT)), "--name", f"tb-edge-{i}",
                    "--listen", f"0.0.0.0:{EDGE_PORT}", "--insecure", "--advertise", edges[-1],
                    "--port-file", str(run_dir / f"edge-{i}.addr"), "--threads", "1", "--cache-dir", str(run_dir / f"cache-{i}"))],
                run_dir / f"edge-{i}.addr", run_dir / f"edge-{i}.log",
            ))
        with ThreadPoolExecutor(len(daemons)) as pool:
            list(pool.map(lambda d: d.start(timeout_s=120), daemons))
        duration_s = 6 * step_s
        out = run_dir / "stream.json"
        out.unlink(missing_ok=True)
        client = tb.exec_in_server(
            [sys.executable, "-m", "coinfer.bench.faults", "--coordinator", f"{tb.server_address}:{COORDINATOR_PORT}",
             "--devit-model", DEVIT, *[a for e in edges for a in ("--edge", e)], "--split-model", SPLIT, "--devit-clients", "2",
             "--deadline-s", str(deadline_s), "--duration-s", str(duration_s), "--wait-ready-s", "240", "--out", str(out)],
            stdout=subprocess.PIPE, stderr=stream_log, text=True,
        )
        if _wait_line(client, 300) != "STARTED":
            raise FailedPrecondition(f"the stream never started; see {run_dir / 'stream.log'} and the daemon logs there")
        started = time.monotonic()

        def event(name: str) -> None:
            events.append({"event": name, "at_s": time.monotonic() - started})
            print(f"      {events[-1]['at_s']:6.1f} s  {name}", flush=True)

        event(f"stream started (device 2: {DELAY_MS:g} ms delay, {LOSS_PCT:g} % loss by {tb.delay_mechanism})")
        time.sleep(step_s)
        netns.run(["ip", "-n", tb.server_namespace, "link", "set", server_iface(0), "down"])
        event("device 0 link cut")
        time.sleep(step_s)
        netns.link_up(tb.server_namespace, server_iface(0))
        event("device 0 link restored")
        time.sleep(step_s)
        tb.set_rate(1, THROTTLED_BPS, "up")
        tb.set_rate(1, THROTTLED_BPS, "down")
        event(f"device 1 throttled to {THROTTLED_BPS / 1e3:g} kbit/s")
        time.sleep(step_s)
        tb.set_rate(1, LINK_MBIT * 1e6, "up")
        tb.set_rate(1, LINK_MBIT * 1e6, "down")
        event("device 1 link restored")
        client.wait(timeout=duration_s + 120)
        event("stream ended")
        data = json.loads(out.read_text())
    finally:
        if client is not None and client.poll() is None:
            client.kill()
            client.wait()
        with ThreadPoolExecutor(max(1, len(daemons))) as pool:
            statuses = dict(zip([d.name for d in daemons], pool.map(lambda d: d.stop(), daemons)))
        tb.down()
        stream_log.close()
    from coinfer.bench.faults import RequestRecord

    records = [RequestRecord(**r) for r in data["records"]]
    by_target = {}
    for i, address in enumerate(edges):
        by_target[f"split via device {i}"] = summarise([r for r in records if r.target == address])
    by_target["devit at the coordinator"] = summarise([r for r in records if r.kind == "devit"])
    windows = {}
    for this, after in zip(events, events[1:]):
        inside = [r for r in records if this["at_s"] <= r.started_s < after["at_s"]]
        windows[this["event"]] = {
            kind: {o: sum(r.outcome == o for r in inside if r.kind == kind) for o in OUTCOMES} for kind in ("devit", "split")
        }
    return {
        "delay_mechanism": tb.delay_mechanism,
        "links": {"mbit": LINK_MBIT, "throttled_bps": THROTTLED_BPS, "delay_ms": DELAY_MS, "loss_pct": LOSS_PCT},
        "deadline_s": deadline_s,
        "events": events,
        "requests": data["summary"],
        "by_target": by_target,
        "by_window": windows,
        "exit_statuses": statuses,
    }

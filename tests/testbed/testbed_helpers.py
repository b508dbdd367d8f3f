"""Helpers of the testbed tests: the skip marker, probes run inside namespaces, measurements.

A uniquely named module (not conftest) so that `from testbed_helpers import ...` cannot pick up
another folder's conftest.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Callable

import pytest

from coinfer.testbed import Testbed, missing_requirements

PROBE = str(Path(__file__).with_name("netprobe.py"))
PROBE_WAIT_S = 20.0

SHAPER_BURST = 0.25
"""How far above its rate a shaped link may measure: HTB's burst on transfers of about 1 s."""
LOADED = 10.0
"""How many times its expected time a shaped transfer or delay may take: TCP slow start, framing
and a loaded machine only add time, so on that side only a gross error (a rate in the wrong
unit, a delay applied ten times) is caught; the shaper's floor is the strict side."""


def assert_shaped_bps(measured_bps: float, rate_bps: float) -> None:
    """A transfer over a link shaped to ``rate_bps``: no faster than the shaper lets through, at most LOADED x slower."""
    assert rate_bps / LOADED <= measured_bps <= rate_bps * (1 + SHAPER_BURST), (measured_bps, rate_bps)


def assert_shaped_ms(measured_ms: float, expected_ms: float, floor: float = 1 / (1 + SHAPER_BURST)) -> None:
    """A time set by a shaper or a delay: at least ``floor`` of ``expected_ms``, at most LOADED x it."""
    assert floor * expected_ms <= measured_ms <= LOADED * expected_ms, (measured_ms, expected_ms)


needs_netns = pytest.mark.skipif(bool(missing_requirements()),
                                 reason="the testbed needs root, `ip` and `tc`: " + "; ".join(missing_requirements()))


def unique_prefix() -> str:
    return f"cft{uuid.uuid4().hex[:8]}"


def wait_line(proc: subprocess.Popen, timeout_s: float = PROBE_WAIT_S) -> str:
    """The next stdout line of ``proc`` (text mode), failing the test if none comes in time."""
    ready, _, _ = select.select([proc.stdout], [], [], timeout_s)
    if not ready:
        proc.kill()
        pytest.fail(f"no output from {proc.args} within {timeout_s} s")
    return proc.stdout.readline().strip()


def start_probe(spawn: Callable[..., subprocess.Popen], *args: object) -> subprocess.Popen:
    """Start a probe server through ``spawn`` (tb.exec_in_server or a partial of tb.exec_in)."""
    proc = spawn([sys.executable, PROBE, *map(str, args)], stdout=subprocess.PIPE, text=True)
    line = wait_line(proc)
    assert line == "LISTENING", f"probe server said {line!r}"
    return proc


def run_probe(spawn: Callable[..., subprocess.Popen], *args: object) -> dict:
    """Run a probe client to completion; its JSON output (or {} when it prints nothing)."""
    proc = spawn([sys.executable, PROBE, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate(timeout=PROBE_WAIT_S)
    assert proc.returncode == 0, f"probe {args} failed: {err}"
    return json.loads(out) if out.strip() else {}


def measure_upload_bps(tb: Testbed, device_i: int, num_bytes: int, port: int) -> float:
    """Bits per second of ``num_bytes`` sent by device i to a sink on the server, timed by the sink."""
    sink = start_probe(tb.exec_in_server, "sink", tb.server_address, port)
    endpoint = tb.reach_server(device_i, port)
    run_probe(lambda argv, **kw: tb.exec_in(device_i, argv, **kw), "send", endpoint.host, endpoint.port, num_bytes)
    result = json.loads(wait_line(sink))
    sink.wait(timeout=PROBE_WAIT_S)
    assert result["bytes"] == num_bytes
    return result["bytes"] * 8 / result["seconds"]


def netns_names() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] != "Z"


def measure_request_upload_ms(tb: Testbed, device_i: int, num_bytes: int, port: int, rounds: int = 3,
                              pause_s: float = 0.3) -> list[float]:
    """Milliseconds each of ``rounds`` uploads of ``num_bytes`` (after an idle pause) takes to be acknowledged."""
    ack = start_probe(tb.exec_in_server, "ack", tb.server_address, port)
    ep = tb.reach_server(device_i, port)
    result = run_probe(lambda argv, **kw: tb.exec_in(device_i, argv, **kw), "upload", ep.host, ep.port, num_bytes,
                       rounds, pause_s)
    ack.wait(timeout=PROBE_WAIT_S)
    return result["upload_ms"]

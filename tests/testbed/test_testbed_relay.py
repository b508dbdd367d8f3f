"""The delay/loss relay on loopback (no root needed): it delays, stalls on loss and keeps order."""

from __future__ import annotations

import socket
import statistics
import subprocess
import sys
import threading
import time
from typing import Iterator

import pytest

from coinfer.testbed.relay import READY_PREFIX, stall_probability

from testbed_helpers import assert_shaped_ms


@pytest.fixture
def echo_port() -> Iterator[int]:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    server.settimeout(15)

    def serve() -> None:
        for _ in range(4):
            try:
                conn, _ = server.accept()
            except OSError:
                return
            conn.settimeout(15)
            with conn:
                while data := conn.recv(65536):
                    conn.sendall(data)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    server.close()


def start_relay(target_port: int, *extra: str) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "coinfer.testbed.relay", "--listen", "127.0.0.1:0",
         "--target", f"127.0.0.1:{target_port}", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline().strip()
    assert line.startswith(READY_PREFIX), proc.stderr.read()
    return proc, int(line.rsplit(":", 1)[1])


def round_trips_ms(port: int, payload: bytes, rounds: int) -> list[float]:
    with socket.create_connection(("127.0.0.1", port), timeout=15) as conn:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        times = []
        for _ in range(rounds):
            start = time.monotonic()
            conn.sendall(payload)
            got = b""
            while len(got) < len(payload):
                got += conn.recv(65536)
            assert got == payload  # bytes arrive whole and in order
            times.append((time.monotonic() - start) * 1000)
    return times


def test_stall_probability_grows_with_segments():
    assert stall_probability(100, 0.0) == 0.0
    one = stall_probability(100, 1.0)
    assert one == pytest.approx(0.01)
    assert stall_probability(1448 * 10, 1.0) == pytest.approx(1 - 0.99 ** 10)
    assert stall_probability(1448 * 10, 1.0) > one


def test_relay_adds_its_delay_each_way(echo_port):
    delay_ms = 30.0
    proc, port = start_relay(echo_port, "--delay-ms", f"{delay_ms}")
    try:
        direct = statistics.median(round_trips_ms(echo_port, b"x" * 100, 5))
        relayed = statistics.median(round_trips_ms(port, b"x" * 100, 5))
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    added = relayed - direct
    assert_shaped_ms(added, 2 * delay_ms, floor=0.95)  # two one-way delays per round trip


def test_relay_loss_stalls_for_an_rto(echo_port):
    rto_ms = 60.0
    # Near-certain loss: each direction of each round trip stalls once.
    proc, port = start_relay(echo_port, "--loss-pct", "99.99", "--rto-ms", f"{rto_ms}")
    try:
        rtts = round_trips_ms(port, b"y" * 2000, 3)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert min(rtts) >= 2 * rto_ms * 0.95, rtts


def test_relay_stops_on_sigterm(echo_port):
    proc, _ = start_relay(echo_port)
    proc.terminate()
    assert proc.wait(timeout=10) == 0

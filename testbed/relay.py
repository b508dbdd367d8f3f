"""A TCP relay that adds delay and loss where the kernel has no netem qdisc.

It listens on one address and forwards every connection to one target, holding each chunk of
bytes for ``delay_ms`` in each direction. Throughput is preserved: chunks are timestamped when
read and written when due, so many are in flight at once, as on a long link.

Loss on a byte stream cannot drop bytes; it shows up to the application as what TCP does about a
lost segment: the stream stalls until the retransmission, one RTO later. So each chunk of n bytes
stalls its direction by ``rto_ms`` with probability 1 - (1 - loss)^ceil(n / 1448), and later chunks
wait behind it (TCP delivers in order).

Run as ``python -m coinfer.testbed.relay --listen H:P --target H:P [--delay-ms D]
[--loss-pct L] [--rto-ms R] [--seed S]``; it prints ``READY host:port`` once listening (port 0
picks a free port), then serves until SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
import signal
import socket
import sys
from dataclasses import dataclass
from typing import Sequence

CHUNK_BYTES = 65536
SEGMENT_BYTES = 1448  # TCP payload of a 1500-byte Ethernet frame with timestamps
QUEUE_CHUNKS = 256  # per direction; bounds the relay's memory at 16 MiB per direction
CONNECT_TIMEOUT_S = 5.0
READY_PREFIX = "READY "


@dataclass(frozen=True)
class RelaySpec:
    """One relay: where it listens, where it forwards, and what it does to the bytes."""

    listen_host: str
    """Address to listen on (inside the namespace the relay runs in)."""
    listen_port: int
    """Port to listen on; 0 picks a free one."""
    target_host: str
    """Address every accepted connection is forwarded to."""
    target_port: int
    """Port of the target."""
    delay_ms: float = 0.0
    """One-way delay added to every chunk, in each direction."""
    loss_pct: float = 0.0
    """Segment loss in percent, applied as retransmission stalls."""
    rto_ms: float = 200.0
    """Stall per lost segment (Linux's minimum retransmission timeout)."""
    seed: int = 0
    """Seed of the loss draws."""


def stall_probability(num_bytes: int, loss_pct: float) -> float:
    """Chance that a chunk of ``num_bytes`` contains at least one lost segment."""
    if loss_pct <= 0 or num_bytes <= 0:
        return 0.0
    segments = math.ceil(num_bytes / SEGMENT_BYTES)
    return 1.0 - (1.0 - loss_pct / 100.0) ** segments


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, spec: RelaySpec,
                rng: random.Random) -> None:
    """Copy one direction, each chunk delivered ``delay`` (plus stalls) after it was read."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes | None]] = asyncio.Queue(maxsize=QUEUE_CHUNKS)
    delay_s = spec.delay_ms / 1000.0

    async def read_side() -> None:
        last_due = 0.0
        while True:
            try:
                chunk = await reader.read(CHUNK_BYTES)
            except (ConnectionError, OSError):
                chunk = b""
            due = loop.time() + delay_s
            if chunk and rng.random() < stall_probability(len(chunk), spec.loss_pct):
                due += spec.rto_ms / 1000.0
            due = max(due, last_due)  # in order, like TCP
            last_due = due
            await queue.put((due, chunk or None))
            if not chunk:
                return

    async def write_side() -> None:
        while True:
            due, chunk = await queue.get()
            wait_s = due - loop.time()
            if wait_s > 0:
                await asyncio.sleep(wait_s)
            if chunk is None:
                if writer.can_write_eof():
                    writer.write_eof()  # half-close: the other direction may still be talking
                return
            writer.write(chunk)
            await writer.drain()

    reading = asyncio.create_task(read_side())
    try:
        await write_side()
    finally:
        reading.cancel()


def _nodelay(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


async def _handle(spec: RelaySpec, rng: random.Random, client_r: asyncio.StreamReader,
                  client_w: asyncio.StreamWriter) -> None:
    try:
        target_r, target_w = await asyncio.wait_for(
            asyncio.open_connection(spec.target_host, spec.target_port), CONNECT_TIMEOUT_S)
    except (OSError, asyncio.TimeoutError) as exc:
        print(f"relay: cannot reach {spec.target_host}:{spec.target_port}: {exc}", file=sys.stderr)
        client_w.close()
        return
    _nodelay(client_w)
    _nodelay(target_w)
    try:
        await asyncio.gather(_pump(client_r, target_w, spec, rng), _pump(target_r, client_w, spec, rng))
    except (ConnectionError, OSError):
        pass
    finally:
        for w in (client_w, target_w):
            w.close()


async def serve(spec: RelaySpec, ready: asyncio.Future[tuple[str, int]] | None = None,
                stop: asyncio.Event | None = None) -> None:
    """Serve until ``stop`` is set (or forever); ``ready`` receives the bound address."""
    rng = random.Random(spec.seed)
    try:
        server = await asyncio.start_server(lambda r, w: _handle(spec, rng, r, w), spec.listen_host,
                                            spec.listen_port, reuse_address=True)
    except OSError as exc:
        if ready is not None:
            ready.set_exception(exc)
        raise
    host, port = server.sockets[0].getsockname()[:2]
    if ready is not None:
        ready.set_result((host, port))
    stop = stop or asyncio.Event()
    async with server:
        await stop.wait()


def _parse_endpoint(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m coinfer.testbed.relay", description=__doc__.split("\n")[0])
    p.add_argument("--listen", type=_parse_endpoint, required=True)
    p.add_argument("--target", type=_parse_endpoint, required=True)
    p.add_argument("--delay-ms", type=float, default=0.0)
    p.add_argument("--loss-pct", type=float, default=0.0)
    p.add_argument("--rto-ms", type=float, default=200.0)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    spec = RelaySpec(args.listen[0], args.listen[1], args.target[0], args.target[1], args.delay_ms,
                     args.loss_pct, args.rto_ms, args.seed)

    async def amain() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        ready: asyncio.Future[tuple[str, int]] = loop.create_future()
        task = asyncio.create_task(serve(spec, ready, stop))
        try:
            host, port = await asyncio.wait_for(ready, CONNECT_TIMEOUT_S)
        except OSError as exc:
            print(f"relay: cannot listen on {spec.listen_host}:{spec.listen_port}: {exc}", file=sys.stderr)
            raise SystemExit(1) from None
        print(f"{READY_PREFIX}{host}:{port}", flush=True)
        # Nobody reads stdout after READY; detach it so a closed pipe cannot kill the relay.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        await task

    asyncio.run(amain())
    return 0


if __name__ == "__main__":
    sys.exit(main())

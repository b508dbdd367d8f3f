"""Tiny TCP probes the testbed tests run inside namespaces (executed as a script, never imported).

    netprobe.py echo HOST PORT CONNECTIONS   serve CONNECTIONS echo connections, then exit
    netprobe.py sink HOST PORT               accept one connection, print {"bytes", "seconds"}
    netprobe.py send HOST PORT NBYTES        send NBYTES, then close
    netprobe.py rtt HOST PORT ROUNDS         print {"rtt_ms": [...]} of ROUNDS 4-byte round trips
    netprobe.py ack HOST PORT                accept one connection; answer each length-prefixed message with 1 byte
    netprobe.py upload HOST PORT NBYTES ROUNDS PAUSE_S
                                             print {"upload_ms": [...]}: send NBYTES, wait for the answer,
                                             idle PAUSE_S, ROUNDS times (what one offloaded request does)

Servers print "LISTENING" once bound. Every socket has a timeout, so nothing waits forever.
"""

import json
import socket
import sys
import time

TIMEOUT_S = 20.0


def listen(host: str, port: int) -> socket.socket:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, port))
    s.listen(8)
    s.settimeout(TIMEOUT_S)
    print("LISTENING", flush=True)
    return s


def main() -> None:
    mode, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if mode == "echo":
        server = listen(host, port)
        for _ in range(int(sys.argv[4])):
            conn, _ = server.accept()
            conn.settimeout(TIMEOUT_S)
            while data := conn.recv(65536):
                conn.sendall(data)
            conn.close()
    elif mode == "sink":
        conn, _ = listen(host, port).accept()
        conn.settimeout(TIMEOUT_S)
        total, first = 0, None
        while data := conn.recv(65536):
            first = first if first is not None else time.monotonic()
            total += len(data)
        print(json.dumps({"bytes": total, "seconds": time.monotonic() - (first or time.monotonic())}), flush=True)
    elif mode == "send":
        conn = socket.create_connection((host, port), timeout=TIMEOUT_S)
        conn.sendall(b"\0" * int(sys.argv[4]))
        conn.close()
    elif mode == "rtt":
        conn = socket.create_connection((host, port), timeout=TIMEOUT_S)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        rtts = []
        for _ in range(int(sys.argv[4])):
            start = time.monotonic()
            conn.sendall(b"ping")
            got = 0
            while got < 4:
                chunk = conn.recv(16)
                if not chunk:
                    raise SystemExit("connection closed during a round trip")
                got += len(chunk)
            rtts.append((time.monotonic() - start) * 1000)
        conn.close()
        print(json.dumps({"rtt_ms": rtts}), flush=True)
    elif mode == "ack":
        conn, _ = listen(host, port).accept()
        conn.settimeout(TIMEOUT_S)
        while header := recv_exactly(conn, 8):
            recv_exactly(conn, int.from_bytes(header, "big"))
            conn.sendall(b"k")
    elif mode == "upload":
        size, rounds, pause_s = int(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6])
        conn = socket.create_connection((host, port), timeout=TIMEOUT_S)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        times = []
        for _ in range(rounds):
            time.sleep(pause_s)  # idle first, as between requests: a shaper must not let it burst
            start = time.monotonic()
            conn.sendall(size.to_bytes(8, "big") + b"\0" * size)
            if conn.recv(1) != b"k":
                raise SystemExit("no answer to an upload")
            times.append((time.monotonic() - start) * 1000)
        conn.close()
        print(json.dumps({"upload_ms": times}), flush=True)
    else:
        raise SystemExit(f"unknown mode {mode!r}")


def recv_exactly(conn: socket.socket, n: int) -> bytes:
    """n bytes, or b"" when the peer closed before sending any."""
    buf = b""
    while len(buf) < n:
        chunk = conn.recv(min(65536, n - len(buf)))
        if not chunk:
            if buf:
                raise SystemExit("connection closed mid-message")
            return b""
        buf += chunk
    return buf


if __name__ == "__main__":
    main()

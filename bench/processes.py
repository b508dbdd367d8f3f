"""Run coinfer daemons as child processes (demo and tests): start, learn the port, stop cleanly.

Each daemon listens on port 0 and writes the address it bound to a port file, so nothing
races for a "free" port. Stopping sends SIGTERM (the daemons drain and exit 0) and only kills
a process that does not exit in time. Output goes to a log file whose tail is quoted when a
daemon dies early.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

from coinfer.core.errors import FailedPrecondition, Unavailable


def coinfer_command(*args: str) -> list[str]:
    """argv running ``coinfer ARGS`` with this interpreter (no reliance on PATH)."""
    return [sys.executable, "-m", "coinfer", *args]


class DaemonProcess:
    """One daemon child process, stopped by `stop` or on leaving a ``with`` block."""

    def __init__(self, name: str, argv: Sequence[str], port_file: Path, log_path: Path, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.argv = list(argv)
        self.port_file = Path(port_file)
        self.log_path = Path(log_path)
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None
        self.address = ""

    def start(self, timeout_s: float = 60.0) -> str:
        """Spawn the daemon and return the host:port it bound once it says so."""
        self.port_file.unlink(missing_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "wb")
        env = {**os.environ, **(self.env or {}), "PYTHONUNBUFFERED": "1"}
        try:
            self.process = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        finally:
            log.close()  # the child holds its own descriptor
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.port_file.is_file():
                self.address = self.port_file.read_text().strip()
                if self.address:
                    return self.address
            if self.process.poll() is not None:
                raise FailedPrecondition(f"{self.name} exited with status {self.process.returncode} before serving:\n{self.log_tail()}")
            time.sleep(0.05)
        self.stop()
        raise Unavailable(f"{self.name} did not start serving within {timeout_s:.0f} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def stop(self, timeout_s: float = 15.0) -> int | None:
        """SIGTERM, wait up to ``timeout_s``, then SIGKILL; returns the exit status."""
        process = self.process
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        return process.returncode

    def __enter__(self) -> DaemonProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

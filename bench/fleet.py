"""A coordinator and N edge daemons as child processes on loopback (benchmark, demos, scripts).

Edges keep running while the coordinator is restarted on the same address with other options
(they re-register by themselves and keep their downloaded parts), so one set of devices serves
several phases of a benchmark. `wait_ready` returns once every split model answers on every
edge and every DeViT model answers whole (no device missing).

On the testbed, ``edge_argv`` wraps each edge's command (its namespace and CPU quota,
`Testbed.device_argv`) and the listen addresses are the testbed's; by default everything is on
loopback. Edges that share this machine's cores without quotas are told they are equally fast
(``--speed 1``): what each would measure depends only on what else was starting at the same
moment; ``calibrate=True`` lets them measure.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from coinfer.core.errors import Unavailable
from coinfer.bench.processes import DaemonProcess, coinfer_command


class Fleet:
    """One coordinator process and its edge processes."""

    def __init__(
        self,
        run_dir: str | Path,
        num_edges: int = 4,
        threads: int = 1,
        *,
        listen: str = "127.0.0.1:0",
        edge_listen: Callable[[int], str] = lambda i: "127.0.0.1:0",
        edge_argv: Callable[[int, list[str]], list[str]] = lambda i, argv: argv,
        calibrate: bool = False,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.num_edges = num_edges
        self.threads = threads
        self.listen = listen
        self.edge_listen = edge_listen
        self.edge_argv = edge_argv
        self.calibrate = calibrate
        self.coordinator: DaemonProcess | None = None
        self.edges: list[DaemonProcess] = []
        self.address = ""
        self._restarts = 0

    def start_coordinator(self, bundles: Sequence[str | Path], extra: Sequence[str] = ()) -> str:
        """Start (or restart, on the same address) the coordinator; returns its address."""
        if self.coordinator is not None:
            self.coordinator.stop()
        self._restarts += 1
        listen = self.address or self.listen
        argv = coinfer_command("serve", *[a for b in bundles for a in ("--bundle", str(b))], "--listen", listen,
                               "--port-file", str(self.run_dir / "coordinator.addr"), "--threads", str(self.threads), *extra)
        self.coordinator = DaemonProcess("coordinator", argv, self.run_dir / "coordinator.addr", self.run_dir / f"coordinator-{self._restarts}.log")
        self.address = self.coordinator.start(timeout_s=120)
        return self.address

    def edge_process(self, i: int, extra: Sequence[str] = ()) -> DaemonProcess:
        """Edge i's daemon (not started)."""
        argv = coinfer_command(
            "edge", "--coordinator", self.address, "--name", f"edge-{i}", "--listen", self.edge_listen(i),
            "--port-file", str(self.run_dir / f"edge-{i}.addr"), "--threads", str(self.threads),
            "--cache-dir", str(self.run_dir / f"cache-{i}"), *([] if self.calibrate else ["--speed", "1"]), *extra,
        )
        return DaemonProcess(f"edge-{i}", self.edge_argv(i, argv), self.run_dir / f"edge-{i}.addr", self.run_dir / f"edge-{i}.log")

    def start_edges(self, extra: Sequence[str] = (), timeout_s: float = 120.0) -> list[str]:
        """Start every edge (in parallel: their imports overlap); returns their addresses."""
        self.edges = [self.edge_process(i, extra) for i in range(self.num_edges)]
        with ThreadPoolExecutor(self.num_edges) as pool:
            return list(pool.map(lambda e: e.start(timeout_s=timeout_s), self.edges))

    def wait_ready(self, devit_models: Sequence[str], split_model: str | None, image: np.ndarray, timeout_s: float = 120.0) -> float:
        """Block until everything answers whole; returns the seconds it took."""
        from coinfer.serving.client import InferenceClient

        started = time.monotonic()
        deadline = started + timeout_s
        for model in devit_models:
            with InferenceClient(self.address, timeout_s=10) as client:
                while True:
                    try:
                        if not client.infer(model, {"image": image}).parameters.get("degraded"):
                            break
                        last = "degraded"
                    except Unavailable as exc:  # devices still registering or loading
                        last = str(exc)
                    if time.monotonic() > deadline:
                        raise Unavailable(f"{model} does not answer whole after {timeout_s:.0f} s ({last})")
                    time.sleep(0.2)
        if split_model:
            for edge in self.edges:
                if edge.process is None or edge.process.poll() is not None:
                    continue
                with InferenceClient(edge.address, timeout_s=10) as client:
                    client.wait_until_ready(split_model, timeout_s=max(1.0, deadline - time.monotonic()))
                    # After a coordinator restart the edge must have re-registered and be offloading again.
                    while client.infer(split_model, {"image": image}).parameters.get("fallback"):
                        if time.monotonic() > deadline:
                            raise Unavailable(f"{edge.name} never reached the coordinator again")
                        time.sleep(0.2)
        return time.monotonic() - started

    def stop(self) -> dict[str, int | None]:
        """Stop everything (edges first); exit statuses by daemon name."""
        statuses: dict[str, int | None] = {}
        with ThreadPoolExecutor(max(1, len(self.edges))) as pool:
            for edge, status in zip(self.edges, pool.map(lambda e: e.stop(), self.edges)):
                statuses[edge.name] = status
        if self.coordinator is not None:
            statuses["coordinator"] = self.coordinator.stop()
        return statuses

"""A stream of DeViT and split requests whose every outcome is accounted for, and memory sampling.

`RequestStream` runs client threads against a coordinator (DeViT requests) and edge daemons
(split requests), each call under a deadline, bounded in count and time, and classifies how
every request ended:

* ``full``: answered OK with well-formed logits;
* ``degraded``: answered OK while a device was missing (DeViT ``degraded``) or the coordinator
  was unreachable (split ``fallback``: the device answered alone);
* ``refused``: a non-OK status with a message that says why (UNAVAILABLE, FAILED_PRECONDITION, ...);
* ``timed_out``: the client's own deadline fired (DEADLINE_EXCEEDED): nothing answered in time,
  e.g. a frozen daemon;
* ``lost``: anything else - INTERNAL/UNKNOWN, an answer later than its deadline, a malformed
  answer, a client-side exception. The target is zero.

`RssSampler` records the resident memory of daemon processes while the stream runs. The stream
also runs as a program (``python -m coinfer.bench.faults``), which is how the testbed
benchmark drives it from inside a network namespace.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

OUTCOMES = ("full", "degraded", "refused", "timed_out", "lost")
LATE_SLACK_S = 1.0
"""An answer this much after its deadline counts as lost (the deadline did not hold)."""


@dataclass(frozen=True)
class StreamConfig:
    """Who sends what, and the bounds of the stream."""

    devit_address: str | None
    """Where DeViT requests go (the coordinator's front door); None = no DeViT requests."""
    devit_model: str | None
    split_addresses: tuple[str, ...]
    """Edge front doors split requests go to (each split client sticks to one)."""
    split_model: str | None
    devit_clients: int = 2
    split_clients_per_edge: int = 1
    deadline_s: float = 5.0
    """Deadline of every request."""
    retry_pause_s: float = 0.1
    """A client pauses this long after a refused or timed-out request, as a real client backs off."""
    duration_s: float = 60.0
    """The stream stops after this long..."""
    max_requests: int = 1_000_000
    """...or after this many requests, whichever comes first."""
    seed: int = 0


@dataclass(frozen=True)
class RequestRecord:
    """How one request ended."""

    kind: str
    """"devit" or "split"."""
    target: str
    """Address the request went to."""
    started_s: float
    """Seconds since the stream started."""
    seconds: float
    outcome: str
    code: str
    """gRPC status code name ("OK" when answered)."""
    detail: str = ""
    """The refusal's message, or what was missing/why the device answered alone."""


def classify(code_name: str, details: str, seconds: float, deadline_s: float) -> str:
    """The outcome of a request that ended with status ``code_name`` (not OK) after ``seconds``."""
    if seconds > deadline_s + LATE_SLACK_S:
        return "lost"
    if code_name == "DEADLINE_EXCEEDED":
        return "timed_out"
    if code_name in ("INTERNAL", "UNKNOWN") or not details:
        return "lost"
    return "refused"


class RequestStream:
    """Client threads sending requests until stopped, the duration passes, or the count is reached."""

    def __init__(self, config: StreamConfig, images: np.ndarray) -> None:
        self.config = config
        self.images = np.ascontiguousarray(images, dtype=np.uint8)
        self.records: list[RequestRecord] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._sent = 0
        self.started_at = 0.0

    def _plan(self) -> list[tuple[str, str, str]]:
        c = self.config
        plan = [("devit", c.devit_address, c.devit_model)] * c.devit_clients if c.devit_address and c.devit_model else []
        if c.split_model:
            plan += [("split", address, c.split_model) for address in c.split_addresses for _ in range(c.split_clients_per_edge)]
        return plan

    def start(self) -> None:
        self.started_at = time.monotonic()
        for k, (kind, address, model) in enumerate(self._plan()):
            thread = threading.Thread(target=self._client, args=(k, kind, address, model), name=f"stream-{k}", daemon=True)
            self._threads.append(thread)
            thread.start()

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout_s: float | None = None) -> list[RequestRecord]:
        """Wait for every client to finish its last request; returns every record."""
        for thread in self._threads:
            thread.join(timeout_s)
        with self._lock:
            return list(self.records)

    def run(self) -> list[RequestRecord]:
        """Start, wait for the bounds, join."""
        self.start()
        self._stop.wait(self.config.duration_s)
        self.stop()
        return self.join(self.config.deadline_s + 10.0)

    def _take_ticket(self) -> bool:
        with self._lock:
            if self._sent >= self.config.max_requests:
                return False
            self._sent += 1
            return True

    def _client(self, k: int, kind: str, address: str, model: str) -> None:
        import grpc

        from coinfer.protos import inference_pb2_grpc as pb_grpc
        from coinfer.protos.oip import build_infer_request, infer_response_outputs, parameters_from_proto
        from coinfer.serving.security import open_channel

        rng = random.Random(self.config.seed * 1000 + k)
        deadline_s = self.config.deadline_s
        end = self.started_at + self.config.duration_s
        with open_channel(address) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            while not self._stop.is_set() and time.monotonic() < end and self._take_ticket():
                i = rng.randrange(len(self.images))
                request = build_infer_request(model, {"image": self.images[i : i + 1]}, request_id=f"s{k}-{i}")
                started = time.monotonic()
                code, detail, outcome = "OK", "", "full"
                try:
                    reply = stub.ModelInfer(request, timeout=deadline_s)
                    seconds = time.monotonic() - started
                    logits = infer_response_outputs(reply)["logits"]
                    params = parameters_from_proto(reply.parameters)
                    if logits.shape[0] != 1 or not np.isfinite(logits).all() or seconds > deadline_s + LATE_SLACK_S:
                        outcome, detail = "lost", f"malformed or late answer: shape {list(logits.shape)}, {seconds:.2f} s"
                    elif params.get("degraded") or params.get("fallback"):
                        outcome = "degraded"
                        detail = str(params.get("missing_reason") or params.get("fallback_reason") or "")
                except grpc.RpcError as exc:
                    seconds = time.monotonic() - started
                    code, detail = exc.code().name, exc.details() or ""
                    outcome = classify(code, detail, seconds, deadline_s)
                except Exception as exc:  # noqa: BLE001 - a client-side failure is an outcome too
                    seconds = time.monotonic() - started
                    code, detail, outcome = "CLIENT_ERROR", f"{type(exc).__name__}: {exc}", "lost"
                record = RequestRecord(kind, address, started - self.started_at, seconds, outcome, code, detail[:300])
                with self._lock:
                    self.records.append(record)
                if outcome in ("refused", "timed_out"):
                    self._stop.wait(self.config.retry_pause_s)


def _percentiles_ms(seconds: list[float]) -> dict[str, float]:
    if not seconds:
        return {"p50": float("nan"), "p99": float("nan"), "max": float("nan")}
    p50, p99 = np.percentile(np.asarray(seconds) * 1e3, [50, 99])
    return {"p50": float(p50), "p99": float(p99), "max": float(max(seconds) * 1e3)}


def summarise(records: Iterable[RequestRecord], duration_s: float | None = None) -> dict:
    """Counts per outcome (overall and per kind), latencies, throughput and a few examples."""
    records = list(records)

    def block(rs: list[RequestRecord]) -> dict:
        out: dict = {"sent": len(rs), **{o: sum(r.outcome == o for r in rs) for o in OUTCOMES}}
        out["answered"] = out["full"] + out["degraded"]
        out["latency_ms"] = _percentiles_ms([r.seconds for r in rs if r.outcome in ("full", "degraded")])
        out["codes"] = {c: sum(r.code == c for r in rs) for c in sorted({r.code for r in rs})}
        return out

    summary = block(records)
    summary["by_kind"] = {kind: block([r for r in records if r.kind == kind]) for kind in sorted({r.kind for r in records})}
    if duration_s:
        summary["throughput_per_s"] = summary["answered"] / duration_s
    summary["examples"] = {
        o: sorted({f"{r.kind} {r.code}: {r.detail[:160]}" for r in records if r.outcome == o})[:4] for o in OUTCOMES if o != "full"
    }
    return summary


@dataclass
class RssSampler:
    """Samples the resident memory of processes every ``period_s`` (pids may change: a restart)."""

    pids: Callable[[], dict[str, int]]
    """name -> pid of every process to sample now."""
    period_s: float = 2.0
    samples: list[tuple[float, str, int]] = field(default_factory=list)
    """(seconds since start, name, rss bytes)."""

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = 0.0

    def start(self) -> None:
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)

    def elapsed_s(self) -> float:
        """Seconds since the sampler started (the time base of `samples`)."""
        return time.monotonic() - self._started

    def _run(self) -> None:
        import psutil

        while True:
            now = time.monotonic() - self._started
            for name, pid in self.pids().items():
                try:
                    self.samples.append((now, name, psutil.Process(pid).memory_info().rss))
                except psutil.Error:
                    pass  # gone (killed on purpose) or not started yet
            if self._stop.wait(self.period_s):
                return

    def growth(self, name: str, since_s: float = 0.0, until_s: float | None = None) -> dict:
        """RSS of ``name`` at the first and last sample in [since_s, until_s], in MiB, and the growth."""
        points = [(t, rss) for t, n, rss in self.samples if n == name and t >= since_s and (until_s is None or t <= until_s)]
        if not points:
            return {"samples": 0}
        first, last = points[0][1], points[-1][1]
        return {
            "samples": len(points),
            "first_mib": first / 2**20,
            "last_mib": last / 2**20,
            "max_mib": max(r for _, r in points) / 2**20,
            "growth_mib": (last - first) / 2**20,
            "growth_pct": 100.0 * (last - first) / first if first else float("nan"),
        }


def wait_whole(coordinator: str | None, devit_model: str | None, edges: Iterable[str], split_model: str | None,
               image: np.ndarray, timeout_s: float) -> float:
    """Block until DeViT answers without a missing device and every edge answers without falling back; seconds taken."""
    from coinfer.core.errors import CoinferError, Unavailable
    from coinfer.serving.client import InferenceClient

    started = time.monotonic()
    targets = ([(coordinator, devit_model, "degraded")] if coordinator and devit_model else [])
    targets += [(edge, split_model, "fallback") for edge in edges] if split_model else []
    for address, model, flag in targets:
        with InferenceClient(address, timeout_s=10) as client:
            while True:
                try:
                    if not client.infer(model, {"image": image}).parameters.get(flag):
                        break
                except CoinferError:
                    pass  # not registered, not loaded, or not reachable yet
                if time.monotonic() - started > timeout_s:
                    raise Unavailable(f"{model} at {address} did not answer whole within {timeout_s:.0f} s")
                time.sleep(0.2)
    return time.monotonic() - started


def main(argv: list[str] | None = None) -> int:
    """Run one stream and write its records and summary as JSON (used inside testbed namespaces)."""
    p = argparse.ArgumentParser(prog="python -m coinfer.bench.faults", description=__doc__.split("\n")[0])
    p.add_argument("--coordinator", help="coordinator front door for DeViT requests")
    p.add_argument("--devit-model")
    p.add_argument("--edge", action="append", default=[], help="edge front door for split requests (repeat)")
    p.add_argument("--split-model")
    p.add_argument("--devit-clients", type=int, default=2)
    p.add_argument("--split-clients-per-edge", type=int, default=1)
    p.add_argument("--deadline-s", type=float, default=5.0)
    p.add_argument("--duration-s", type=float, default=60.0)
    p.add_argument("--max-requests", type=int, default=1_000_000)
    p.add_argument("--wait-ready-s", type=float, default=0.0, help="first wait this long at most for every model to answer whole")
    p.add_argument("--out", type=Path, required=True, help="JSON file for the records and summary")
    args = p.parse_args(argv)
    from coinfer.core.data import load_dataset

    images = load_dataset("digits", seed=0).test.x
    if args.wait_ready_s:
        wait_whole(args.coordinator, args.devit_model, args.edge, args.split_model, images[:1], args.wait_ready_s)

    config = StreamConfig(
        args.coordinator, args.devit_model, tuple(args.edge), args.split_model, args.devit_clients, args.split_clients_per_edge,
        args.deadline_s, duration_s=args.duration_s, max_requests=args.max_requests,
    )
    stream = RequestStream(config, images)
    print("STARTED", flush=True)
    records = stream.run()
    tmp = args.out.with_name(args.out.name + ".tmp")
    tmp.write_text(json.dumps({"summary": summarise(records, args.duration_s), "records": [asdict(r) for r in records]}))
    tmp.replace(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The phases of the fleet placement benchmark, run inside the testbed's server namespace.

    python -m coinfer.bench.placement_phases --prefix P --state-dir D --bundles B --run-dir R --out FILE \
        --rounds 3 --requests 150

`fleet_placement.py` builds the bundles and the testbed, then runs this, which first moves into
the server's network namespace (where the coordinator listens and every device can be reached;
it keeps the host's /sys, so the devices' cgroups stay writable), and summarises what it writes.
Each phase restarts the coordinator with the phase's bundle and placement, with the edges paused
(SIGSTOP) and resumed one at a time in the phase's order, so that they register in that order;
the count placement's mapping depends on it.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from coinfer.bench.fleet import Fleet
from coinfer.bench.script import machine_snapshot

COORDINATOR_PORT, EDGE_PORT = 8001, 8101
WARMUP_REQUESTS = 10
SETTLE_TIMEOUT_S = 180.0
CHURN_TIMEOUT_S = 20.0
"""Device timeout of the churn phase's coordinator is this much smaller: see `churn_phase`."""
MACHINE_NOTE = "phase measured while other engineers' jobs may run on this machine"


@dataclass(frozen=True)
class Phase:
    description: str
    bundle: str
    """Key of the bundle (`fleet_placement.build_bundles`)."""
    model: str
    placement: str = "speed"
    order: tuple[int, ...] = (0, 1, 2, 3)
    """Order in which the edges register after the coordinator restarts."""


PHASES: dict[str, Phase] = {
    "speed": Phase("(a) bundle sized for 1,1,0.5,0.5, placed by speed", "hetero", "fleet-hetero"),
    # Count placement in this order leaves sub-models 0 and 1 (sized for speed 1) on edges 2 and 3 (0.25 core).
    "count_worst": Phase("(b) the same bundle placed by count, slow devices holding the large sub-models", "hetero", "fleet-hetero",
                         "count", (2, 0, 3, 1)),
    "equal_bundle": Phase("(c) bundle sized for equal speeds, placed by speed", "equal", "fleet-equal"),
    "teacher": Phase("(d) the teacher alone, run whole on edge 0 (0.5 core)", "teacher-split", "fleet-teacher"),
}


def _cpu_s(pid: int) -> float:
    import psutil

    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


class Runner:
    """The fleet on the testbed and what the phases share."""

    def __init__(self, args: argparse.Namespace) -> None:
        from coinfer.core.data import load_dataset
        from coinfer.testbed import Testbed

        self.tb = Testbed.attach(args.prefix, args.state_dir)
        self.bundles = Path(args.bundles)
        self.paths = {"hetero": self.bundles / "fleet-hetero", "equal": self.bundles / "fleet-equal",
                      "teacher-split": self.bundles / "fleet-teacher"}
        self.fleet = Fleet(
            args.run_dir, num_edges=4, threads=1, listen=f"{self.tb.server_address}:{COORDINATOR_PORT}",
            edge_listen=lambda i: f"{self.tb.device_address(i)}:{EDGE_PORT}", edge_argv=self.tb.device_argv, calibrate=True,
        )
        test = load_dataset("digits", seed=0).test
        self.images, self.labels = test.x, test.y
        self.references = self._references()

    def _references(self) -> dict[str, np.ndarray]:
        """Logits of each model run whole in this process (what the runtime must reproduce)."""
        import torch

        from coinfer.core.bundle import load_bundle
        from coinfer.core.data import to_float
        from coinfer.server.devit_service import DeViTServing

        out = {}
        for key in ("hetero", "equal"):
            serving = DeViTServing(load_bundle(self.paths[key]))
            out[key] = serving.run_local(self.images)
            serving.close()
        with torch.inference_mode():
            out["teacher-split"] = load_bundle(self.paths["teacher-split"]).load_module("model")(to_float(self.images)).numpy()
        return out

    def calibrate_one_by_one(self) -> dict[str, float]:
        """Each device measures its speed again while the others are idle (at start they all
        calibrated at once, importing torch beside each other)."""
        from coinfer.server.fleet import calibrate_fleet, list_fleet

        names = {e.name for e in self.fleet.edges}
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        while not names <= {d.name for d in list_fleet(self.fleet.address).live}:
            if time.monotonic() > deadline:
                raise TimeoutError("the edges did not all register:\n" + "\n".join(e.log_tail(5) for e in self.fleet.edges))
            time.sleep(0.2)
        for edge in self.fleet.edges:
            calibrate_fleet(self.fleet.address, [edge.name], timeout_s=60)
        speeds = {d.name: d.reported_speed for d in list_fleet(self.fleet.address).live}
        print(f"      calibrated speeds: {', '.join(f'{k} {v:.3f}' for k, v in speeds.items())}", flush=True)
        return speeds

    # Coordinator restarts ---------------------------------------------------------------------

    def restart(self, phase: Phase, extra: Sequence[str] = ()) -> None:
        """The coordinator restarted for ``phase``; the edges register again in its order."""
        from coinfer.server.fleet import list_fleet

        for edge in self.fleet.edges:
            os.kill(edge.process.pid, signal.SIGSTOP)
        try:
            self.fleet.start_coordinator([self.paths[phase.bundle]], [
                "--insecure", "--heartbeat-s", "0.5", "--placement", phase.placement, *extra])
        finally:
            for i in phase.order:
                edge = self.fleet.edges[i]
                os.kill(edge.process.pid, signal.SIGCONT)
                deadline = time.monotonic() + 60
                while edge.name not in {d.name for d in list_fleet(self.fleet.address).live}:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"{edge.name} did not register again:\n{edge.log_tail()}")
                    time.sleep(0.05)

    def settle(self, phase: Phase) -> dict[str, Any]:
        """Wait until every sub-model sits loaded on one device (and, placed by speed, the
        expected critical path is the optimum); the placement then."""
        from coinfer.serving.client import InferenceClient
        from coinfer.server.fleet import list_fleet

        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        if phase.bundle == "teacher-split":
            with InferenceClient(self.fleet.edges[0].address, timeout_s=30) as client:
                client.wait_until_ready(phase.model, timeout_s=SETTLE_TIMEOUT_S)
            return {}
        while True:
            listing = list_fleet(self.fleet.address)
            held = [(d.name, s) for d in listing.live for s in d.submodels]
            primaries = [s.index for _, s in held if not s.replica]
            model = listing.models[0]
            settled = (  # each sub-model on one device (none still handed over), all loaded
                sorted(primaries) == [0, 1, 2, 3] and all(s.loaded for _, s in held)
                and (phase.placement != "speed" or model.critical_path_ms <= 1.05 * model.optimal_critical_path_ms + 1e-6)
            )
            if settled:
                return {
                    "placement": {d.name: [s.index for s in d.submodels if not s.replica] for d in listing.live},
                    "speeds": {d.name: d.speed for d in listing.live},
                    "expected_critical_path_ms": model.critical_path_ms,
                    "optimal_critical_path_ms": model.optimal_critical_path_ms,
                }
            if time.monotonic() > deadline:
                raise TimeoutError(f"placement did not settle in {SETTLE_TIMEOUT_S:.0f} s: {held}")
            time.sleep(0.2)

    # Measuring -------------------------------------------------------------------------------

    def measure(self, name: str, phase: Phase, requests: int) -> dict[str, Any]:
        from coinfer.serving.client import InferenceClient

        self.restart(phase, ["--split-point", "1"] if phase.bundle == "teacher-split" else [])
        placement = self.settle(phase)
        address = self.fleet.edges[0].address if phase.bundle == "teacher-split" else self.fleet.address
        pids = {"coordinator": self.fleet.coordinator.process.pid, **{e.name: e.process.pid for e in self.fleet.edges}}
        latency, compute, predicted, degraded = [], [], [], 0
        machine = machine_snapshot(MACHINE_NOTE)
        with InferenceClient(address, timeout_s=30) as client:
            for i in range(WARMUP_REQUESTS):
                client.infer(phase.model, {"image": self.images[i : i + 1]})
            cpu_before = {k: _cpu_s(pid) for k, pid in pids.items()}
            for i in range(requests):
                image = self.images[i % len(self.images)][None]
                started = time.perf_counter()
                reply = client.infer(phase.model, {"image": image})
                latency.append((time.perf_counter() - started) * 1e3)
                compute.append(float(reply.parameters["compute_ms"]))
                degraded += bool(reply.parameters.get("degraded", False))
                predicted.append(int(reply.outputs["logits"][0].argmax()))
            cpu_ms = {k: (_cpu_s(pid) - cpu_before[k]) / requests * 1e3 for k, pid in pids.items()}
        indices = [i % len(self.images) for i in range(requests)]
        reference = self.references[phase.bundle][indices].argmax(1)
        result = {
            "description": phase.description,
            "latency_ms": latency,
            "compute_ms": compute,
            "degraded": degraded,
            "accuracy": float(np.mean(np.array(predicted) == self.labels[indices])),
            "agreement_with_in_process": float(np.mean(np.array(predicted) == reference)),
            "cpu_ms_per_request": cpu_ms,
            "machine": machine,
            **placement,
        }
        print(f"      {name:<13} p50 {np.percentile(latency, 50):6.1f} ms  compute p50 {np.percentile(compute, 50):6.1f} ms  "
              f"placement {placement.get('placement', 'edge-0')}  load {machine['load_average_1m']:.1f}", flush=True)
        return result

    # Churn -----------------------------------------------------------------------------------

    def churn(self) -> dict[str, Any]:
        """Stream requests while edge 4 joins and then edge 0 (a fast one) is killed."""
        from coinfer.serving.client import InferenceClient
        from coinfer.server.fleet import list_fleet

        phase = PHASES["speed"]
        self.restart(phase, ["--device-timeout-s", "2"])
        self.settle(phase)
        log: list[dict[str, Any]] = []
        stop = threading.Event()

        def stream() -> None:
            with InferenceClient(self.fleet.address, timeout_s=10) as client:
                i = 0
                while not stop.is_set():
                    i += 1
                    started = time.monotonic()
                    entry: dict[str, Any] = {"t": started}
                    try:
                        reply = client.infer(phase.model, {"image": self.images[i % len(self.images)][None]})
                        entry.update(ok=True, degraded=bool(reply.parameters["degraded"]))
                    except Exception as exc:  # noqa: BLE001 - every failure counts as a lost request
                        entry.update(ok=False, error=f"{type(exc).__name__}: {exc}")
                    entry["latency_ms"] = (time.monotonic() - started) * 1e3
                    log.append(entry)

        streamer = threading.Thread(target=stream, name="churn-stream")
        streamer.start()
        joiner = self.fleet.edge_process(4, ["--insecure"])
        self.fleet.edges.append(joiner)
        t_start_join = time.monotonic()
        joiner.start(timeout_s=SETTLE_TIMEOUT_S)
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        while True:  # joined: registered and holding its replica
            listing = list_fleet(self.fleet.address)
            mine = [d for d in listing.live if d.name == joiner.name]
            if mine and mine[0].submodels and all(s.loaded for s in mine[0].submodels):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"{joiner.name} never held a sub-model:\n{joiner.log_tail()}")
            time.sleep(0.1)
        t_joined = time.monotonic()
        victim = self.fleet.edges[0]
        os.kill(victim.process.pid, signal.SIGKILL)
        t_kill = time.monotonic()
        samples = []
        recovered_at = None
        while time.monotonic() - t_kill < CHURN_TIMEOUT_S and streamer.is_alive():
            listing = list_fleet(self.fleet.address)
            model = listing.models[0]
            primaries = [s for d in listing.live for s in d.submodels if not s.replica]
            whole = (victim.name not in {d.name for d in listing.live} and len({s.index for s in primaries if s.loaded}) == 4)
            within = model.critical_path_ms <= 1.10 * model.optimal_critical_path_ms + 1e-6
            samples.append({"t": time.monotonic() - t_kill, "critical_path_ms": model.critical_path_ms,
                            "optimal_ms": model.optimal_critical_path_ms, "whole": whole})
            if whole and within and recovered_at is None:
                recovered_at = time.monotonic()
                break
            time.sleep(0.1)
        time.sleep(2.0)  # a few more requests on the recovered placement
        stop.set()
        streamer.join()
        after = [e for e in log if e["t"] >= t_kill]
        first_whole = next((e["t"] - t_kill for e in after if e.get("ok") and not e.get("degraded")), None)
        result = {
            "requests": len(log),
            "lost": sum(1 for e in log if not e["ok"]),
            "errors": sorted({e["error"] for e in log if not e["ok"]})[:5],
            "degraded": sum(1 for e in log if e.get("degraded")),
            "join_s": t_joined - t_start_join,
            "recovery_s": recovered_at - t_kill if recovered_at is not None else None,
            "first_whole_answer_after_kill_s": first_whole,
            "device_timeout_s": 2.0,
            "samples": samples,
            "final_placement": {d.name: [(s.index, s.replica) for s in d.submodels] for d in list_fleet(self.fleet.address).live},
        }
        print(f"      churn: {result['requests']} requests, {result['lost']} lost, {result['degraded']} degraded; "
              f"recovered {result['recovery_s']} s after the kill", flush=True)
        return result


def run(args: argparse.Namespace) -> dict[str, Any]:
    runner = Runner(args)
    raw: dict[str, Any] = {"machine_start": machine_snapshot(MACHINE_NOTE), "phases": {}}
    fleet = runner.fleet
    try:
        fleet.start_coordinator([runner.paths["hetero"]], ["--insecure", "--heartbeat-s", "0.5"])
        fleet.start_edges(["--insecure"], timeout_s=SETTLE_TIMEOUT_S)
        raw["calibrated_speeds"] = runner.calibrate_one_by_one()
        for r in range(args.rounds):
            print(f"    round {r + 1} of {args.rounds}", flush=True)
            for name, phase in PHASES.items():
                raw["phases"].setdefault(name, []).append(runner.measure(name, phase, args.requests))
        raw["churn"] = runner.churn()
    finally:
        for edge in fleet.edges:
            if edge.process is not None and edge.process.poll() is None:
                os.kill(edge.process.pid, signal.SIGCONT)
        raw["exit_statuses"] = fleet.stop()
    return raw


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m coinfer.bench.placement_phases", description=__doc__.split("\n")[0])
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--bundles", type=Path, required=True)
    parser.add_argument("--run-dir", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the four phases (default 3)")
    parser.add_argument("--requests", type=int, default=150, help="timed requests per phase and round (default 150)")
    args = parser.parse_args(argv)
    from coinfer.testbed import Testbed, netns

    netns.enter_namespace(Testbed.attach(args.prefix, args.state_dir).server_namespace)  # before any thread starts
    raw = run(args)
    args.out.write_text(json.dumps(raw, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Constants and helpers of the reliability tests (a uniquely named module, not conftest, so that
`from reliability_helpers import ...` cannot pick up another folder's conftest)."""

from __future__ import annotations

import time

import numpy as np

SPLIT_MODEL = "rel-split"
DEVIT_MODEL = "rel-devit"
MAX_MESSAGE_BYTES = 1 << 20
DEADLINE_S = 20.0


class Cluster:
    """A coordinator and two edge daemons in this process."""

    def __init__(self, coordinator, edges) -> None:
        self.coordinator = coordinator
        self.edges = edges

    @property
    def addresses(self) -> dict[str, str]:
        """Front door addresses by role name ("coordinator", "edge-0", ...)."""
        out = {"coordinator": self.coordinator.address}
        out.update({f"edge-{i}": e.address for i, e in enumerate(self.edges)})
        return out


def wait_whole(address: str, timeout_s: float = 60.0) -> None:
    """Block until both models answer at ``address`` without degradation or fallback."""
    from coinfer.serving.client import InferenceClient

    image = np.zeros((1, 1, 8, 8), np.uint8)
    deadline = time.monotonic() + timeout_s
    with InferenceClient(address, timeout_s=DEADLINE_S) as client:
        for model in (DEVIT_MODEL, SPLIT_MODEL):
            client.wait_until_ready(model, timeout_s=timeout_s)
            while True:
                p = client.infer(model, {"image": image}).parameters
                if not p.get("degraded") and not p.get("fallback"):
                    break
                assert time.monotonic() < deadline, f"{model} at {address} never answered whole: {p}"
                time.sleep(0.1)


def wait_for_log(caplog, logger: str, text: str, count: int = 2, timeout_s: float = 60.0) -> list[str]:
    """Block until ``logger`` has logged ``count`` records containing ``text``; returns their messages.

    The positive sign that a daemon tried and failed (rather than a sleep after which nothing
    happened): call ``caplog.set_level(logging.WARNING, logger=...)`` before starting the daemon.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        found = [r.getMessage() for r in list(caplog.records) if r.name == logger and text in r.getMessage()]
        if len(found) >= count:
            return found
        assert time.monotonic() < deadline, f"{logger} logged {len(found)} of {count} records with {text!r} in {timeout_s} s"
        time.sleep(0.05)

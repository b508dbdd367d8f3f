"""Raw gRPC calls: a request as serialised bytes, the statuses that answer it precisely, and sending it.

The malformed-request catalogue (`coinfer.bench.malformed`) builds `MalformedCall`s; the
reliability tests and benchmark send them with `send`, which goes through generic calls so that
bytes that are not a valid message at all can be sent too, and reads every answer as an `Outcome`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import grpc

Code = grpc.StatusCode
OIP = "/inference.GRPCInferenceService/"
COORDINATOR = "/coinfer.v1.Coordinator/"
EDGE = "/coinfer.v1.Edge/"
IMPRECISE = frozenset({Code.INTERNAL, Code.UNKNOWN})
"""Statuses that say nothing useful: a bug, or gRPC's own answer to an undecodable message."""


@dataclass(frozen=True)
class MalformedCall:
    """One request ready to send, and the statuses that answer it precisely."""

    case: str
    service: str
    """"oip", "coordinator" or "edge"."""
    path: str
    """Full method path, e.g. /inference.GRPCInferenceService/ModelInfer."""
    payload: bytes
    """The serialised request (or bytes that are not one)."""
    expected: frozenset[grpc.StatusCode]
    streaming: bool = False
    """A server-streaming method (FetchPart)."""


@dataclass(frozen=True)
class Outcome:
    """How a daemon answered one call."""

    code: grpc.StatusCode
    details: str
    seconds: float
    response: bytes = b""
    """The serialised response of a unary call answered OK."""

    @property
    def precise(self) -> bool:
        """A non-OK status other than INTERNAL/UNKNOWN, with a message."""
        return self.code not in IMPRECISE and self.code is not Code.OK and bool(self.details)


def send(channel: grpc.Channel, call: MalformedCall, timeout_s: float) -> Outcome:
    """Send the call's bytes under a deadline; never raises for a status."""
    identity = lambda b: b  # noqa: E731 - payloads are bytes both ways
    started = time.perf_counter()
    response = b""
    try:
        if call.streaming:
            for _ in channel.unary_stream(call.path, request_serializer=identity, response_deserializer=identity)(call.payload, timeout=timeout_s):
                pass
        else:
            response = channel.unary_unary(call.path, request_serializer=identity, response_deserializer=identity)(call.payload, timeout=timeout_s)
        code, details = Code.OK, ""
    except grpc.RpcError as exc:
        code, details = exc.code(), exc.details() or ""
    return Outcome(code, details, time.perf_counter() - started, response)

"""The coordinator's channels to edge daemons (for the DeViT fan-out), one per address, reused.

Channels are opened on first use with the coordinator's client security (CA to verify edges,
its own certificate for mutual TLS, the bearer token) and closed when the address changes or
the coordinator stops. A call to a dead device fails fast (connection refused) rather than
waiting for its deadline, because calls are not `wait_for_ready`.
"""

from __future__ import annotations

import threading

import grpc

from coinfer.protos import coinfer_v1_pb2_grpc as v1_grpc
from coinfer.serving.security import ClientSecurity, open_channel


class EdgeClients:
    """Edge service stubs by device address."""

    def __init__(self, security: ClientSecurity | None = None, max_message_bytes: int | None = None) -> None:
        self._security = security or ClientSecurity()
        self._max_message_bytes = max_message_bytes
        self._channels: dict[str, tuple[grpc.Channel, v1_grpc.EdgeStub]] = {}
        self._lock = threading.Lock()

    def stub(self, address: str) -> v1_grpc.EdgeStub:
        with self._lock:
            entry = self._channels.get(address)
            if entry is None:
                kwargs = {} if self._max_message_bytes is None else {"max_message_bytes": self._max_message_bytes}
                channel = open_channel(address, self._security, **kwargs)
                entry = self._channels[address] = (channel, v1_grpc.EdgeStub(channel))
            return entry[1]

    def forget(self, address: str) -> None:
        with self._lock:
            entry = self._channels.pop(address, None)
        if entry is not None:
            entry[0].close()

    def close(self) -> None:
        with self._lock:
            entries = list(self._channels.values())
            self._channels.clear()
        for channel, _ in entries:
            channel.close()

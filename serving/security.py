"""Transport security options of the daemons and their clients: TLS, mutual TLS, bearer token.

One option object per side. A server with no certificate listens in plaintext, which is only
allowed on a loopback address unless the caller says otherwise (`serving.ServerOptions`). A
token works with or without TLS; over plaintext it only keeps honest mistakes out.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import grpc

from coinfer.core.errors import InvalidInput, NotFound


def _read(path: Path | None, what: str) -> bytes | None:
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except FileNotFoundError as exc:
        raise NotFound(f"{what} file {path} does not exist") from exc


@dataclass(frozen=True)
class ServerSecurity:
    """How a daemon authenticates itself and its callers."""

    cert_file: Path | None = None
    """PEM certificate chain of the server; with key_file, turns TLS on."""
    key_file: Path | None = None
    """PEM private key of the server."""
    client_ca_file: Path | None = None
    """PEM CA bundle; when set, clients must present a certificate it signed (mutual TLS)."""
    token: str | None = None
    """Bearer token every call must carry (health checks excepted)."""

    @property
    def tls(self) -> bool:
        return self.cert_file is not None

    def credentials(self) -> grpc.ServerCredentials | None:
        """Server credentials, or None for a plaintext port."""
        if (self.cert_file is None) != (self.key_file is None):
            raise InvalidInput("TLS needs both a certificate file and a key file")
        if self.cert_file is None:
            if self.client_ca_file is not None:
                raise InvalidInput("mutual TLS (a client CA) needs the server's own certificate and key")
            return None
        cert = _read(self.cert_file, "certificate")
        key = _read(self.key_file, "key")
        ca = _read(self.client_ca_file, "client CA")
        return grpc.ssl_server_credentials(
            [(key, cert)], root_certificates=ca, require_client_auth=ca is not None
        )


@dataclass(frozen=True)
class ClientSecurity:
    """How a client reaches a daemon: trusted CA, its own certificate (mTLS), bearer token."""

    ca_file: Path | None = None
    """PEM CA bundle to verify the server with; turns TLS on."""
    cert_file: Path | None = None
    """PEM certificate chain of the client, for mutual TLS."""
    key_file: Path | None = None
    """PEM private key of the client, for mutual TLS."""
    token: str | None = None
    """Bearer token sent as `authorization` metadata on every call."""
    server_name_override: str | None = None
    """Name to check the server certificate against when it differs from the dialled host."""

    @property
    def tls(self) -> bool:
        return self.ca_file is not None

    def credentials(self) -> grpc.ChannelCredentials | None:
        """Channel credentials, or None for a plaintext channel."""
        if (self.cert_file is None) != (self.key_file is None):
            raise InvalidInput("a client certificate needs both a certificate file and a key file")
        if self.ca_file is None:
            if self.cert_file is not None:
                raise InvalidInput("a client certificate needs TLS: give the CA file too")
            return None
        return grpc.ssl_channel_credentials(
            root_certificates=_read(self.ca_file, "CA"),
            private_key=_read(self.key_file, "key"),
            certificate_chain=_read(self.cert_file, "certificate"),
        )


class _MetadataInterceptor(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds fixed metadata (the bearer token) to every call of a channel."""

    def __init__(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self._metadata = metadata

    def _with_metadata(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        return _CallDetails(
            details.method,
            details.timeout,
            tuple(details.metadata or ()) + self._metadata,
            details.credentials,
            getattr(details, "wait_for_ready", None),
            getattr(details, "compression", None),
        )

    def intercept_unary_unary(self, continuation: Callable[..., Any], details: grpc.ClientCallDetails, request: Any) -> Any:
        return continuation(self._with_metadata(details), request)

    def intercept_unary_stream(self, continuation: Callable[..., Any], details: grpc.ClientCallDetails, request: Any) -> Any:
        return continuation(self._with_metadata(details), request)

    def intercept_stream_unary(self, continuation: Callable[..., Any], details: grpc.ClientCallDetails, requests: Any) -> Any:
        return continuation(self._with_metadata(details), requests)

    def intercept_stream_stream(self, continuation: Callable[..., Any], details: grpc.ClientCallDetails, requests: Any) -> Any:
        return continuation(self._with_metadata(details), requests)


class _CallDetails(grpc.ClientCallDetails):
    def __init__(self, method: str, timeout: float | None, metadata: Any, credentials: Any, wait_for_ready: Any, compression: Any) -> None:
        self.method = method
        self.timeout = timeout
        self.metadata = metadata
        self.credentials = credentials
        self.wait_for_ready = wait_for_ready
        self.compression = compression


DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024


def open_channel(
    target: str,
    security: ClientSecurity | None = None,
    *,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
) -> grpc.Channel:
    """A channel to ``target`` (host:port) with the given security and message size limits.

    Opening a channel does not connect; the first call does, under that call's deadline.
    """
    security = security or ClientSecurity()
    options: list[tuple[str, Any]] = [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        # Reconnect quickly after an outage (gRPC's default backoff grows to 120 s), so edges
        # re-register within a second or two of the coordinator serving again.
        ("grpc.initial_reconnect_backoff_ms", 200),
        ("grpc.min_reconnect_backoff_ms", 200),
        ("grpc.max_reconnect_backoff_ms", 1000),
    ]
    if security.server_name_override:
        options.append(("grpc.ssl_target_name_override", security.server_name_override))
    credentials = security.credentials()
    channel = grpc.secure_channel(target, credentials, options) if credentials else grpc.insecure_channel(target, options)
    if security.token:
        channel = grpc.intercept_channel(channel, _MetadataInterceptor((("authorization", f"Bearer {security.token}"),)))
    return channel

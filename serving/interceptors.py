"""Server interceptors shared by both daemons: domain errors -> gRPC status, bearer-token check.

Servicers never call ``context.abort``: they raise coinfer errors, and `ErrorInterceptor` is
the one place that turns them into status codes. Anything that is not a `CoinferError` is a bug:
it is logged with its traceback and the client gets INTERNAL with a generic message and a
reference to find the log line, never the exception text (which may leak paths or internals).
"""

from __future__ import annotations

import hmac
import logging
import uuid
from typing import Any, Callable, Iterable, Iterator

import grpc

from coinfer.core.errors import (
    CoinferError,
    DeadlineExceeded,
    FailedPrecondition,
    IntegrityError,
    InvalidInput,
    NotFound,
    ResourceExhausted,
    Unavailable,
)

log = logging.getLogger(__name__)

# Most specific first: a subclass of two listed errors takes the first match.
STATUS_OF_ERROR: tuple[tuple[type[CoinferError], grpc.StatusCode], ...] = (
    (InvalidInput, grpc.StatusCode.INVALID_ARGUMENT),
    (NotFound, grpc.StatusCode.NOT_FOUND),
    (IntegrityError, grpc.StatusCode.DATA_LOSS),
    (Unavailable, grpc.StatusCode.UNAVAILABLE),
    (DeadlineExceeded, grpc.StatusCode.DEADLINE_EXCEEDED),
    (FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (ResourceExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED),
)

Behaviour = Callable[[Any, grpc.ServicerContext], Any]


def status_of(exc: BaseException) -> grpc.StatusCode:
    """The status code a raised exception is answered with."""
    for error_type, code in STATUS_OF_ERROR:
        if isinstance(exc, error_type):
            return code
    return grpc.StatusCode.INTERNAL


def _abort_with(context: grpc.ServicerContext, exc: Exception, method: str) -> None:
    if context.code() not in (None, grpc.StatusCode.OK):
        # The handler already set a status (e.g. aborted itself); keep it.
        raise exc
    code = status_of(exc)
    if code is grpc.StatusCode.INTERNAL:
        ref = uuid.uuid4().hex[:12]
        log.error("internal error in %s (ref %s)", method, ref, exc_info=exc)
        context.abort(code, f"internal server error (ref {ref}); see the server log")
    log.info("%s -> %s: %s", method, code.name, exc)
    context.abort(code, str(exc) or type(exc).__name__)


def _wrap_unary(behaviour: Behaviour, method: str) -> Behaviour:
    def handler(request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return behaviour(request, context)
        except Exception as exc:  # noqa: BLE001 - this is the one place errors become statuses
            _abort_with(context, exc, method)

    return handler


def _wrap_stream(behaviour: Behaviour, method: str) -> Behaviour:
    def handler(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        # Errors of a streaming handler surface while grpc iterates it, so wrap the iteration.
        try:
            yield from behaviour(request, context)
        except Exception as exc:  # noqa: BLE001
            _abort_with(context, exc, method)

    return handler


def _replace_behaviour(handler: grpc.RpcMethodHandler, wrap: Callable[[Behaviour, bool], Behaviour]) -> grpc.RpcMethodHandler:
    # Method handlers built by grpc's helpers are namedtuples: swap the one behaviour that is set.
    for name, streaming_response in (
        ("unary_unary", False),
        ("unary_stream", True),
        ("stream_unary", False),
        ("stream_stream", True),
    ):
        behaviour = getattr(handler, name)
        if behaviour is not None:
            return handler._replace(**{name: wrap(behaviour, streaming_response)})  # type: ignore[attr-defined]
    return handler


class ErrorInterceptor(grpc.ServerInterceptor):
    """Maps coinfer errors to status codes; logs and hides everything else as INTERNAL."""

    def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None], details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(details)
        if handler is None:
            return None
        method = details.method

        def wrap(behaviour: Behaviour, streaming_response: bool) -> Behaviour:
            return _wrap_stream(behaviour, method) if streaming_response else _wrap_unary(behaviour, method)

        return _replace_behaviour(handler, wrap)


class TokenAuthInterceptor(grpc.ServerInterceptor):
    """Requires ``authorization: Bearer <token>`` metadata on every call outside ``exempt``.

    The comparison is constant-time. Health checks are exempt by default so that orchestrators
    can probe a daemon without holding the token.
    """

    def __init__(self, token: str, exempt_prefixes: Iterable[str] = ("/grpc.health.v1.Health/",)) -> None:
        if not token:
            raise InvalidInput("the bearer token must not be empty")
        self._expected = f"Bearer {token}".encode()
        self._exempt = tuple(exempt_prefixes)

    def _authorised(self, details: grpc.HandlerCallDetails) -> bool:
        for key, value in details.invocation_metadata or ():
            if key == "authorization":
                given = value.encode() if isinstance(value, str) else bytes(value)
                return hmac.compare_digest(given, self._expected)
        return False

    def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None], details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        if details.method.startswith(self._exempt) or self._authorised(details):
            return continuation(details)
        handler = continuation(details)
        if handler is None:
            return None

        def deny(_behaviour: Behaviour, _streaming: bool) -> Behaviour:
            def refuse(_request: Any, context: grpc.ServicerContext) -> Any:
                context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")

            return refuse

        return _replace_behaviour(handler, deny)


# Client side: the same table read backwards, so a caller of another daemon raises the domain error.
_ERROR_OF_STATUS: dict[grpc.StatusCode, type[CoinferError]] = {code: error for error, code in STATUS_OF_ERROR}
_ERROR_OF_STATUS[grpc.StatusCode.DEADLINE_EXCEEDED] = Unavailable
GRPC_TIMEOUT_DETAILS = "Deadline Exceeded"
"""What gRPC itself says when a call's deadline passes on the way (a slow or unreachable peer)."""
_ERROR_OF_STATUS[grpc.StatusCode.CANCELLED] = Unavailable
_ERROR_OF_STATUS[grpc.StatusCode.UNAUTHENTICATED] = FailedPrecondition
_ERROR_OF_STATUS[grpc.StatusCode.PERMISSION_DENIED] = FailedPrecondition


def error_from_rpc(exc: grpc.RpcError, what: str) -> CoinferError:
    """The coinfer error a failed call stands for; ``what`` names the call (e.g. "Offload to host:port")."""
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    details = exc.details() if hasattr(exc, "details") else str(exc)
    error_type = _ERROR_OF_STATUS.get(code, CoinferError)
    if code == grpc.StatusCode.DEADLINE_EXCEEDED and details != GRPC_TIMEOUT_DETAILS:
        # The peer's own refusal of a deadline too short to work in, not a peer that is down.
        error_type = DeadlineExceeded
    return error_type(f"{what} failed: {code.name}: {details}")

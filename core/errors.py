"""Domain errors shared by every role.

Each names what went wrong in words a user can act on. The daemons map them to gRPC status
codes in one place; the CLI prints them without a traceback and exits non-zero.
"""

from __future__ import annotations


class CoinferError(Exception):
    """Base class of every error coinfer raises on purpose."""


class InvalidInput(CoinferError, ValueError):
    """A request, argument or file does not have the form it must have."""


class NotFound(CoinferError, LookupError):
    """A named thing (model, device, dataset, file, split point) does not exist."""


class IntegrityError(CoinferError):
    """Bytes do not match their recorded sha256, or a file is truncated."""


class Unavailable(CoinferError):
    """Too few peers answered in time to produce a result."""


class DeadlineExceeded(CoinferError):
    """The caller's deadline leaves no time to do the work it asked for."""


class FailedPrecondition(CoinferError):
    """The request is well formed but the system is not in a state to serve it."""


class ResourceExhausted(CoinferError):
    """A request is larger than the configured limits."""

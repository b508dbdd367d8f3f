"""coinfer's version, readable from every layer (the top package re-exports it).

It is the installed distribution's version, so pyproject.toml is the only place it is written.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("coinfer")
except PackageNotFoundError:  # a source tree on sys.path that was never installed
    __version__ = "0+unknown"

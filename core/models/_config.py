"""Turn a plain mapping (a decoded JSON config) into a frozen config dataclass.

Shared by every model so that a misspelt or missing key is reported the same way everywhere:
by name, together with the keys the model does accept.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, TypeVar

from coinfer.core.errors import InvalidInput

C = TypeVar("C")


def config_from_mapping(cls: type[C], values: Mapping[str, Any], what: str) -> C:
    """Build the dataclass ``cls`` from ``values``; unknown or missing keys raise InvalidInput.

    ``what`` names the model in the message (e.g. ``"vit"``).
    """
    if not isinstance(values, Mapping):
        raise InvalidInput(f"{what}: a model config must be a mapping, got {type(values).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise InvalidInput(
            f"{what}: unknown config key(s) {', '.join(map(repr, unknown))}; "
            f"valid keys: {', '.join(fields)}"
        )
    missing = [
        name
        for name, f in fields.items()
        if name not in values
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise InvalidInput(f"{what}: missing config key(s) {', '.join(map(repr, missing))}")
    try:
        return cls(**values)
    except TypeError as exc:  # e.g. a value of a type the constructor cannot take
        raise InvalidInput(f"{what}: {exc}") from exc


def config_for_arch(cls: type[C], values: Mapping[str, Any], arch: str) -> C:
    """``values`` as the dataclass ``cls`` of model ``arch``; its ``"arch"`` key may be absent, but
    if present must be ``arch``. A mismatch or a bad key raises InvalidInput."""
    if not isinstance(values, Mapping):
        raise InvalidInput(f"{arch}: a model config must be a mapping, got {type(values).__name__}")
    values = dict(values)
    given = values.pop("arch", arch)
    if given != arch:
        raise InvalidInput(f"config is for arch {given!r}, not {arch!r}")
    return config_from_mapping(cls, values, arch)


def check_positive_int(what: str, name: str, value: object, minimum: int = 1) -> None:
    """Raise InvalidInput unless ``value`` is an int (not a bool) of at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidInput(f"{what}: {name} must be an integer >= {minimum}, got {value!r}")

"""Policy files: weights as safetensors beside a JSON description of what they were trained for.

``<stem>.json`` holds a `PolicySpec`; ``<stem>.safetensors`` holds the tensors. Nothing is ever
unpickled. `check_compatible` refuses a policy for a different number of devices, split points,
sub-channels or state features, naming both numbers.
"""

from __future__ import annotations

import json
import math
import reprlib
from collections.abc import Callable
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from coinfer.core.errors import IntegrityError, InvalidInput, NotFound
from coinfer.rl.networks import ACTIVATIONS
from coinfer.rl.scenario import MAX_DEVICES, Scenario
from coinfer.rl.sim.core import feature_names

POLICY_FORMAT = "coinfer.policy/1"
MAX_NETWORK_SIZE = 4096
"""Largest layer width, split-point, sub-channel or power-level count a policy file may ask for:
the networks are built before their weights are read, so a damaged number must fail here, not
as an allocation of terabytes."""
MAX_LAYERS = 16
"""Most hidden layers a policy file may ask for per network."""


@dataclass(frozen=True)
class PolicySpec:
    """What a saved policy was trained for and how to rebuild its networks."""

    algo: str
    """'mahppo' or 'sb3-ppo'."""
    scenario: str
    """Name of the scenario it was trained on."""
    num_devices: int
    """Devices it was trained with (any number up to max_devices for a shared actor)."""
    num_points: int
    """Split points per device."""
    num_subchannels: int
    """Sub-channels."""
    feature_names: tuple[str, ...]
    """Per-device state features, in order."""
    power_low_w: tuple[float, ...]
    """Per-device lowest transmit power it was trained with."""
    power_high_w: tuple[float, ...]
    """Per-device highest transmit power it was trained with."""
    share_actor: bool = False
    """One actor shared by every device (with a device-id input)."""
    max_devices: int = 0
    """Size of the shared actor's device-id input."""
    actor_hidden: tuple[int, ...] = ()
    """Hidden layer sizes of the actor(s)."""
    critic_hidden: tuple[int, ...] = ()
    """Hidden layer sizes of the critic."""
    power_levels: int = 0
    """Discrete power levels (sb3-ppo)."""
    power_scale: str = "linear"
    """How a MAHPPO power head's u in [0, 1] maps onto the power range ('linear' or 'log')."""
    activation: str = "relu"
    """Hidden-layer nonlinearity of a MAHPPO actor ('relu' or 'tanh'; files from before this field are ReLU)."""
    extra: dict = field(default_factory=dict)
    """Training configuration and notes."""

    def to_dict(self) -> dict:
        return {"format": POLICY_FORMAT, **asdict(self)}


def save_policy(path: str | Path, spec: PolicySpec, tensors: dict[str, torch.Tensor]) -> Path:
    """Write ``<stem>.json`` and ``<stem>.safetensors``; returns the JSON path."""
    path = Path(path)
    stem = path.with_suffix("") if path.suffix in (".json", ".safetensors") else path
    stem.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(stem.with_suffix(".safetensors")))
    json_path = stem.with_suffix(".json")
    json_path.write_text(json.dumps(spec.to_dict(), indent=2) + "\n")
    return json_path


def _json_path(path: str | Path) -> Path:
    path = Path(path)
    if path.is_dir():
        path = path / "policy.json"
    elif path.suffix == ".safetensors":
        path = path.with_suffix(".json")
    if not path.is_file():
        raise NotFound(f"no policy file {str(path)!r} (expected policy.json beside policy.safetensors)")
    return path


# Field checks: each returns the value as the spec holds it, or raises _Refused saying what it must be.


class _Refused(Exception):
    """A policy-file field failed its check; the message completes "field 'x' ..."."""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _int_in(low: int, high: int) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        if not (_is_int(value) and low <= value <= high):
            raise _Refused(f"must be an integer from {low} to {high}")
        return value
    return check


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise _Refused("must be a string")
    return value


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _Refused("must be true or false")
    return value


def _names(value: Any) -> tuple[str, ...]:
    if not (isinstance(value, list) and value and all(isinstance(v, str) for v in value)):
        raise _Refused("must be a non-empty list of strings")
    return tuple(value)


def _powers(value: Any) -> tuple[float, ...]:
    if not (isinstance(value, list) and all(_is_number(v) for v in value)):
        raise _Refused("must be a list of finite numbers")
    return tuple(float(v) for v in value)


def _hidden(value: Any) -> tuple[int, ...]:
    if not (isinstance(value, list) and len(value) <= MAX_LAYERS and all(_is_int(v) and 1 <= v <= MAX_NETWORK_SIZE for v in value)):
        raise _Refused(f"must be a list of at most {MAX_LAYERS} layer widths, each from 1 to {MAX_NETWORK_SIZE}")
    return tuple(value)


def _power_scale(value: Any) -> str:
    if value not in ("linear", "log"):
        raise _Refused("must be 'linear' or 'log'")
    return value


def _activation(value: Any) -> str:
    if not isinstance(value, str) or value not in ACTIVATIONS:
        raise _Refused(f"must be one of {', '.join(repr(name) for name in sorted(ACTIVATIONS))}")
    return value


def _table(value: Any) -> dict:
    if not isinstance(value, dict):
        raise _Refused("must be a JSON object")
    return value


_FIELD_CHECKS: dict[str, Callable[[Any], Any]] = {
    "algo": _text,
    "scenario": _text,
    "num_devices": _int_in(1, MAX_DEVICES),
    "num_points": _int_in(1, MAX_NETWORK_SIZE),
    "num_subchannels": _int_in(1, MAX_NETWORK_SIZE),
    "feature_names": _names,
    "power_low_w": _powers,
    "power_high_w": _powers,
    "share_actor": _flag,
    "max_devices": _int_in(0, MAX_DEVICES),
    "actor_hidden": _hidden,
    "critic_hidden": _hidden,
    "power_levels": _int_in(0, MAX_NETWORK_SIZE),
    "power_scale": _power_scale,
    "activation": _activation,
    "extra": _table,
}


def policy_spec_from_dict(data: Any, source: str) -> PolicySpec:
    """Validate a decoded policy description; every problem names the field and ``source``."""
    if not isinstance(data, dict) or data.get("format") != POLICY_FORMAT:
        raise InvalidInput(f"{source}: field 'format' must be {POLICY_FORMAT!r}")
    declared = {f.name: f for f in fields(PolicySpec)}
    unknown = sorted(set(data) - set(declared) - {"format"})
    if unknown:
        raise InvalidInput(f"{source}: unknown field {unknown[0]!r}")
    values: dict[str, Any] = {}
    for name, spec_field in declared.items():
        if name not in data:
            if spec_field.default is MISSING and spec_field.default_factory is MISSING:
                raise InvalidInput(f"{source}: missing field {name!r}")
            continue
        try:
            values[name] = _FIELD_CHECKS[name](data[name])
        except _Refused as why:
            raise InvalidInput(f"{source}: field {name!r} {why}, got {reprlib.repr(data[name])}") from None
    spec = PolicySpec(**values)
    for name in ("power_low_w", "power_high_w"):
        if len(getattr(spec, name)) != spec.num_devices:
            raise InvalidInput(f"{source}: field {name!r} must have one entry per device ({spec.num_devices}), "
                               f"got {len(getattr(spec, name))}")
    return spec


def read_policy_spec(path: str | Path) -> tuple[PolicySpec, Path]:
    """The checked description of a saved policy, and the path of its JSON file."""
    json_path = _json_path(path)
    try:
        data = json.loads(json_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInput(f"{json_path}: not valid JSON ({exc})") from exc
    return policy_spec_from_dict(data, str(json_path)), json_path


def read_policy_tensors(json_path: Path) -> dict[str, torch.Tensor]:
    """The tensors of the weights file beside ``json_path``; a damaged file raises IntegrityError naming it."""
    weights = json_path.with_suffix(".safetensors")
    if not weights.is_file():
        raise NotFound(f"no weights file {str(weights)!r} beside {json_path}")
    try:
        return load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as exc:
        raise IntegrityError(f"{weights}: not a valid safetensors file ({exc})") from exc


def check_compatible(spec: PolicySpec, scenario: Scenario, source: str) -> None:
    """Refuse a policy that cannot act in ``scenario``, saying what differs."""
    if spec.num_points != scenario.num_points:
        raise InvalidInput(f"{source}: the policy was trained for {spec.num_points} split points, scenario {scenario.name!r} has {scenario.num_points}")
    if spec.num_subchannels != scenario.num_subchannels:
        raise InvalidInput(
            f"{source}: the policy was trained for {spec.num_subchannels} sub-channels, scenario {scenario.name!r} has {scenario.num_subchannels}"
        )
    if spec.share_actor:
        if scenario.num_devices > spec.max_devices:
            raise InvalidInput(
                f"{source}: the shared policy serves at most {spec.max_devices} devices, scenario {scenario.name!r} has {scenario.num_devices}"
            )
    elif spec.num_devices != scenario.num_devices:
        raise InvalidInput(f"{source}: the policy was trained for {spec.num_devices} devices, scenario {scenario.name!r} has {scenario.num_devices}")
    features = feature_names(scenario)
    if tuple(spec.feature_names) != tuple(features):
        raise InvalidInput(f"{source}: the policy reads state features {list(spec.feature_names)}, scenario {scenario.name!r} has {list(features)}")

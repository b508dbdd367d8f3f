"""Policy files: weights as safetensors beside a JSON description of what they were trained for.

``<stem>.json`` holds a `PolicySpec`; ``<stem>.safetensors`` holds the tensors. Nothing is ever
unpickled. `check_compatible` refuses a policy for a different number of devices, split points,
sub-channels or state features, naming both numbers.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from coinfer.core.errors import InvalidInput, NotFound
from coinfer.rl.scenario import Scenario
from coinfer.rl.sim.core import feature_names

POLICY_FORMAT = "coinfer.policy/1"


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


def read_policy_spec(path: str | Path) -> tuple[PolicySpec, Path]:
    json_path = _json_path(path)
    try:
        data = json.loads(json_path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInput(f"{json_path}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict) or data.get("format") != POLICY_FORMAT:
        raise InvalidInput(f"{json_path}: field 'format' must be {POLICY_FORMAT!r}")
    data.pop("format")
    try:
        spec = PolicySpec(**data)
    except TypeError as exc:
        raise InvalidInput(f"{json_path}: {exc}") from exc
    for key in ("feature_names", "power_low_w", "power_high_w", "actor_hidden", "critic_hidden"):
        object.__setattr__(spec, key, tuple(getattr(spec, key)))
    return spec, json_path


def read_policy_tensors(json_path: Path) -> dict[str, torch.Tensor]:
    weights = json_path.with_suffix(".safetensors")
    if not weights.is_file():
        raise NotFound(f"no weights file {str(weights)!r} beside {json_path}")
    return load_file(str(weights))


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

"""Per-device cost profiles: what each split point costs one device for one image.

One schema serves the built-in paper tables (Jetson Nano, Hao et al. TMC 2023) and the files
`coinfer profile` measures; the simulator and the scheduler consume nothing else.

Point 0 uploads the raw input with no local compute; the last point runs the whole network on
the device and uploads nothing; the points between run the head to that layer and upload the
encoded feature. ``uplink_bits`` is what crosses the network (feature_bits / compression).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Literal

from coinfer.core.errors import InvalidInput, NotFound

SCHEMA = "coinfer.profile/1"
EnergySource = Literal["measured", "modelled", "paper"]
_ENERGY_SOURCES = ("measured", "modelled", "paper")


@dataclass(frozen=True)
class PointCost:
    """Cost of one split point for one image on one device."""

    index: int
    name: str
    head_latency_s: float
    """Time to run the head (everything before the split) once, batch 1."""
    head_power_w: float
    """Mean device power while the head runs."""
    head_energy_j: float
    """Energy of one head run (power x time where not measured directly)."""
    feature_bits: int
    """Size of the uncompressed feature (raw image at point 0, 0 at the last point)."""
    uplink_bits: int
    """Bits actually put on the wire for this point."""
    head_macs: int = 0

    @property
    def compression(self) -> float:
        return self.feature_bits / self.uplink_bits if self.uplink_bits else 1.0


@dataclass(frozen=True)
class DeviceProfile:
    """Costs of every split point of one network on one device."""

    name: str
    backbone: str
    device: str
    energy_source: EnergySource
    points: tuple[PointCost, ...]
    raw_input_bytes: int = 0
    notes: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def num_points(self) -> int:
        return len(self.points)

    @property
    def local_latency_s(self) -> float:
        """Latency of running the whole network on the device (the last point)."""
        return self.points[-1].head_latency_s

    def to_dict(self) -> dict:
        out = {"schema": SCHEMA, **asdict(self)}
        out["points"] = [asdict(p) for p in self.points]
        return out

    def save(self, path: str | Path) -> None:
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        tmp.replace(path)


_POINT_FIELDS = ("index", "name", "head_latency_s", "head_power_w", "head_energy_j", "feature_bits", "uplink_bits")


def profile_from_dict(data: object, source: str = "<dict>") -> DeviceProfile:
    """Validate a decoded profile document; every problem names the field and the source."""
    if not isinstance(data, dict):
        raise InvalidInput(f"{source}: a profile must be a JSON object, got {type(data).__name__}")
    if data.get("schema") != SCHEMA:
        raise InvalidInput(f"{source}: field 'schema' must be {SCHEMA!r}, got {data.get('schema')!r}")
    for key in ("name", "backbone", "device", "energy_source", "points"):
        if key not in data:
            raise InvalidInput(f"{source}: missing field {key!r}")
    if data["energy_source"] not in _ENERGY_SOURCES:
        raise InvalidInput(f"{source}: field 'energy_source' must be one of {_ENERGY_SOURCES}, got {data['energy_source']!r}")
    raw_points = data["points"]
    if not isinstance(raw_points, list) or len(raw_points) < 2:
        raise InvalidInput(f"{source}: field 'points' must be a list of at least 2 split points")
    points = []
    for i, p in enumerate(raw_points):
        if not isinstance(p, dict):
            raise InvalidInput(f"{source}: points[{i}] must be an object")
        for key in _POINT_FIELDS:
            if key not in p:
                raise InvalidInput(f"{source}: points[{i}] is missing field {key!r}")
        if p["index"] != i:
            raise InvalidInput(f"{source}: points[{i}].index is {p['index']!r}, expected {i}")
        for key in ("head_latency_s", "head_power_w", "head_energy_j", "feature_bits", "uplink_bits"):
            value = p[key]
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
                raise InvalidInput(f"{source}: points[{i}].{key} must be a finite number >= 0, got {value!r}")
        points.append(
            PointCost(
                index=i,
                name=str(p["name"]),
                head_latency_s=float(p["head_latency_s"]),
                head_power_w=float(p["head_power_w"]),
                head_energy_j=float(p["head_energy_j"]),
                feature_bits=int(p["feature_bits"]),
                uplink_bits=int(p["uplink_bits"]),
                head_macs=_non_negative_int(p.get("head_macs", 0), f"{source}: points[{i}].head_macs"),
            )
        )
    if points[-1].uplink_bits != 0:
        raise InvalidInput(f"{source}: the last point runs everything locally, its uplink_bits must be 0")
    return DeviceProfile(
        name=str(data["name"]),
        backbone=str(data["backbone"]),
        device=str(data["device"]),
        energy_source=data["energy_source"],
        points=tuple(points),
        raw_input_bytes=_non_negative_int(data.get("raw_input_bytes", 0), f"{source}: raw_input_bytes"),
        notes=str(data.get("notes", "")),
        extra=_object(data.get("extra", {}), f"{source}: extra"),
    )


def _non_negative_int(value: object, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InvalidInput(f"{where} must be a non-negative integer, got {value!r}")
    return value


def _object(value: object, where: str) -> dict:
    if not isinstance(value, dict):
        raise InvalidInput(f"{where} must be an object, got {type(value).__name__}")
    return dict(value)


def builtin_profile_names() -> list[str]:
    folder = resources.files("coinfer.core") / "profiles"
    return sorted(p.name[: -len(".json")] for p in folder.iterdir() if p.name.endswith(".json"))


def load_profile(name_or_path: str | Path) -> DeviceProfile:
    """Load a built-in profile by name (e.g. ``jetson-nano-resnet18``) or a profile file by path."""
    text = str(name_or_path)
    if text in builtin_profile_names():
        resource = resources.files("coinfer.core") / "profiles" / f"{text}.json"
        return profile_from_dict(json.loads(resource.read_text()), source=f"built-in profile {text}")
    path = Path(text)
    if not path.is_file():
        raise NotFound(f"no profile file {text!r} and no built-in profile of that name (built-in: {', '.join(builtin_profile_names())})")
    try:
        data = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInput(f"{path}: not valid JSON ({exc})") from exc
    return profile_from_dict(data, source=str(path))

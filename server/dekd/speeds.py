"""Relative device speeds for heterogeneous decomposition (``--device-speeds``).

Accepted forms, one entry per device:

* a comma list of positive numbers, ``1,1,0.5,0.5`` (only the ratios matter);
* a comma list of device profiles (built-in names or ``coinfer.profile/1`` JSON files), each
  device's speed being the inverse of its whole-network local latency; numbers and profiles may
  be mixed;
* one JSON file holding a list of profiles, or ``{"devices": [profile, ...]}``;
* a speeds file (format ``coinfer.speeds/1``) as ``coinfer fleet --out FILE`` writes it from a
  live fleet: ``{"format": ..., "devices": [{"name": ..., "speed": ...}, ...]}``, the speeds
  the coordinator places by (``coinfer decompose --fleet FILE`` reads it).

Speeds are normalised so that the fastest device has speed 1: latencies measured on this
machine are read as the fastest device's, and a device of speed s takes 1/s times as long.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

from coinfer.core.errors import CoinferError, InvalidInput
from coinfer.protos.v1 import MAX_RELATIVE_SPEED

SPEEDS_FORMAT = "coinfer.speeds/1"


def _speed_from_profile_data(data: object, source: str) -> float:
    from coinfer.core.profile import profile_from_dict

    profile = profile_from_dict(data, source=source)
    if profile.local_latency_s <= 0:
        raise InvalidInput(f"{source}: local latency is {profile.local_latency_s} s; a speed needs it positive")
    return 1.0 / profile.local_latency_s


def _parse_entry(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is not None:
        if not math.isfinite(value) or value <= 0:
            raise InvalidInput(f"device speed {text!r} is not a positive number")
        return value
    from coinfer.core.profile import load_profile

    try:
        profile = load_profile(text)
    except CoinferError as exc:
        raise InvalidInput(f"device speed {text!r} is neither a positive number nor a readable device profile ({exc})") from exc
    if profile.local_latency_s <= 0:
        raise InvalidInput(f"profile {text!r}: local latency is {profile.local_latency_s} s; a speed needs it positive")
    return 1.0 / profile.local_latency_s


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInput(f"{path}: not a readable JSON file ({exc})") from exc


def _profiles_file(path: Path) -> list[float] | None:
    """Speeds from a JSON file of several profiles or a speeds file, or None when the file is a single profile."""
    data = _read_json(path)
    if isinstance(data, dict) and data.get("format") == SPEEDS_FORMAT:
        return _speeds_from_file_data(data, path)
    if isinstance(data, dict) and "devices" in data:
        data = data["devices"]
    if not isinstance(data, list):
        return None
    if not data:
        raise InvalidInput(f"{path}: the list of device profiles is empty")
    return [_speed_from_profile_data(p, f"{path}: devices[{i}]") for i, p in enumerate(data)]


def parse_device_speeds(text: str | None, num_devices: int) -> list[float]:
    """Speeds normalised to a maximum of 1, one per device; None or empty means all equal."""
    if text is None or not str(text).strip():
        return [1.0] * num_devices
    text = str(text).strip()
    speeds: list[float] | None = None
    if "," not in text and Path(text).is_file():
        speeds = _profiles_file(Path(text))
    if speeds is None:
        entries = [e.strip() for e in text.split(",")]
        if any(not e for e in entries):
            raise InvalidInput(f"--device-speeds {text!r} has an empty entry")
        speeds = [_parse_entry(e) for e in entries]
    if len(speeds) != num_devices:
        raise InvalidInput(f"--device-speeds gives {len(speeds)} speed(s) for {num_devices} devices")
    top = max(speeds)
    return [s / top for s in speeds]


# Speeds files (coinfer fleet --out, coinfer decompose --fleet) -------------------------------


def write_speeds_file(path: str | Path, devices: Sequence[Mapping[str, Any]], source: str) -> Path:
    """Write a speeds file; each device is a mapping with at least ``name`` and ``speed``
    (other keys, such as the CPU model, are kept for people). Fastest first."""
    entries = [dict(d) for d in devices]
    if not entries:
        raise InvalidInput("no live device to write speeds for")
    for entry in entries:
        _check_speed(entry.get("speed"), f"device {entry.get('name')!r}")
    entries.sort(key=lambda d: -float(d["speed"]))
    document = {
        "format": SPEEDS_FORMAT,
        "source": source,
        "written": dt.datetime.now().isoformat(timespec="seconds"),
        "devices": entries,
    }
    path = Path(path)
    path.write_text(json.dumps(document, indent=2) + "\n")
    return path


def _check_speed(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise InvalidInput(f"{where}: speed {value!r} is not a positive number")
    if value > MAX_RELATIVE_SPEED:
        raise InvalidInput(f"{where}: speed {value:g} is more than {MAX_RELATIVE_SPEED:g} times the reference")
    return float(value)


def _speeds_from_file_data(data: Mapping[str, Any], path: Path) -> list[float]:
    devices = data.get("devices")
    if not isinstance(devices, list) or not devices:
        raise InvalidInput(f"{path}: a speeds file needs a non-empty list 'devices'")
    speeds = []
    for i, entry in enumerate(devices):
        if not isinstance(entry, dict) or "speed" not in entry:
            raise InvalidInput(f"{path}: devices[{i}] must be an object with a 'speed'")
        speeds.append(_check_speed(entry["speed"], f"{path}: devices[{i}] ({entry.get('name', 'unnamed')})"))
    return speeds


def fleet_speeds(path: str | Path, num_devices: int) -> list[float]:
    """The speeds of a speeds file (``coinfer fleet --out``), normalised to a maximum of 1; the
    file must list ``num_devices`` devices."""
    path = Path(path)
    data = _read_json(path)
    if not isinstance(data, dict) or data.get("format") != SPEEDS_FORMAT:
        raise InvalidInput(f"{path} is not a speeds file (format {SPEEDS_FORMAT!r}, as `coinfer fleet --out` writes)")
    speeds = _speeds_from_file_data(data, path)
    if len(speeds) != num_devices:
        raise InvalidInput(
            f"{path} lists {len(speeds)} device(s) but the decomposition is for {num_devices} (--devices); "
            f"decompose for as many devices as the fleet has"
        )
    top = max(speeds)
    return [s / top for s in speeds]

"""Relative device speeds for heterogeneous decomposition (``--device-speeds``).

Accepted forms, one entry per device:

* a comma list of positive numbers, ``1,1,0.5,0.5`` (only the ratios matter);
* a comma list of device profiles (built-in names or ``coinfer.profile/1`` JSON files), each
  device's speed being the inverse of its whole-network local latency; numbers and profiles may
  be mixed;
* one JSON file holding a list of profiles, or ``{"devices": [profile, ...]}``.

Speeds are normalised so that the fastest device has speed 1: latencies measured on this
machine are read as the fastest device's, and a device of speed s takes 1/s times as long.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from coinfer.core.errors import CoinferError, InvalidInput


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


def _profiles_file(path: Path) -> list[float] | None:
    """Speeds from a JSON file of several profiles, or None when the file is a single profile."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInput(f"{path}: not a readable JSON file ({exc})") from exc
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

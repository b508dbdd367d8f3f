"""Scenarios: what the offloading simulator simulates, read from TOML files.

A scenario names the cell (sub-channels, bandwidth, path loss, noise), the decision slots, how
tasks arrive, what the edge server costs (nothing, as in the paper, or shared compute plus the
result download), the reward's energy weight, the evaluation setting, and groups of devices, each
with a cost profile (`coinfer.core.profile`), a transmit power range and a distance range.

Built-in scenarios live in ``rl/scenarios/*.toml``; a user passes a path to their own. Every
problem in a file names the field and the file.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from coinfer.core.errors import InvalidInput, NotFound
from coinfer.core.profile import DeviceProfile, load_profile

ChannelModelName = Literal["path-loss", "rayleigh"]
ArrivalModelName = Literal["batch", "poisson-stream"]
ServerModelName = Literal["none", "shared"]
Mode = Literal["train", "eval"]

MAX_DEVICES = 1024
"""Most devices one scenario may hold, over all groups: far past any cell the paper or a testbed
simulates, and small enough that a mistyped count fails here instead of exhausting memory."""


@dataclass(frozen=True)
class NetworkConfig:
    """The wireless cell shared by every device."""

    num_subchannels: int
    """K: orthogonal uplink sub-channels; uploads on one sub-channel interfere."""
    subchannel_bandwidth_hz: float
    """W: bandwidth of each sub-channel."""
    path_loss_exponent: float
    """alpha in the channel gain d^-alpha."""
    noise_w: float
    """Receiver noise power."""
    channel_model: ChannelModelName = "path-loss"
    """'path-loss' (the paper: gain d^-alpha) or 'rayleigh' (d^-alpha times Exp(1) fading per slot)."""


@dataclass(frozen=True)
class EpisodeConfig:
    """Decision slots and the episode length in training."""

    slot_s: float
    """Length of one decision slot."""
    max_slots: int
    """Training episodes are cut (truncated) after this many slots."""


@dataclass(frozen=True)
class TaskConfig:
    """How tasks reach each device's queue."""

    arrivals: ArrivalModelName
    """'batch': every task is queued at time 0 (the paper); 'poisson-stream': tasks arrive as a Poisson process."""
    mean_tasks_per_device: float
    """Training: each device gets Poisson(mean) tasks, at least 1."""
    arrival_rate_per_s: float = 0.0
    """Arrival rate per device for 'poisson-stream' (unused by 'batch')."""


@dataclass(frozen=True)
class RewardConfig:
    """The shared per-slot reward -(slot_s / max(F, min_finished)) - beta * E / max(F, min_finished)."""

    beta: float
    """Weight of energy (J) against time (s)."""
    min_finished: float = 0.8
    """Floor on F, the mean number of tasks finished per device in the slot."""


@dataclass(frozen=True)
class EvaluationConfig:
    """Evaluation mode: fixed distances (per device group) and fixed task counts."""

    tasks_per_device: int
    """Every device gets exactly this many tasks."""
    max_slots: int
    """Safety cap on an evaluation episode, which otherwise runs until every queue is empty."""


@dataclass(frozen=True)
class ServerConfig:
    """What the edge server costs an offloaded task after its upload."""

    model: ServerModelName = "none"
    """'none': the task is done when its upload ends (the paper); 'shared': tail compute plus result download."""
    speedup: float = 1.0
    """Server speed relative to the device: a tail takes (local latency - head latency) / speedup alone."""
    result_bits: int = 0
    """Size of the result sent back to the device."""
    downlink_bandwidth_hz: float = 0.0
    """Bandwidth of each device's (orthogonal, interference-free) downlink."""
    downlink_power_w: float = 0.0
    """Server transmit power on the downlink."""
    receive_power_w: float = 0.0
    """Device power while it receives the result."""


@dataclass(frozen=True)
class DeviceSpec:
    """One user device: its cost profile and its radio."""

    profile: DeviceProfile
    """Cost of every split point on this device."""
    power_range_w: tuple[float, float]
    """Allowed transmit power, inclusive."""
    distance_range_m: tuple[float, float]
    """Training: the distance to the server is drawn uniformly from this range each episode."""
    eval_distance_m: float
    """Evaluation: the fixed distance to the server."""
    initial_point: int
    """Split point of the device's first task, which starts at reset, before any decision."""


@dataclass(frozen=True)
class Scenario:
    """Everything the simulator needs, validated."""

    name: str
    """Scenario name (the file stem for files)."""
    description: str
    """One line for humans."""
    network: NetworkConfig
    """The wireless cell."""
    episode: EpisodeConfig
    """Slots and training episode length."""
    tasks: TaskConfig
    """Task arrivals."""
    reward: RewardConfig
    """Reward weights."""
    evaluation: EvaluationConfig
    """Evaluation mode."""
    server: ServerConfig
    """Edge-server cost model."""
    devices: tuple[DeviceSpec, ...]
    """One entry per device, in agent order."""
    source: str = "<memory>"
    """Where the scenario was read from (for messages)."""

    @property
    def num_devices(self) -> int:
        return len(self.devices)

    @property
    def num_points(self) -> int:
        return self.devices[0].profile.num_points

    @property
    def num_subchannels(self) -> int:
        return self.network.num_subchannels

    def with_beta(self, beta: float) -> "Scenario":
        """The same scenario with another energy weight."""
        if not (math.isfinite(beta) and beta >= 0):
            raise InvalidInput(f"beta must be a finite number >= 0, got {beta!r}")
        return replace(self, reward=replace(self.reward, beta=float(beta)), name=f"{self.name}@beta={beta:g}")

    def with_num_devices(self, num_devices: int) -> "Scenario":
        """The same cell with ``num_devices`` copies of the first device (for device-count sweeps)."""
        if not 1 <= num_devices <= MAX_DEVICES:
            raise InvalidInput(f"the number of devices must be 1 to {MAX_DEVICES}, got {num_devices}")
        return replace(self, devices=(self.devices[0],) * num_devices, name=f"{self.name}@n={num_devices}")


# ---------------------------------------------------------------------------------------------
# Reading TOML


class _Table:
    """One TOML table being read: every access names the dotted field and the file on error."""

    def __init__(self, data: Any, where: str, source: str) -> None:
        if not isinstance(data, dict):
            raise InvalidInput(f"{source}: field {where!r} must be a table, got {type(data).__name__}")
        self.data, self.where, self.source, self.used = data, where, source, set()

    def _name(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def _fail(self, key: str, why: str) -> InvalidInput:
        return InvalidInput(f"{self.source}: field {self._name(key)!r} {why}")

    def has(self, key: str) -> bool:
        return key in self.data

    def raw(self, key: str, default: Any = ...) -> Any:
        self.used.add(key)
        if key not in self.data:
            if default is ...:
                raise InvalidInput(f"{self.source}: missing field {self._name(key)!r}")
            return default
        return self.data[key]

    def number(self, key: str, default: Any = ..., *, low: float | None = None, positive: bool = False) -> float:
        value = self.raw(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise self._fail(key, f"must be a finite number, got {value!r}")
        if positive and value <= 0:
            raise self._fail(key, f"must be > 0, got {value!r}")
        if low is not None and value < low:
            raise self._fail(key, f"must be >= {low}, got {value!r}")
        return float(value)

    def integer(self, key: str, default: Any = ..., *, low: int | None = None) -> int:
        value = self.raw(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._fail(key, f"must be an integer, got {value!r}")
        if low is not None and value < low:
            raise self._fail(key, f"must be >= {low}, got {value!r}")
        return int(value)

    def text(self, key: str, default: Any = ..., *, choices: tuple[str, ...] | None = None) -> str:
        value = self.raw(key, default)
        if not isinstance(value, str):
            raise self._fail(key, f"must be a string, got {value!r}")
        if choices is not None and value not in choices:
            raise self._fail(key, f"must be one of {', '.join(choices)}; got {value!r}")
        return value

    def pair(self, key: str, *, positive: bool = False) -> tuple[float, float]:
        value = self.raw(key)
        ok = isinstance(value, list) and len(value) == 2 and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value
        )
        if not ok:
            raise self._fail(key, f"must be a list [low, high] of two numbers, got {value!r}")
        low, high = float(value[0]), float(value[1])
        if low > high:
            raise self._fail(key, f"must have low <= high, got {value!r}")
        if positive and low <= 0:
            raise self._fail(key, f"must be > 0, got {value!r}")
        return low, high

    def table(self, key: str) -> "_Table":
        self.used.add(key)
        if key not in self.data:
            raise InvalidInput(f"{self.source}: missing table [{self._name(key)}]")
        return _Table(self.data[key], self._name(key), self.source)

    def done(self) -> None:
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            raise InvalidInput(f"{self.source}: unknown field {self._name(unknown[0])!r} (a typo?)")


def _read_devices(root: _Table, base_dir: Path | None) -> tuple[DeviceSpec, ...]:
    groups = root.raw("devices")
    if not isinstance(groups, list) or not groups:
        raise InvalidInput(f"{root.source}: field 'devices' must be a non-empty array of tables [[devices]]")
    devices: list[DeviceSpec] = []
    for g, group in enumerate(groups):
        t = _Table(group, f"devices[{g}]", root.source)
        count = t.integer("count", low=1)
        if len(devices) + count > MAX_DEVICES:
            raise InvalidInput(
                f"{root.source}: field 'devices[{g}].count' is {count}, which makes more than {MAX_DEVICES} "
                f"devices in the scenario (at most {MAX_DEVICES - len(devices)} more fit)"
            )
        profile_ref = t.text("profile")
        try:
            profile = _load_profile_ref(profile_ref, base_dir)
        except (InvalidInput, NotFound) as exc:
            raise InvalidInput(f"{root.source}: field 'devices[{g}].profile': {exc}") from exc
        power = t.pair("power_range_w", positive=True)
        distance = t.pair("distance_range_m", positive=True)
        eval_distance = t.number("eval_distance_m", positive=True)
        initial = t.integer("initial_point", -1)
        if not -profile.num_points <= initial < profile.num_points:
            raise InvalidInput(
                f"{root.source}: field 'devices[{g}].initial_point' is {initial}, outside the profile's "
                f"{profile.num_points} split points"
            )
        t.done()
        spec = DeviceSpec(profile, power, distance, eval_distance, initial % profile.num_points)
        devices.extend([spec] * count)
    points = {d.profile.num_points for d in devices}
    if len(points) > 1:
        raise InvalidInput(
            f"{root.source}: field 'devices': every profile in one scenario must have the same number of "
            f"split points, got {sorted(points)}"
        )
    return tuple(devices)


def _load_profile_ref(ref: str, base_dir: Path | None) -> DeviceProfile:
    if base_dir is not None and not Path(ref).is_absolute() and (base_dir / ref).is_file():
        return load_profile(base_dir / ref)
    return load_profile(ref)


def scenario_from_dict(data: dict, source: str = "<dict>", base_dir: Path | None = None) -> Scenario:
    """Validate a decoded scenario document. Profile paths are relative to ``base_dir``."""
    root = _Table(data, "", source)
    name = root.text("name")
    description = root.text("description", "")

    t = root.table("network")
    network = NetworkConfig(
        num_subchannels=t.integer("num_subchannels", low=1),
        subchannel_bandwidth_hz=t.number("subchannel_bandwidth_hz", positive=True),
        path_loss_exponent=t.number("path_loss_exponent", low=0.0),
        noise_w=t.number("noise_w", positive=True),
        channel_model=t.text("channel_model", "path-loss", choices=("path-loss", "rayleigh")),  # type: ignore[arg-type]
    )
    t.done()

    t = root.table("episode")
    episode = EpisodeConfig(slot_s=t.number("slot_s", positive=True), max_slots=t.integer("max_slots", low=1))
    t.done()

    t = root.table("tasks")
    tasks = TaskConfig(
        arrivals=t.text("arrivals", choices=("batch", "poisson-stream")),  # type: ignore[arg-type]
        mean_tasks_per_device=t.number("mean_tasks_per_device", positive=True),
        arrival_rate_per_s=t.number("arrival_rate_per_s", 0.0, low=0.0),
    )
    if tasks.arrivals == "poisson-stream" and tasks.arrival_rate_per_s <= 0:
        raise InvalidInput(f"{source}: field 'tasks.arrival_rate_per_s' must be > 0 when tasks.arrivals is 'poisson-stream'")
    t.done()

    t = root.table("reward")
    reward = RewardConfig(beta=t.number("beta", low=0.0), min_finished=t.number("min_finished", 0.8, positive=True))
    t.done()

    t = root.table("evaluation")
    evaluation = EvaluationConfig(
        tasks_per_device=t.integer("tasks_per_device", low=1), max_slots=t.integer("max_slots", low=1)
    )
    t.done()

    if root.has("server"):
        t = root.table("server")
        model = t.text("model", choices=("none", "shared"))
        if model == "shared":
            server = ServerConfig(
                model="shared",
                speedup=t.number("speedup", positive=True),
                result_bits=t.integer("result_bits", low=1),
                downlink_bandwidth_hz=t.number("downlink_bandwidth_hz", positive=True),
                downlink_power_w=t.number("downlink_power_w", positive=True),
                receive_power_w=t.number("receive_power_w", low=0.0),
            )
        else:
            server = ServerConfig()
        t.done()
    else:
        server = ServerConfig()

    devices = _read_devices(root, base_dir)
    root.done()
    return Scenario(name, description, network, episode, tasks, reward, evaluation, server, devices, source)


def builtin_scenario_names() -> list[str]:
    folder = resources.files("coinfer.rl") / "scenarios"
    return sorted(p.name[: -len(".toml")] for p in folder.iterdir() if p.name.endswith(".toml"))


def load_scenario(name_or_path: "str | Path | Scenario") -> Scenario:
    """A built-in scenario by name (e.g. ``mahppo-paper-resnet18``) or a TOML file by path."""
    if isinstance(name_or_path, Scenario):
        return name_or_path
    text = str(name_or_path)
    if text in builtin_scenario_names():
        resource = resources.files("coinfer.rl") / "scenarios" / f"{text}.toml"
        return _parse(_read_text(resource, f"built-in scenario {text}"), f"built-in scenario {text}", None)
    path = Path(text)
    if not path.is_file():
        raise NotFound(
            f"no scenario file {text!r} and no built-in scenario of that name "
            f"(built-in: {', '.join(builtin_scenario_names())})"
        )
    return _parse(_read_text(path, str(path)), str(path), path.parent)


def _read_text(file: Any, source: str) -> str:
    """The text of a file or package resource; TOML is UTF-8 by definition, other bytes are refused."""
    try:
        return file.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"{source}: not a UTF-8 text file (byte {exc.start}: {exc.reason})") from exc


def _parse(text: str, source: str, base_dir: Path | None) -> Scenario:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InvalidInput(f"{source}: not valid TOML ({exc})") from exc
    return scenario_from_dict(data, source, base_dir)

"""The testbed's state file: what was (or is about to be) created, so `down` removes exactly that.

Written before each resource is made (an intent log), atomically (temporary file + rename) and
under an exclusive lock, so a crash at any point leaves a file that names everything that might
exist, and two processes (the CLI and a coordinator changing rates) never lose each other's writes.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Literal

from coinfer.core.errors import InvalidInput, NotFound
from coinfer.testbed.channel import RadioConfig
from coinfer.testbed.config import LinkConfig, TestbedConfig

DelayMechanism = Literal["netem", "relay", "none"]
Direction = Literal["up", "down"]
STATE_VERSION = 1


@dataclass
class RelayRecord:
    """One relay process: who it serves and how to recognise it again."""

    device: int
    """Device whose link it sits on."""
    toward: Literal["server", "device"]
    """'server': the device dials it to reach a server port; 'device': the server dials it."""
    pid: int
    """Process id (of the relay's Python, in the server namespace)."""
    start_ticks: int
    """Process start time; with the pid it tells the relay from a recycled pid."""
    listen: str
    """host:port it listens on."""
    target: str
    """host:port it forwards to."""
    log_path: str
    """Its stderr."""


@dataclass
class TestbedState:
    """Everything one testbed created, as recorded in `<state_dir>/<prefix>.json`."""

    __test__ = False

    config: TestbedConfig
    """The config it was made from."""
    phase: Literal["starting", "up"] = "starting"
    """'starting' until every namespace, link and qdisc exists."""
    namespaces: list[str] = field(default_factory=list)
    """Namespaces that may exist (recorded before they are created)."""
    namespace_inodes: dict[str, int] = field(default_factory=dict)
    """Inode of each created namespace, to find processes holding it after it is unmounted."""
    delay_mechanism: DelayMechanism = "none"
    """How delay/loss are applied: the netem qdisc, the testbed's relay, or not at all."""
    rates_bps: dict[str, dict[str, float]] = field(default_factory=dict)
    """Current shaped rate per device index (as a string key) and direction ('up', 'down')."""
    relays: list[RelayRecord] = field(default_factory=list)
    """Relay processes started."""
    cgroups: list[str] = field(default_factory=list)
    """CPU groups of the devices, in device order (recorded before they are made)."""

    # JSON --------------------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["config"]["state_dir"] = str(self.config.state_dir)
        data["version"] = STATE_VERSION
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any], source: str) -> "TestbedState":
        try:
            if data.get("version") != STATE_VERSION:
                raise InvalidInput(f"state file {source} has version {data.get('version')!r}, expected {STATE_VERSION}")
            c = dict(data["config"])
            c["links"] = tuple(LinkConfig(**link) for link in c["links"])
            c["radio"] = RadioConfig(**c["radio"])
            c["state_dir"] = Path(c["state_dir"])
            c["cpu_cores"] = tuple(c.get("cpu_cores", ()))
            return cls(
                config=TestbedConfig(**c),
                phase=data["phase"],
                namespaces=list(data["namespaces"]),
                namespace_inodes={k: int(v) for k, v in data["namespace_inodes"].items()},
                delay_mechanism=data["delay_mechanism"],
                rates_bps={k: dict(v) for k, v in data["rates_bps"].items()},
                relays=[RelayRecord(**r) for r in data["relays"]],
                cgroups=[str(p) for p in data.get("cgroups", [])],
            )
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, InvalidInput):
                raise
            raise InvalidInput(f"state file {source} is malformed: {exc!r}") from None


def state_path(prefix: str, state_dir: Path) -> Path:
    return Path(state_dir) / f"{prefix}.json"


def _lock_path(prefix: str, state_dir: Path) -> Path:
    return Path(state_dir) / f".{prefix}.lock"


@contextlib.contextmanager
def locked(prefix: str, state_dir: Path) -> Iterator[None]:
    """Exclusive lock on one testbed's state (blocking; held only around short read-modify-writes)."""
    Path(state_dir).mkdir(parents=True, exist_ok=True)
    with open(_lock_path(prefix, state_dir), "a") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def read_state(prefix: str, state_dir: Path) -> TestbedState:
    path = state_path(prefix, state_dir)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise NotFound(f"no testbed {prefix!r}: {path} does not exist (is it up?)") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"state file {path} is not valid JSON: {exc}") from None
    return TestbedState.from_json(data, str(path))


def write_state(state: TestbedState) -> None:
    """Atomically replace the state file (call under :func:`locked`)."""
    path = state_path(state.config.prefix, state.config.state_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(state.to_json(), indent=2) + "\n")
    os.replace(tmp, path)


def remove_state(prefix: str, state_dir: Path) -> bool:
    """Delete the state file and its lock; True when a state file existed."""
    existed = False
    with contextlib.suppress(FileNotFoundError):
        state_path(prefix, state_dir).unlink()
        existed = True
    with contextlib.suppress(FileNotFoundError):
        _lock_path(prefix, state_dir).unlink()
    return existed

"""Episode sets: the episodes a policy is judged on, each fixed by a seed of its own.

A seed names one episode in one role, and the roles own disjoint seed ranges, so no episode can
serve two of them:

- training runs: seeds 0 .. 999 999 (a run's simulator streams are rooted at its seed);
- held-out evaluation episodes: 1 000 000 .. 1 999 999;
- tuning episodes (what ``search`` is tuned on): 2 000 000 .. 2 999 999.

An episode's randomness (distances, task counts, fading, and the actions a sampling policy draws)
comes from numpy ``SeedSequence``s over (a tag, its role, its seed), so the roles are disjoint as
random streams too, not only as numbers; and an episode is the same whatever batch it runs in.

The cell says what is drawn: ``random`` episodes are drawn like the training episodes
(distances, task counts, fading) and ``evaluation`` episodes are the scenario's evaluation cell
(fixed distances and task counts: in the paper's scenarios, the paper's protocol). Either runs
until every queue is empty (the scenario's ``evaluation.max_slots`` only guards against a policy
that never finishes).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Iterable, Literal

import numpy as np

from coinfer.core.errors import InvalidInput
from coinfer.rl.scenario import Scenario
from coinfer.rl.sim.core import Simulator

Cell = Literal["random", "evaluation"]
Role = Literal["held-out", "tuning"]

TRAINING_SEEDS = range(0, 1_000_000)
"""Seeds a training run may use."""
ROLE_SEEDS: dict[str, range] = {"held-out": range(1_000_000, 2_000_000), "tuning": range(2_000_000, 3_000_000)}
"""Seeds of the episodes of each role."""
CELL_MODES: dict[str, str] = {"random": "train", "evaluation": "eval"}
"""The simulator mode that draws each cell's episodes."""
_TAG = 0x0C0F_1E5D
"""First word of every episode's entropy (tag, kind, role, seed); a training run's entropy is its seed
alone, so no episode draws from a training run's streams."""
_ENVIRONMENT, _ACTIONS = 0, 1


def check_training_seeds(seeds: Iterable[int], field: str = "seeds") -> tuple[int, ...]:
    """Training seeds, refused (naming ``field``) if any lies outside the training range."""
    seeds = tuple(int(s) for s in seeds)
    bad = [s for s in seeds if s not in TRAINING_SEEDS]
    if bad:
        raise InvalidInput(
            f"field {field!r}: training seeds must be in 0..{TRAINING_SEEDS.stop - 1} "
            f"(from {TRAINING_SEEDS.stop} on they name held-out and tuning episodes), got {bad[0]}"
        )
    return seeds


@dataclass(frozen=True)
class EpisodeSet:
    """A fixed list of episodes of one scenario: its shape, the cell, the role and one seed per episode."""

    scenario: str
    """Name of the scenario the episodes belong to."""
    num_devices: int
    """The scenario's devices (a set is refused by a scenario of another shape)."""
    num_points: int
    """The scenario's split points."""
    num_subchannels: int
    """The scenario's sub-channels."""
    cell: Cell
    """'random' (drawn like training episodes) or 'evaluation' (the scenario's evaluation cell)."""
    role: Role
    """'held-out' (evaluation) or 'tuning' (what a static baseline is tuned on)."""
    seeds: tuple[int, ...]
    """One seed per episode, distinct, in the role's range (`ROLE_SEEDS`)."""

    def __post_init__(self) -> None:
        if self.cell not in CELL_MODES:
            raise InvalidInput(f"episode set field 'cell' must be 'random' or 'evaluation', got {self.cell!r}")
        if self.role not in ROLE_SEEDS:
            raise InvalidInput(f"episode set field 'role' must be one of {', '.join(ROLE_SEEDS)}, got {self.role!r}")
        if not self.seeds:
            raise InvalidInput("episode set field 'seeds' is empty: give at least one episode")
        if len(set(self.seeds)) != len(self.seeds):
            raise InvalidInput("episode set field 'seeds' repeats a seed: every episode must be distinct")
        allowed = ROLE_SEEDS[self.role]
        bad = [s for s in self.seeds if s not in allowed]
        if bad:
            raise InvalidInput(f"episode set field 'seeds': {self.role} seeds lie in {allowed.start}..{allowed.stop - 1}, got {bad[0]}")

    @classmethod
    def of(cls, scenario: Scenario, episodes: int, cell: Cell = "random", role: Role = "held-out", first: int = 0) -> "EpisodeSet":
        """``episodes`` episodes of ``scenario``: the role's seeds ``first`` .. ``first + episodes - 1`` (counted from its range's start)."""
        if episodes < 1:
            raise InvalidInput(f"field 'episodes' must be >= 1, got {episodes}")
        if first < 0:
            raise InvalidInput(f"field 'first' must be >= 0, got {first}")
        base = ROLE_SEEDS[role].start if role in ROLE_SEEDS else 0
        return cls(scenario.name, scenario.num_devices, scenario.num_points, scenario.num_subchannels, cell, role,
                   tuple(range(base + first, base + first + episodes)))

    def __len__(self) -> int:
        return len(self.seeds)

    # -----------------------------------------------------------------------------------------
    # Checks

    def check(self, scenario: Scenario) -> None:
        """Refuse a scenario these episodes do not belong to, naming the field that differs."""
        for name, ours, theirs in (
            ("scenario", self.scenario, scenario.name),
            ("num_devices", self.num_devices, scenario.num_devices),
            ("num_points", self.num_points, scenario.num_points),
            ("num_subchannels", self.num_subchannels, scenario.num_subchannels),
        ):
            if ours != theirs:
                raise InvalidInput(f"episode set field {name!r} is {ours!r}, scenario {scenario.name!r} has {theirs!r}")

    def check_disjoint(self, training_seeds: Iterable[int], field: str = "seeds") -> None:
        """Refuse training seeds that name one of these episodes (or that no training run may use)."""
        training = check_training_seeds(training_seeds, field)
        shared = sorted(set(training) & set(self.seeds))
        if shared:  # unreachable while the ranges are disjoint; kept so a range change cannot go unnoticed
            raise InvalidInput(f"field {field!r}: training seed {shared[0]} is also an episode of the {self.role} set")

    # -----------------------------------------------------------------------------------------
    # Episodes

    def environment_key(self, i: int) -> tuple[int, ...]:
        """Entropy of episode ``i``'s simulator streams."""
        return (_TAG, _ENVIRONMENT, _role_index(self.role), self.seeds[i])

    def action_rng(self, i: int) -> np.random.Generator:
        """A generator of episode ``i``'s own for a policy's sampled actions."""
        return np.random.default_rng(np.random.SeedSequence((_TAG, _ACTIONS, _role_index(self.role), self.seeds[i])))

    def simulator(self, scenario: Scenario, indices: Iterable[int]) -> Simulator:
        """One environment per entry of ``indices`` (an episode may appear several times: equal copies)."""
        self.check(scenario)
        keys = [self.environment_key(int(i)) for i in indices]
        return Simulator(scenario, num_envs=len(keys), mode=CELL_MODES[self.cell], episode_keys=keys, max_slots=scenario.evaluation.max_slots)  # type: ignore[arg-type]

    def subset(self, indices: Iterable[int]) -> "EpisodeSet":
        """The episodes at ``indices``, in that order."""
        return EpisodeSet(self.scenario, self.num_devices, self.num_points, self.num_subchannels, self.cell, self.role,
                          tuple(self.seeds[i] for i in indices))

    # -----------------------------------------------------------------------------------------
    # Files and cache keys

    def to_dict(self) -> dict:
        out = asdict(self)
        out["seeds"] = list(self.seeds)
        return out

    @classmethod
    def from_dict(cls, data: dict, source: str = "episode set") -> "EpisodeSet":
        fields = ("scenario", "num_devices", "num_points", "num_subchannels", "cell", "role", "seeds")
        if not isinstance(data, dict):
            raise InvalidInput(f"{source}: expected a JSON object")
        missing = [f for f in fields if f not in data]
        if missing:
            raise InvalidInput(f"{source}: missing field {missing[0]!r}")
        for name in ("num_devices", "num_points", "num_subchannels"):
            if isinstance(data[name], bool) or not isinstance(data[name], int):
                raise InvalidInput(f"{source}: field {name!r} must be an integer, got {data[name]!r}")
        seeds = data["seeds"]
        if not isinstance(seeds, list) or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
            raise InvalidInput(f"{source}: field 'seeds' must be a list of integers")
        return cls(str(data["scenario"]), data["num_devices"], data["num_points"], data["num_subchannels"], data["cell"], data["role"], tuple(seeds))

    def key(self) -> str:
        """A short name for caches: cell, role, size and a hash of everything."""
        digest = hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:10]
        return f"{self.cell}-{self.role}-{len(self)}-{digest}"

    def describe(self) -> str:
        seeds = f"seed {self.seeds[0]}" if len(self) == 1 else f"seeds {self.seeds[0]}..{self.seeds[-1]}" if _consecutive(self.seeds) else f"{len(self)} seeds"
        return f"{len(self)} {self.role} {self.cell}-cell episode(s) of {self.scenario} ({seeds})"


def _role_index(role: str) -> int:
    return list(ROLE_SEEDS).index(role)


def _consecutive(seeds: tuple[int, ...]) -> bool:
    return all(b == a + 1 for a, b in zip(seeds, seeds[1:]))

"""The random streams of the simulator's environments: shared by all, or one set per episode or environment.

Every environment draws three kinds of randomness: its distances, its tasks (counts and
arrival times) and its channel fading. Training draws each kind for the whole batch from one
generator (`SharedStreams`: one numpy call per reset or slot), so an episode depends on which
environments reset with it. Evaluation needs episodes that exist on their own:
`EpisodeStreams` gives every environment generators of its own, derived from its episode's key,
so an episode is the same whatever batch it runs in, and resetting an environment replays it.
"""

from __future__ import annotations

from typing import Callable, Sequence, TypeVar

import numpy as np

from coinfer.core.errors import InvalidInput

KINDS = ("distance", "tasks", "fading")
"""The kinds of randomness, in the order their generators are spawned from a seed."""

T = TypeVar("T", np.ndarray, tuple)
Draw = Callable[[np.random.Generator, np.ndarray], T]
"""``draw(rng, rows)``: values for ``rows`` (positions in the environments being drawn for), leading axis len(rows)."""


def _spawn(entropy: int | Sequence[int]) -> dict[str, np.random.Generator]:
    return dict(zip(KINDS, (np.random.default_rng(s) for s in np.random.SeedSequence(entropy).spawn(len(KINDS)))))


class SharedStreams:
    """One generator per kind for every environment, from one root seed (training)."""

    def __init__(self, seed: int) -> None:
        self._rngs = _spawn(seed)

    def restart(self, envs: np.ndarray) -> None:
        """Nothing to restart: a new episode continues the shared streams."""

    def draw(self, kind: str, envs: np.ndarray, draw: Draw) -> T:
        return draw(self._rngs[kind], np.arange(len(envs)))


class EpisodeStreams:
    """Generators of their own for every environment, from its key.

    ``keys[e]`` is the entropy of environment e (an integer or a sequence of them, as numpy's
    ``SeedSequence`` takes it). With ``replay`` (evaluation) the key is an episode's: a reset
    starts the same episode again, and environments with equal keys draw equal episodes. Without
    it the key is a seed whose streams run on across episodes: environment e then follows exactly
    the trajectory of a one-environment simulator seeded with ``keys[e]``, whatever the others do
    (what a gymnasium vector environment promises).
    """

    def __init__(self, keys: Sequence[int | Sequence[int]], num_envs: int, replay: bool = True) -> None:
        if len(keys) != num_envs:
            if replay:
                raise InvalidInput(f"episode_keys must give one key per environment ({num_envs}), got {len(keys)}")
            raise InvalidInput(f"{len(keys)} seeds for {num_envs} environments")
        self.keys = [tuple(k) if isinstance(k, (tuple, list)) else int(k) for k in keys]
        self.replay = replay
        self._rngs: list[dict[str, np.random.Generator]] = [_spawn(k) for k in self.keys]

    def restart(self, envs: np.ndarray) -> None:
        """With ``replay``, environments that reset start their episode's streams again (the same episode)."""
        if not self.replay:
            return
        for e in envs:
            self._rngs[int(e)] = _spawn(self.keys[int(e)])

    def draw(self, kind: str, envs: np.ndarray, draw: Draw) -> T:
        parts = [draw(self._rngs[int(e)][kind], np.array([j])) for j, e in enumerate(envs)]
        if isinstance(parts[0], tuple):
            return tuple(np.concatenate(column) for column in zip(*parts))  # type: ignore[return-value]
        return np.concatenate(parts)

"""The simulator's random draws: one stream shared by every environment, or one per environment.

Three generators feed the core (distances, task counts and arrivals, fading), spawned from one
seed. With one integer seed every environment draws from the same three generators, in the
order environments reset (the batched simulator's own seeding, which the trainers use). With one
seed per environment, environment e draws from its own three generators, spawned exactly as a
one-environment simulator spawns them from that seed: environment e of the batch then follows
the same trajectory as a single environment seeded with ``seeds[e]``, whatever the others do
(what a gymnasium vector environment promises).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from coinfer.core.errors import InvalidInput

Seed = int | Sequence[int]
"""One root seed for every environment, or one seed per environment."""

_STREAMS = 3
"""Generators per seed: distance, tasks, fading (the order the core spawns them in)."""


def _spawn(seed: int) -> tuple[np.random.Generator, ...]:
    return tuple(np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(_STREAMS))


class _RowDraws:
    """A Generator-like view over one generator per row: row r of a draw comes from ``generators[r]``.

    The core draws arrays whose first axis runs over the environments being drawn for; each row is
    drawn alone with the row's shape, which is what a one-environment simulator draws.
    """

    def __init__(self, generators: list[np.random.Generator]) -> None:
        self._generators = generators

    def _rows(self, method: str, size: tuple[int, ...], *args: object) -> np.ndarray:
        if not size or size[0] != len(self._generators):
            raise InvalidInput(f"a per-environment draw needs a leading axis of {len(self._generators)}, got shape {size}")
        return np.stack([getattr(g, method)(*args, size=size[1:]) for g in self._generators])

    def uniform(self, low, high, size: tuple[int, ...]) -> np.ndarray:
        return self._rows("uniform", size, low, high)

    def poisson(self, lam, size: tuple[int, ...]) -> np.ndarray:
        return self._rows("poisson", size, lam)

    def exponential(self, scale, size: tuple[int, ...]) -> np.ndarray:
        return self._rows("exponential", size, scale)


class RandomStreams:
    """The (distance, tasks, fading) generators of ``num_envs`` environments."""

    def __init__(self, seed: Seed, num_envs: int) -> None:
        if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
            self._shared: tuple[np.random.Generator, ...] | None = _spawn(int(seed))
            self._per_env: list[tuple[np.random.Generator, ...]] = []
            return
        try:
            seeds = [int(s) for s in seed]  # type: ignore[union-attr]
        except (TypeError, ValueError):
            raise InvalidInput(f"a simulator seed is an integer or one integer per environment, got {seed!r}") from None
        if len(seeds) != num_envs:
            raise InvalidInput(f"{len(seeds)} seeds for {num_envs} environments")
        self._shared = None
        self._per_env = [_spawn(s) for s in seeds]

    @property
    def per_env(self) -> bool:
        """Whether every environment draws from its own generators."""
        return self._shared is None

    def for_envs(self, envs: np.ndarray) -> tuple[np.random.Generator | _RowDraws, ...]:
        """The (distance, tasks, fading) generators to draw arrays whose rows are ``envs``."""
        if self._shared is not None:
            return self._shared
        return tuple(_RowDraws([self._per_env[int(e)][i] for e in envs]) for i in range(_STREAMS))

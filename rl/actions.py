"""Joint actions: one hybrid decision (split point, sub-channel, transmit power) per device."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from coinfer.core.errors import InvalidInput


@dataclass(frozen=True)
class JointAction:
    """One decision per device; arrays of shape (N,) for one environment or (E, N) for a batch."""

    points: np.ndarray
    """Split point index of each device's next task (0 = raw input, last = local)."""
    channels: np.ndarray
    """Sub-channel of each device's next upload."""
    powers_w: np.ndarray
    """Transmit power of each device, applied at once."""

    def batched(self) -> "JointAction":
        """The same action with a leading batch axis of 1 where it had none."""
        if np.ndim(self.points) == 1:
            return JointAction(self.points[None], self.channels[None], self.powers_w[None])
        return self

    def env(self, e: int) -> "JointAction":
        """The action of environment ``e`` of a batched action."""
        return JointAction(self.points[e], self.channels[e], self.powers_w[e])

    def to_dict(self) -> dict:
        return {"points": np.asarray(self.points).tolist(), "channels": np.asarray(self.channels).tolist(), "powers_w": np.asarray(self.powers_w).tolist()}


def power_grid_w(low_w: float, high_w: float, levels: int) -> np.ndarray:
    """``levels`` transmit powers, geometrically spaced from max(low, high / 1000) to high."""
    if levels < 1:
        raise InvalidInput(f"the number of power levels must be >= 1, got {levels}")
    if levels == 1:
        return np.array([high_w])
    return np.geomspace(max(low_w, high_w * 1e-3), high_w, levels)


def power_grids_w(low_w: np.ndarray, high_w: np.ndarray, levels: int) -> np.ndarray:
    """(N, levels) power grids of N devices."""
    return np.stack([power_grid_w(lo, hi, levels) for lo, hi in zip(low_w, high_w)])


def nearest_power_levels(powers_w: np.ndarray, power_levels_w: np.ndarray) -> np.ndarray:
    """Index of each device's nearest grid power, nearest on a log scale; ``powers_w`` (..., N), ``power_levels_w`` (N, L)."""
    return np.abs(np.log(power_levels_w) - np.log(np.asarray(powers_w, dtype=float))[..., None]).argmin(axis=-1)


def decode_discrete(actions: np.ndarray, power_levels_w: np.ndarray) -> JointAction:
    """A JointAction from flat [point, channel, power level] triples per device, (..., 3N).

    ``power_levels_w`` is (N, L); a level outside 0..L-1 is refused naming the device.
    """
    flat = np.asarray(actions)
    N, L = power_levels_w.shape
    if flat.shape[-1] != 3 * N:
        raise InvalidInput(f"a discrete action has 3 entries per device ({3 * N}), got {flat.shape[-1]}")
    triples = flat.reshape(flat.shape[:-1] + (N, 3)).astype(np.int64)
    levels = triples[..., 2]
    bad = (levels < 0) | (levels >= L)
    if bad.any():
        n = int(np.argwhere(bad)[0][-1])
        raise InvalidInput(f"device {n}: power level {int(levels[bad][0])} is outside 0..{L - 1}")
    return JointAction(triples[..., 0], triples[..., 1], power_levels_w[np.arange(N), levels])


def powers_from_unit(power_u: np.ndarray, low_w: np.ndarray, high_w: np.ndarray, scale: str = "linear") -> np.ndarray:
    """Map normalised power samples u (clamped to [0, 1]) onto each device's power range.

    ``linear`` (the paper): low + u (high - low). ``log``: geometric from max(low, high / 1000)
    to high, the span of `power_grid_w`, where the useful powers of a cell lie.
    """
    u = np.clip(power_u, 0.0, 1.0)
    if scale == "linear":
        return low_w + u * (high_w - low_w)
    if scale == "log":
        floor_w = np.maximum(low_w, high_w * 1e-3)
        return np.exp(np.log(floor_w) + u * (np.log(high_w) - np.log(floor_w)))
    raise InvalidInput(f"power scale must be 'linear' or 'log', got {scale!r}")


def sample_categorical(logits: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One index per row of ``logits`` (..., C), drawn with probabilities softmax(logits) from ``rng``.

    One uniform number per row, inverted through the cumulative probabilities (float64), so a
    row's draw depends only on its logits and its generator.
    """
    z = np.asarray(logits, dtype=np.float64)
    p = np.exp(z - z.max(axis=-1, keepdims=True))
    cumulative = np.cumsum(p, axis=-1)
    u = rng.random(z.shape[:-1])[..., None] * cumulative[..., -1:]
    return np.minimum((cumulative <= u).sum(axis=-1), z.shape[-1] - 1).astype(np.int64)

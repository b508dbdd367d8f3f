"""The gymnasium views' spaces, and their actions <-> `JointAction`, for one environment or a batch.

``action_format="hybrid"`` is the natural Dict action (points, channels, powers_w);
``action_format="discrete"`` is a flat MultiDiscrete [point, channel, power level] per device
with powers from `power_grid_w`, which single-agent libraries (stable-baselines3) accept. The
observation is the global state (N * F,), bounded by the features' ranges.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from gymnasium import spaces

from coinfer.core.errors import InvalidInput
from coinfer.rl.actions import JointAction, decode_discrete, nearest_power_levels, power_grids_w
from coinfer.rl.sim.core import Simulator

ActionFormat = Literal["hybrid", "discrete"]
ACTION_KEYS = ("points", "channels", "powers_w")


class JointActionSpaces:
    """Observation and action spaces of one environment of ``sim``, and the action codec."""

    def __init__(self, sim: Simulator, action_format: ActionFormat = "hybrid", power_levels: int = 8) -> None:
        if action_format not in ("hybrid", "discrete"):
            raise InvalidInput(f"action_format must be 'hybrid' or 'discrete', got {action_format!r}")
        N, P, K = sim.num_devices, sim.num_points, sim.num_subchannels
        self.action_format, self.num_devices = action_format, N
        high = sim.feature_high().reshape(-1).astype(np.float32)
        self.observation_space = spaces.Box(low=np.zeros_like(high), high=high, dtype=np.float32)
        self.power_levels_w = power_grids_w(sim.power_low_w, sim.power_high_w, power_levels)
        """(N, levels) transmit powers of the discrete format's power levels."""
        self.action_space: spaces.Space
        if action_format == "hybrid":
            self.action_space = spaces.Dict(
                {
                    "points": spaces.MultiDiscrete([P] * N),
                    "channels": spaces.MultiDiscrete([K] * N),
                    "powers_w": spaces.Box(low=sim.power_low_w.astype(np.float32), high=sim.power_high_w.astype(np.float32), dtype=np.float32),
                }
            )
        else:
            self.action_space = spaces.MultiDiscrete(np.tile([P, K, power_levels], N))

    def decode(self, action: Any, num_envs: int | None = None) -> JointAction:
        """The `JointAction` of one environment's action, or of ``num_envs`` environments' batched action."""
        shape = (self.num_devices,) if num_envs is None else (num_envs, self.num_devices)
        if self.action_format == "discrete":
            flat = np.asarray(action)
            expected = shape[:-1] + (3 * self.num_devices,)
            if flat.size != int(np.prod(expected)):
                raise InvalidInput(f"a discrete action has shape {expected} (point, channel, power level per device), got {flat.shape}")
            return decode_discrete(flat.reshape(shape[:-1] + (-1,)), self.power_levels_w)
        if not isinstance(action, dict) or set(action) != set(ACTION_KEYS):
            raise InvalidInput("a hybrid action is a dict with keys points, channels and powers_w")
        arrays = [np.asarray(action[k]) for k in ACTION_KEYS]
        for key, a in zip(ACTION_KEYS, arrays):
            if a.size != int(np.prod(shape)):
                raise InvalidInput(f"hybrid action {key!r} has shape {a.shape}, expected {shape}")
        return JointAction(*(a.reshape(shape) for a in arrays))

    def encode(self, action: JointAction) -> Any:
        """This format's action for a `JointAction` of one environment or a batch (discrete: the nearest power level)."""
        if self.action_format == "hybrid":
            return {
                "points": np.asarray(action.points, dtype=np.int64),
                "channels": np.asarray(action.channels, dtype=np.int64),
                "powers_w": np.asarray(action.powers_w, dtype=np.float32),
            }
        level = nearest_power_levels(action.powers_w, self.power_levels_w)
        triples = np.stack([np.asarray(action.points), np.asarray(action.channels), level], axis=-1)
        return triples.reshape(triples.shape[:-2] + (-1,)).astype(np.int64)

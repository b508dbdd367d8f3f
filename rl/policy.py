"""The scheduler-facing policy interface, and how a policy is named or loaded.

A `Policy` maps global states to joint actions. Everything that schedules devices - trained
MAHPPO actors, the stable-baselines3 baseline, the fixed and heuristic baselines - implements it,
so the simulator's evaluation and the runtime's scheduler treat them alike::

    policy = make_policy("runs/mahppo/policy.json", scenario)   # or "greedy", "search", ...
    action = policy.act(state)                                  # JointAction(points, channels, powers_w)
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, Sequence, runtime_checkable

import numpy as np

from coinfer.core.errors import InvalidInput, NotFound
from coinfer.rl.actions import JointAction
from coinfer.rl.scenario import Scenario, load_scenario

BASELINE_NAMES = ("local", "offload", "random", "greedy", "search")


@runtime_checkable
class Policy(Protocol):
    """Decides every device's split point, sub-channel and power from the global state."""

    name: str

    def act(self, observation: np.ndarray, deterministic: bool = True, rngs: Sequence[np.random.Generator] | None = None) -> JointAction:
        """Joint action for a global state (N * F,) or a batch of them (E, N * F).

        Every row is acted on alone: a row's action does not depend on the other rows, on how
        many there are, or on torch's thread count. A policy that draws (sampled actions, the
        ``random`` baseline) draws row e from ``rngs[e]`` when given (evaluation gives each
        episode its own), else from a generator of its own.
        """
        ...

    def reset(self) -> None:
        """Forget anything carried between steps (called at the start of an episode)."""
        ...


class FixedPolicy:
    """The same joint action whatever the state."""

    def __init__(self, name: str, action: JointAction) -> None:
        self.name = name
        self.action = JointAction(
            np.asarray(action.points, dtype=np.int64), np.asarray(action.channels, dtype=np.int64), np.asarray(action.powers_w, dtype=float)
        )

    def act(self, observation: np.ndarray, deterministic: bool = True, rngs: Sequence[np.random.Generator] | None = None) -> JointAction:
        obs = np.asarray(observation)
        if obs.ndim == 1:
            return self.action
        E = obs.shape[0]
        a = self.action
        return JointAction(np.tile(a.points, (E, 1)), np.tile(a.channels, (E, 1)), np.tile(a.powers_w, (E, 1)))

    def reset(self) -> None:
        pass


def make_policy(name_or_path: str | Path, scenario: Scenario | str, seed: int = 0, **options) -> Policy:
    """A baseline by name (``local``, ``offload``, ``random``, ``greedy``, ``search``) or a policy file.

    ``options`` go to the baseline (e.g. ``power_levels``, ``starts`` for ``search``).
    """
    scenario = load_scenario(scenario)
    text = str(name_or_path)
    if text in BASELINE_NAMES:
        from coinfer.rl import baselines

        return baselines.make_baseline(text, scenario, seed=seed, **options)
    if options:
        raise InvalidInput(f"options {sorted(options)} only apply to the baselines {', '.join(BASELINE_NAMES)}")
    return load_policy(text, scenario)


def load_policy(path: str | Path, scenario: Scenario | str | None = None) -> Policy:
    """A trained policy from its files (``policy.json`` + ``policy.safetensors``, or their folder).

    With a scenario, the policy is checked against it and acts within its devices' power
    ranges; a policy for a different number of devices, split points or sub-channels is refused.
    """
    from coinfer.rl.policy_files import read_policy_spec

    spec, json_path = read_policy_spec(path)
    scenario = load_scenario(scenario) if scenario is not None else None
    if spec.algo == "mahppo":
        from coinfer.rl.mahppo_policy import MahppoPolicy

        return MahppoPolicy.load(json_path, scenario)
    if spec.algo == "sb3-ppo":
        from coinfer.rl.sb3_ppo import Sb3Policy

        return Sb3Policy.load(json_path, scenario)
    raise NotFound(f"{json_path}: unknown policy algorithm {spec.algo!r}")

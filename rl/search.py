"""The ``search`` baseline: the best fixed joint action on a grid, by coordinate search.

The grid is every (split point, sub-channel, power level) per device, powers from
`power_grid_w`. From each start (all local, greedy, then random joint actions) the search visits
the devices in turn and gives each the grid value that maximises the evaluation reward with the
others held fixed, until a full round improves nothing. All of a device's candidates are
evaluated at once as one batch of environments; a candidate whose reward so far is already
below the best found stops counting (rewards only fall), and the batch stops when every
candidate has finished or fallen behind.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from coinfer.core.errors import InvalidInput
from coinfer.rl.actions import JointAction, power_grids_w
from coinfer.rl.baselines import GreedyPolicy, default_channels, power_bounds_w
from coinfer.rl.envs.batched import BatchedEnv
from coinfer.rl.policy import FixedPolicy
from coinfer.rl.scenario import Scenario


@dataclass(frozen=True)
class SearchResult:
    """The best fixed joint action found."""

    action: JointAction
    """Best joint action."""
    reward: float
    """Its mean evaluation reward."""
    candidates_evaluated: int
    """Joint actions simulated (pruned ones included)."""
    rounds: int
    """Coordinate rounds over all starts."""


def evaluate_fixed_actions(
    scenario: Scenario, points: np.ndarray, channels: np.ndarray, powers_w: np.ndarray, episodes: int = 1, seed: int = 0, floor: float = -np.inf
) -> np.ndarray:
    """Mean evaluation reward (C,) of C fixed joint actions given as (C, N) arrays.

    Candidates whose reward falls below ``floor`` get -inf (they cannot be the best).
    """
    C = points.shape[0]
    env = BatchedEnv(scenario, num_envs=C * episodes, mode="eval", seed=seed)
    env.reset()
    tile = lambda a: np.repeat(a, episodes, axis=0)  # noqa: E731
    action = JointAction(tile(points), tile(channels), tile(powers_w))
    total = np.zeros(C * episodes)
    finished = np.zeros(C * episodes, dtype=bool)
    while True:
        step = env.step(action)
        total += np.where(finished, 0.0, step.rewards)
        finished |= step.terminated | step.truncated
        behind = total < floor * episodes  # a mean can only stay above floor if every sum can
        if np.all(finished | behind):
            break
    mean = total.reshape(C, episodes).mean(axis=1)
    alive = ~(behind & ~finished).reshape(C, episodes).any(axis=1)
    return np.where(alive, mean, -np.inf)


def coordinate_search(
    scenario: Scenario, power_levels: int = 6, starts: int = 4, max_rounds: int = 6, episodes: int = 1, seed: int = 0
) -> SearchResult:
    """Best fixed joint action over the grid (see the module doc)."""
    if starts < 1 or max_rounds < 1:
        raise InvalidInput(f"starts and max_rounds must be >= 1, got {starts} and {max_rounds}")
    N, P, K = scenario.num_devices, scenario.num_points, scenario.num_subchannels
    low, high = power_bounds_w(scenario)
    grid_w = power_grids_w(low, high, power_levels)
    L = power_levels
    rng = np.random.default_rng(seed)

    # Starting points, as (points, channels, power levels).
    greedy = GreedyPolicy(scenario, power_levels).action_for_distances(np.array([d.eval_distance_m for d in scenario.devices]))
    greedy_levels = np.abs(np.log(grid_w) - np.log(greedy.powers_w)[:, None]).argmin(axis=1)
    start_list = [
        (np.full(N, P - 1), default_channels(scenario), np.full(N, L - 1)),
        (np.asarray(greedy.points), default_channels(scenario), greedy_levels),
    ]
    while len(start_list) < starts:
        start_list.append((rng.integers(0, P, N), rng.integers(0, K, N), rng.integers(0, L, N)))
    start_list = start_list[:starts]

    cand_p, cand_k, cand_l = (a.reshape(-1) for a in np.meshgrid(np.arange(P), np.arange(K), np.arange(L), indexing="ij"))
    best_reward, best = -np.inf, start_list[0]
    evaluated = rounds = 0
    for points, channels, levels in start_list:
        points, channels, levels = points.copy(), channels.copy(), levels.copy()
        current = float(evaluate_fixed_actions(scenario, points[None], channels[None], grid_w[np.arange(N), levels][None], episodes, seed)[0])
        evaluated += 1
        for _ in range(max_rounds):
            rounds += 1
            improved = False
            for n in range(N):
                C = cand_p.size
                cp, ck, cl = np.tile(points, (C, 1)), np.tile(channels, (C, 1)), np.tile(levels, (C, 1))
                cp[:, n], ck[:, n], cl[:, n] = cand_p, cand_k, cand_l
                rewards = evaluate_fixed_actions(scenario, cp, ck, grid_w[np.arange(N), cl], episodes, seed, floor=current)
                evaluated += C
                i = int(np.argmax(rewards))
                if rewards[i] > current + 1e-9:
                    current, improved = float(rewards[i]), True
                    points, channels, levels = cp[i], ck[i], cl[i]
            if not improved:
                break
        if current > best_reward or best_reward == -np.inf:
            best_reward, best = current, (points, channels, levels)
    points, channels, levels = best
    action = JointAction(points.copy(), channels.copy(), grid_w[np.arange(N), levels])
    return SearchResult(action, best_reward, evaluated, rounds)


def search_policy(scenario: Scenario, seed: int = 0, **options) -> FixedPolicy:
    """The ``search`` baseline as a policy (runs the search)."""
    stochastic = scenario.network.channel_model != "path-loss" or scenario.tasks.arrivals != "batch"
    options.setdefault("episodes", 3 if stochastic else 1)
    result = coordinate_search(scenario, seed=seed, **options)
    return FixedPolicy("search", result.action)

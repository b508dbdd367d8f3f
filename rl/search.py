"""The ``search`` baselines: the best fixed joint action on a grid, by coordinate search.

The grid is every (split point, sub-channel, power level) per device, powers from
`power_grid_w`. From each start (all local, greedy, then random joint actions) the search visits
the devices in turn and gives each the grid value that maximises the mean reward over a set of
episodes with the others held fixed, until a full round improves nothing. All of a device's
candidates are simulated at once as one batch of environments (every candidate on every
episode); a candidate whose rewards so far already sum below the best found stops counting
(rewards only fall), and the batch stops when every candidate has finished or fallen behind.

``search`` is tuned once, on tuning episodes drawn like the training episodes (disjoint from
every evaluation set): the static joint action a user could deploy. ``search-oracle`` is tuned
again on each evaluation episode, with foresight of that episode (`search_oracle`): a bound on
what any static action could do, not a policy. Coordinate search finds local optima, so the oracle
also starts from the deployed ``search`` action: it is then never below ``search`` on an episode.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from coinfer.core.errors import InvalidInput
from coinfer.rl.actions import JointAction, nearest_power_levels, power_grids_w
from coinfer.rl.baselines import GreedyPolicy, default_channels, power_bounds_w
from coinfer.rl.episodes import EpisodeSet
from coinfer.rl.policy import FixedPolicy
from coinfer.rl.scenario import Scenario
from coinfer.rl.sim.metrics import EpisodeMetrics

ORACLE_NAME = "search-oracle"
TUNING_EPISODES = 16
"""Tuning episodes of ``search`` by default (drawn like the training episodes)."""


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
    scenario: Scenario, points: np.ndarray, channels: np.ndarray, powers_w: np.ndarray, episodes: EpisodeSet, floor: float = -np.inf
) -> np.ndarray:
    """Mean reward (C,) over ``episodes`` of C fixed joint actions given as (C, N) arrays.

    Candidates whose mean reward falls below ``floor`` get -inf (they cannot be the best).
    """
    group = [tuple(range(len(episodes)))]
    return _group_rewards(scenario, episodes, group, points[None], channels[None], powers_w[None], np.array([floor]))[0]


def _group_rewards(
    scenario: Scenario, episodes: EpisodeSet, groups: list[tuple[int, ...]], points: np.ndarray, channels: np.ndarray, powers_w: np.ndarray,
    floors: np.ndarray,
) -> np.ndarray:
    """Mean reward (G, C) of C candidate joint actions per group, each (G, C, N), over the group's episodes.

    Every candidate runs on every episode of its group, all in one batch of environments; a
    candidate whose rewards so far sum below its group's floor stops counting and gets -inf.
    """
    G, C = points.shape[:2]
    env_group = np.concatenate([np.full(C * len(g), j) for j, g in enumerate(groups)])
    env_candidate = np.concatenate([np.repeat(np.arange(C), len(g)) for g in groups])
    env_episode = np.concatenate([np.tile(np.asarray(g), C) for g in groups])
    sim = episodes.simulator(scenario, env_episode)
    pick = lambda a: a[env_group, env_candidate]  # noqa: E731
    p, k, w = pick(points), pick(channels), pick(powers_w)
    cell = env_group * C + env_candidate
    sizes = np.array([len(g) for g in groups], dtype=float)
    total = np.zeros(env_group.size)
    finished = np.zeros(env_group.size, dtype=bool)
    while True:
        outcome = sim.step(p, k, w)
        total += np.where(finished, 0.0, outcome.reward)
        finished |= outcome.terminated | outcome.truncated
        sums = np.bincount(cell, weights=total, minlength=G * C).reshape(G, C)
        behind = sums < (floors * sizes)[:, None]  # the sums only fall
        if np.all(finished | behind.reshape(-1)[cell]):
            break
    return np.where(behind, -np.inf, sums / sizes[:, None])


def coordinate_search(
    scenario: Scenario, episodes: EpisodeSet, power_levels: int = 6, starts: int = 4, max_rounds: int = 6, seed: int = 0
) -> SearchResult:
    """Best fixed joint action over the grid for the mean reward over ``episodes`` (see the module doc)."""
    return _coordinate_search(scenario, episodes, [tuple(range(len(episodes)))], power_levels, starts, max_rounds, seed)[0]


MAX_ENVS = 4096
"""Most environments one batch of the search simulates (groups beyond it wait for the next batch)."""


def _coordinate_search(
    scenario: Scenario, episodes: EpisodeSet, groups: list[tuple[int, ...]], power_levels: int, starts: int, max_rounds: int, seed: int,
    progress: bool = False, also_from: JointAction | None = None,
) -> list[SearchResult]:
    """The coordinate search of every group of episodes at once (one result per group).

    Each group searches exactly as it would alone (the same starts, the same moves): the groups
    only share the batches their candidates are simulated in. ``also_from``: one more start after
    the ``starts`` (its powers rounded to the grid).
    """
    episodes.check(scenario)
    if starts < 1 or max_rounds < 1:
        raise InvalidInput(f"starts and max_rounds must be >= 1, got {starts} and {max_rounds}")
    N, P, K, G = scenario.num_devices, scenario.num_points, scenario.num_subchannels, len(groups)
    low, high = power_bounds_w(scenario)
    grid_w = power_grids_w(low, high, power_levels)
    L = power_levels
    rng = np.random.default_rng(seed)
    devices = np.arange(N)

    # Starting points, as (points, channels, power levels).
    greedy = GreedyPolicy(scenario, power_levels).action_for_distances(np.array([d.eval_distance_m for d in scenario.devices]))
    greedy_levels = nearest_power_levels(greedy.powers_w, grid_w)
    start_list = [
        (np.full(N, P - 1), default_channels(scenario), np.full(N, L - 1)),
        (np.asarray(greedy.points), default_channels(scenario), greedy_levels),
    ]
    while len(start_list) < starts:
        start_list.append((rng.integers(0, P, N), rng.integers(0, K, N), rng.integers(0, L, N)))
    start_list = start_list[:starts]
    if also_from is not None:
        if np.shape(also_from.points) != (N,) or np.shape(also_from.channels) != (N,) or np.shape(also_from.powers_w) != (N,):
            raise InvalidInput(f"also_from must be one joint action for the scenario's {N} devices, got shapes "
                               f"{np.shape(also_from.points)}, {np.shape(also_from.channels)}, {np.shape(also_from.powers_w)}")
        start_list.append((np.asarray(also_from.points), np.asarray(also_from.channels), nearest_power_levels(also_from.powers_w, grid_w)))

    cand_p, cand_k, cand_l = (a.reshape(-1) for a in np.meshgrid(np.arange(P), np.arange(K), np.arange(L), indexing="ij"))
    C = cand_p.size

    def rewards(active: np.ndarray, cp: np.ndarray, ck: np.ndarray, cl: np.ndarray, floors: np.ndarray) -> np.ndarray:
        """(len(active), c) mean rewards of candidates (len(active), c, N), in batches of at most MAX_ENVS environments."""
        per_batch = max(1, MAX_ENVS // (cp.shape[1] * max(len(groups[g]) for g in active)))
        out = []
        for b in range(0, active.size, per_batch):
            chosen = slice(b, b + per_batch)
            out.append(_group_rewards(scenario, episodes, [groups[g] for g in active[chosen]], cp[chosen], ck[chosen],
                                      grid_w[devices, cl[chosen]], floors[chosen]))
        return np.concatenate(out)

    best_reward = np.full(G, -np.inf)
    best = [start_list[0]] * G
    evaluated, rounds = np.zeros(G, dtype=np.int64), np.zeros(G, dtype=np.int64)
    bar = _bar(len(start_list) * max_rounds, progress, f"search {scenario.name}, {G} group(s)")
    for start in start_list:
        points, channels, levels = (np.tile(a, (G, 1)) for a in start)
        every = np.arange(G)
        current = rewards(every, points[:, None], channels[:, None], levels[:, None], np.full(G, -np.inf))[:, 0]
        evaluated += 1
        active = np.ones(G, dtype=bool)
        for _ in range(max_rounds):
            bar.update(1)
            live = np.flatnonzero(active)
            if live.size == 0:
                continue
            rounds[live] += 1
            improved = np.zeros(G, dtype=bool)
            for n in range(N):
                cp, ck, cl = (np.repeat(a[live][:, None], C, axis=1) for a in (points, channels, levels))
                cp[:, :, n], ck[:, :, n], cl[:, :, n] = cand_p, cand_k, cand_l
                r = rewards(live, cp, ck, cl, current[live])
                evaluated[live] += C
                i = r.argmax(axis=1)
                better = r[np.arange(live.size), i] > current[live] + 1e-9
                g = live[better]
                current[g] = r[better, i[better]]
                points[g], channels[g], levels[g] = cp[better, i[better]], ck[better, i[better]], cl[better, i[better]]
                improved[g] = True
            active &= improved
        for g in np.flatnonzero((current > best_reward) | (best_reward == -np.inf)):
            best_reward[g], best[g] = current[g], (points[g].copy(), channels[g].copy(), levels[g].copy())
    bar.close()
    return [SearchResult(JointAction(p.copy(), k.copy(), grid_w[devices, l]), float(best_reward[g]), int(evaluated[g]), int(rounds[g]))
            for g, (p, k, l) in enumerate(best)]


def _bar(total: int, enabled: bool, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="round", disable=not enabled)


def tuning_episodes(scenario: Scenario, count: int = TUNING_EPISODES) -> EpisodeSet:
    """What ``search`` is tuned on: ``count`` training-distribution episodes of the tuning role."""
    return EpisodeSet.of(scenario, count, cell="random", role="tuning")


def search_policy(scenario: Scenario, seed: int = 0, tuning: EpisodeSet | None = None, **options) -> FixedPolicy:
    """The ``search`` baseline as a policy: tuned on ``tuning`` (default `tuning_episodes`) now."""
    result = coordinate_search(scenario, tuning if tuning is not None else tuning_episodes(scenario), seed=seed, **options)
    return FixedPolicy("search", result.action)


def search_oracle(scenario: Scenario, episodes: EpisodeSet, seed: int = 0, progress: bool = False, also_from: JointAction | None = None,
                  **options) -> list[tuple[JointAction, EpisodeMetrics]]:
    """``search-oracle``: for every episode of ``episodes``, the action searched on that episode alone and its metrics there.

    The searches of all episodes run together (`_coordinate_search` with one group per episode).
    ``also_from`` (the deployed ``search`` action) is one more start of every episode's search, so
    the oracle is at least as good as it on each episode.
    """
    from coinfer.rl.evaluation import evaluate_policy

    options = {"power_levels": 6, "starts": 4, "max_rounds": 6, **options}
    found = _coordinate_search(scenario, episodes, [(i,) for i in range(len(episodes))], seed=seed, progress=progress, also_from=also_from, **options)
    return [(r.action, evaluate_policy(FixedPolicy(ORACLE_NAME, r.action), scenario, episodes.subset([i])).per_episode[0]) for i, r in enumerate(found)]

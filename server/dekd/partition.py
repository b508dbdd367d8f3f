"""Class partition: which classes each device's sub-model specialises in.

* ``random`` reproduces DeViT: a seeded shuffle of the classes cut into N equal chunks.
* ``affinity`` (our default) puts classes the teacher confuses, or embeds close together, in the
  same group. A specialist then learns the fine distinctions inside its group, and the fusion
  only has to tell groups apart, which is the easy part; split across devices, two confusable
  classes would be separated by no model at all.

Groups are balanced in both methods: sizes differ by at most one class.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from coinfer.core.errors import InvalidInput

PartitionMethod = Literal["affinity", "random"]
PARTITION_METHODS: tuple[str, ...] = ("affinity", "random")


def check_group_count(num_classes: int, num_groups: int) -> None:
    """N must be at least 2 and at most the number of classes (every device needs a class)."""
    if isinstance(num_groups, bool) or not isinstance(num_groups, int) or num_groups < 2:
        raise InvalidInput(f"the number of devices must be an integer >= 2, got {num_groups!r}")
    if num_groups > num_classes:
        raise InvalidInput(
            f"{num_groups} devices but only {num_classes} classes: every device needs at least one class of its own"
        )


def group_sizes(num_classes: int, num_groups: int) -> list[int]:
    """Balanced sizes, larger groups first: 10 classes in 4 groups gives [3, 3, 2, 2]."""
    base, extra = divmod(num_classes, num_groups)
    return [base + (1 if g < extra else 0) for g in range(num_groups)]


def random_partition(num_classes: int, num_groups: int, seed: int = 0) -> list[list[int]]:
    """DeViT's partition: shuffle the class ids with ``seed`` and cut them into balanced chunks."""
    check_group_count(num_classes, num_groups)
    order = np.random.default_rng(seed).permutation(num_classes).tolist()
    groups, start = [], 0
    for size in group_sizes(num_classes, num_groups):
        groups.append(sorted(order[start : start + size]))
        start += size
    return groups


def class_affinity(
    logits: np.ndarray, labels: np.ndarray, cls_features: np.ndarray, num_classes: int, weight_embedding: float = 0.5
) -> np.ndarray:
    """Symmetric class-by-class affinity in [0, 1] from the teacher's outputs on labelled images.

    Blends two signals, each scaled to [0, 1]:
    * confusion: the softmax mass the teacher puts on class j for images of class i, plus j on i;
      soft probabilities instead of argmax counts so that a confident teacher still ranks pairs;
    * embedding: cosine similarity of the class-mean CLS features.
    """
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels)
    feats = np.asarray(cls_features, dtype=np.float64)
    if logits.shape != (len(labels), num_classes) or len(feats) != len(labels):
        raise InvalidInput(
            f"affinity needs logits (n, {num_classes}) and features (n, d) for n labels, "
            f"got {logits.shape}, {feats.shape} and {len(labels)}"
        )
    missing = sorted(set(range(num_classes)) - set(np.unique(labels).tolist()))
    if missing:
        raise InvalidInput(f"affinity needs images of every class; none for class(es) {missing}")
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    confusion = np.stack([p[labels == c].mean(axis=0) for c in range(num_classes)])
    np.fill_diagonal(confusion, 0.0)
    confusion = confusion + confusion.T
    centroids = np.stack([feats[labels == c].mean(axis=0) for c in range(num_classes)])
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True) + 1e-12
    cosine = centroids @ centroids.T
    np.fill_diagonal(cosine, 0.0)
    return (1 - weight_embedding) * _unit_range(confusion) + weight_embedding * _unit_range(cosine)


def _unit_range(m: np.ndarray) -> np.ndarray:
    off = ~np.eye(len(m), dtype=bool)
    lo, hi = m[off].min(), m[off].max()
    out = np.zeros_like(m) if hi - lo < 1e-12 else (m - lo) / (hi - lo)
    np.fill_diagonal(out, 0.0)
    return out


def _within_score(affinity: np.ndarray, groups: list[list[int]]) -> float:
    return float(sum(affinity[np.ix_(g, g)].sum() for g in groups) / 2)


def affinity_partition(affinity: np.ndarray, num_groups: int, restarts: int = 16, max_rounds: int = 1000) -> list[list[int]]:
    """Balanced groups that maximise the total affinity inside groups.

    Pairwise-swap local search (always the best swap, until none helps) from a greedy start
    (each group seeded with the class least attached to the groups so far, grown by the class
    most attached to it) and from ``restarts`` seeded random balanced starts; the best result
    is kept. Deterministic for a given matrix.
    """
    a = np.asarray(affinity, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise InvalidInput(f"affinity must be a square matrix, got shape {a.shape}")
    num_classes = a.shape[0]
    check_group_count(num_classes, num_groups)
    a = (a + a.T) / 2
    np.fill_diagonal(a, 0.0)
    sizes = group_sizes(num_classes, num_groups)
    rng = np.random.default_rng(0)
    starts = [_greedy_start(a, sizes)]
    base = np.repeat(np.arange(num_groups), sizes)
    starts += [rng.permutation(base) for _ in range(restarts)]
    best_labels, best_score = None, -np.inf
    for labels in starts:
        labels = _swap_search(a, labels.copy(), num_groups, max_rounds)
        score = _within_score(a, _groups_of(labels, num_groups))
        if score > best_score + 1e-12:
            best_labels, best_score = labels, score
    return _groups_of(best_labels, num_groups)


def _groups_of(labels: np.ndarray, num_groups: int) -> list[list[int]]:
    return [sorted(np.flatnonzero(labels == g).tolist()) for g in range(num_groups)]


def _greedy_start(a: np.ndarray, sizes: list[int]) -> np.ndarray:
    labels = np.full(len(a), -1)
    for g, size in enumerate(sizes):
        free = np.flatnonzero(labels < 0)
        taken = np.flatnonzero(labels >= 0)
        # Seed: the free class least attached to what is already taken (most attached to nothing).
        seed_score = a[np.ix_(free, taken)].sum(axis=1) if len(taken) else -a[free].sum(axis=1)
        members = [int(free[np.argmin(seed_score)])]
        labels[members[0]] = g
        while len(members) < size:
            free = np.flatnonzero(labels < 0)
            best = int(free[np.argmax(a[np.ix_(free, members)].sum(axis=1))])
            members.append(best)
            labels[best] = g
    return labels


def _swap_search(a: np.ndarray, labels: np.ndarray, num_groups: int, max_rounds: int) -> np.ndarray:
    """Apply the best swap of two classes of different groups while it raises the within total.

    With M[c, g] the affinity of class c to group g, swapping c1 (group g1) and c2 (group g2)
    changes the total by M[c2, g1] + M[c1, g2] - 2 a[c1, c2] - M[c1, g1] - M[c2, g2].
    """
    idx = np.arange(len(a))
    for _ in range(max_rounds):
        member = np.zeros((len(a), num_groups))
        member[idx, labels] = 1.0
        m = a @ member
        own = m[idx, labels]
        cross = m[:, labels]  # cross[c2, c1] = M[c2, g(c1)]
        gain = cross.T + cross - 2 * a - own[:, None] - own[None, :]
        gain[labels[:, None] == labels[None, :]] = -np.inf
        c1, c2 = np.unravel_index(np.argmax(gain), gain.shape)
        if gain[c1, c2] <= 1e-12:
            break
        labels[c1], labels[c2] = labels[c2], labels[c1]
    return labels


def within_group_affinity(affinity: np.ndarray, groups: list[list[int]]) -> float:
    """Total affinity of the class pairs that share a group (what affinity_partition maximises)."""
    a = np.asarray(affinity, dtype=np.float64)
    return _within_score((a + a.T) / 2, groups)


def order_groups_for_devices(groups: list[list[int]], speeds: list[float]) -> list[list[int]]:
    """Give the larger groups to the faster devices (ties keep device order); sizes differ by at most one."""
    if len(groups) != len(speeds):
        raise InvalidInput(f"{len(groups)} groups for {len(speeds)} devices")
    by_size = sorted(groups, key=lambda g: (-len(g), g))
    device_order = sorted(range(len(speeds)), key=lambda i: (-speeds[i], i))
    out: list[list[int]] = [[] for _ in speeds]
    for group, device in zip(by_size, device_order):
        out[device] = group
    return out

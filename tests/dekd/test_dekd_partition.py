import numpy as np
import pytest

from coinfer.core.errors import InvalidInput
from coinfer.server.dekd import partition as part


def test_random_partition_is_balanced_seeded_and_covers_every_class():
    a = part.random_partition(100, 4, seed=3)
    assert [len(g) for g in a] == [25] * 4
    assert sorted(c for g in a for c in g) == list(range(100))
    assert a == part.random_partition(100, 4, seed=3)
    assert a != part.random_partition(100, 4, seed=4)
    assert [len(g) for g in part.random_partition(10, 4)] == [3, 3, 2, 2]


@pytest.mark.parametrize("classes,groups", [(10, 1), (10, 0), (3, 4)])
def test_group_counts_outside_2_to_classes_are_refused(classes, groups):
    with pytest.raises(InvalidInput, match="devices"):
        part.random_partition(classes, groups)


def _planted(sizes, seed=0):
    """An affinity matrix with strong blocks of the given sizes over randomly chosen classes."""
    rng = np.random.default_rng(seed)
    block = rng.permutation(np.repeat(np.arange(len(sizes)), sizes))
    a = rng.uniform(0, 0.2, (len(block), len(block))) + (block[:, None] == block[None, :])
    a = (a + a.T) / 2
    np.fill_diagonal(a, 0)
    truth = [sorted(np.flatnonzero(block == b).tolist()) for b in range(len(sizes))]
    return a, truth


def test_affinity_partition_recovers_planted_groups_and_beats_random():
    a, truth = _planted([3, 3, 2, 2])
    groups = part.affinity_partition(a, 4)
    assert sorted(map(sorted, groups)) == sorted(truth)
    assert part.within_group_affinity(a, groups) > part.within_group_affinity(a, part.random_partition(10, 4, seed=0))


def test_affinity_from_teacher_outputs_links_confused_classes():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 50)
    logits = np.full((200, 4), -5.0)
    logits[np.arange(200), labels] = 2.0
    # the teacher hesitates between 0 and 1 only
    logits[labels == 0, 1] = 1.5
    logits[labels == 1, 0] = 1.5
    feats = rng.normal(size=(200, 8))
    a = part.class_affinity(logits, labels, feats, 4, weight_embedding=0.0)
    assert a[0, 1] == a.max() and np.allclose(a, a.T)
    assert sorted(map(sorted, part.affinity_partition(a, 2))) == [[0, 1], [2, 3]]
    with pytest.raises(InvalidInput, match="class"):
        part.class_affinity(logits[labels != 3], labels[labels != 3], feats[labels != 3], 4)


def test_larger_groups_go_to_faster_devices():
    groups = [[0, 1], [2, 3, 4], [5, 6], [7, 8, 9]]
    ordered = part.order_groups_for_devices(groups, [0.5, 1.0, 0.5, 1.0])
    assert [len(g) for g in ordered] == [2, 3, 2, 3]
    assert sorted(map(tuple, ordered)) == sorted(map(tuple, groups))

"""Which live device runs which DeViT sub-model.

Placement is sticky: a sub-model stays where it is while its device is live, so a device that
dies costs only its own sub-models (each then goes to the least-loaded live device, which
downloads it), and a device that joins takes sub-models from the most-loaded ones until every
device holds within one of every other. Ties go to the device registered first, so the result
depends only on the inputs.
"""

from __future__ import annotations

from typing import Mapping, Sequence

SubModelKey = tuple[str, int]
"""(DeViT model name, sub-model index)."""


def place_submodels(
    submodels: Sequence[SubModelKey],
    current: Mapping[str, Sequence[SubModelKey]],
    live: Sequence[str],
) -> dict[str, tuple[SubModelKey, ...]]:
    """New holdings of every live device (in ``live`` order) given the current ones.

    ``submodels`` lists every sub-model to place; ``current`` maps device ids (live or not) to
    what they hold now. With no live device, nothing is placed.
    """
    wanted = list(dict.fromkeys(submodels))
    holdings: dict[str, list[SubModelKey]] = {device: [] for device in live}
    if not live:
        return {}
    placed: set[SubModelKey] = set()
    for device in live:
        for key in current.get(device, ()):
            if key in wanted and key not in placed:
                holdings[device].append(key)
                placed.add(key)
    rank = {device: i for i, device in enumerate(live)}

    def least_loaded() -> str:
        return min(live, key=lambda d: (len(holdings[d]), rank[d]))

    def most_loaded() -> str:
        return max(live, key=lambda d: (len(holdings[d]), -rank[d]))

    for key in wanted:
        if key not in placed:
            holdings[least_loaded()].append(key)
            placed.add(key)
    while True:
        high, low = most_loaded(), least_loaded()
        if len(holdings[high]) - len(holdings[low]) <= 1:
            break
        holdings[low].append(holdings[high].pop())
    order = {key: i for i, key in enumerate(wanted)}
    return {device: tuple(sorted(keys, key=order.__getitem__)) for device, keys in holdings.items()}

"""A heavy-hitters counter with a fixed memory bound.

Audit logs have few distinct (user, verb, resource) combinations compared with their event
counts, so :class:`TopCounter` usually holds every key and is exact. When more than ``capacity``
distinct keys arrive, it evicts the lightest tenth of its entries at once and remembers the
largest evicted weight as ``floor``; a key that arrives later starts at ``floor`` plus its
weight, with ``floor`` recorded as its possible error (the batch form of the Space-Saving
algorithm, Metwally et al. 2005). Hence, for every reported key:

    reported weight - error <= true weight <= reported weight

and any key heavier than ``floor`` at the end is certainly in the table. ``events`` and ``extra``
count from the key's last entry into the table (lower bounds when its error is not zero). Memory
is bounded by ``capacity`` entries whatever the input.
"""

from __future__ import annotations

from bisect import bisect_left
from operator import itemgetter
from typing import Any, Hashable

_WEIGHT = itemgetter(0)


class TopCounter:
    __slots__ = ("capacity", "entries", "floor", "evicted_keys")

    def __init__(self, capacity: int = 10_000):
        self.capacity = capacity
        # key -> [weight, events, error, extra]; extra is summed alongside (e.g. a byte change)
        self.entries: dict[Hashable, list[int]] = {}
        self.floor = 0
        self.evicted_keys = 0

    def add(self, key: Hashable, weight: int, events: int = 1, extra: int = 0) -> None:
        """Count ``events`` of ``key`` weighing ``weight`` (>= 0) in all."""
        entry = self.entries.get(key)
        if entry is not None:
            entry[0] += weight
            entry[1] += events
            entry[3] += extra
            return
        if len(self.entries) >= self.capacity:
            self._evict()
        self.entries[key] = [self.floor + weight, events, self.floor, extra]

    def _evict(self) -> None:
        """Remove the lightest tenth: the first ``count`` entries of a stable sort by weight (the
        lightest, the older first among equal weights), found without sorting the entries."""
        count = max(1, self.capacity // 10)
        weights = sorted(map(_WEIGHT, self.entries.values()))
        threshold = weights[count - 1]
        ties = count - bisect_left(weights, threshold)  # entries of the threshold weight to evict
        victims = []
        for key, entry in self.entries.items():
            weight = entry[0]
            if weight < threshold:
                victims.append(key)
            elif weight == threshold and ties:
                ties -= 1
                victims.append(key)
        for key in victims:
            del self.entries[key]
        self.floor = max(self.floor, threshold)
        self.evicted_keys += len(victims)

    @property
    def exact(self) -> bool:
        return self.evicted_keys == 0

    def top(self, n: int) -> list[tuple[Any, int, int, int, int]]:
        """The ``n`` heaviest keys as (key, weight, events, error, extra), heaviest first, ties by key."""
        ranked = sorted(self.entries.items(), key=lambda item: (-item[1][0], repr(item[0])))
        return [(key, entry[0], entry[1], entry[2], entry[3]) for key, entry in ranked[:n]]

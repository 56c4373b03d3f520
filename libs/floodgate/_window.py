"""A sliding time window of counters, kept in buckets so memory stays bounded under load.

Used by the circuit breaker (calls, failures, slow calls) and the retry budget (calls,
retries). Events older than ``window`` seconds drop out at bucket granularity
(``window / buckets``): an event in the bucket starting at ``s`` counts until
``s + window``.
"""

from __future__ import annotations

import math
from collections import deque

__all__ = ["RollingCounts"]


class RollingCounts:
    """``fields`` counters summed over the last ``window`` seconds (``buckets`` buckets)."""

    __slots__ = ("_buckets", "_index", "_nfields", "_totals", "_width", "buckets", "window")

    def __init__(self, window: float, *, fields: int, buckets: int = 20):
        if window <= 0 or buckets < 1:
            raise ValueError("window must be > 0 and buckets >= 1")
        self.window = window
        self.buckets = buckets
        self._width = window / buckets
        self._nfields = fields
        self._buckets: deque[list[int]] = deque()  # [bucket index, field counts...]
        self._totals = [0] * fields
        self._index = -math.inf

    def _advance(self, now: float) -> int:
        index = int(now // self._width)
        if index < self._index:
            # A caller's ``now`` read before an await can be older than one already recorded:
            # count it in the current bucket, so the buckets stay in order and expire in order.
            return int(self._index)
        if index != self._index:
            self._index = index
            oldest_kept = index - self.buckets + 1
            buckets = self._buckets
            while buckets and buckets[0][0] < oldest_kept:
                expired = buckets.popleft()
                for i in range(self._nfields):
                    self._totals[i] -= expired[i + 1]
        return index

    def add(self, now: float, *counts: int) -> None:
        index = self._advance(now)
        buckets = self._buckets
        if not buckets or buckets[-1][0] != index:
            buckets.append([index] + [0] * self._nfields)
        bucket = buckets[-1]
        for i, count in enumerate(counts):
            bucket[i + 1] += count
            self._totals[i] += count

    def totals(self, now: float) -> tuple[int, ...]:
        self._advance(now)
        return tuple(self._totals)

    def clear(self) -> None:
        self._buckets.clear()
        self._totals = [0] * self._nfields

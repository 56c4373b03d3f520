"""RollingCounts: the sliding window under the breaker and the retry budget."""

from __future__ import annotations

from floodgate._window import RollingCounts


def test_events_count_until_their_bucket_leaves_the_window() -> None:
    counts = RollingCounts(10.0, fields=2, buckets=10)
    counts.add(5.5, 1, 0)
    counts.add(9.0, 1, 1)
    assert counts.totals(14.99) == (2, 1)
    assert counts.totals(15.0) == (1, 1)  # the bucket [5, 6) is gone
    assert counts.totals(19.0) == (0, 0)


def test_a_late_timestamp_counts_in_the_current_bucket_and_memory_stays_bounded() -> None:
    # Concurrent callers pass a ``now`` read before their last await: it can go backwards.
    counts = RollingCounts(10.0, fields=1, buckets=10)
    for _ in range(100):
        counts.add(5.1, 1)
        counts.add(4.2, 1)
    assert counts.totals(5.9) == (200,)
    assert len(counts._buckets) == 1
    assert counts.totals(15.0) == (0,)

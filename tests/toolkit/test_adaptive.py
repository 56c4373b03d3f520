"""AdaptiveLimit: a concurrency limit that follows the latency of completed requests.

It is pure bookkeeping over the times it is given, so every case here feeds explicit times and
checks exact limits: no clock at all, nothing to tolerate.
"""

from __future__ import annotations

import math

import floodgate
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st


def run_interval(
    limit: floodgate.AdaptiveLimit, now: float, latency: float, *, n: int = 10, used: int | None = None
) -> float:
    """``n`` requests of ``latency`` completing over one interval ending at ``now + interval``;
    ``used`` requests inside at the busiest moment (default: the whole limit)."""
    limit.note_in_flight(limit.limit if used is None else used)
    step = limit.interval / n
    updated = [limit.observe(latency, now + step * (i + 1)) for i in range(n)]
    assert updated == [False] * (n - 1) + [True]
    return now + limit.interval


def test_steady_latency_keeps_the_ceiling() -> None:
    limit = floodgate.AdaptiveLimit(27, floor=7)
    now = 0.0
    for _ in range(20):
        now = run_interval(limit, now, 0.62)
    assert limit.limit == 27
    stats = limit.statistics()
    assert (stats.baseline, stats.last_latency, stats.updates) == (0.62, 0.62, 20)


def test_latency_above_tolerance_lowers_the_limit_by_the_gradient() -> None:
    limit = floodgate.AdaptiveLimit(27, floor=7, tolerance=1.2, smoothing=0.2)
    now = run_interval(limit, 0.0, 0.5)  # baseline 0.5
    now = run_interval(limit, now, 1.0)  # twice the baseline: gradient 1.2 * 0.5 / 1.0 = 0.6
    # target 27 * 0.6 = 16.2; estimate 27 + 0.2 * (16.2 - 27) = 24.84
    assert limit.limit == 24
    now = run_interval(limit, now, 1.0)
    # estimate 24.84 + 0.2 * (24.84 * 0.6 - 24.84) = 22.8528
    assert limit.limit == 22


def test_within_tolerance_is_not_a_reason_to_shrink() -> None:
    limit = floodgate.AdaptiveLimit(27, floor=7, tolerance=1.2)
    now = run_interval(limit, 0.0, 0.5)
    for _ in range(10):
        now = run_interval(limit, now, 0.59)  # 1.18x the baseline
    assert limit.limit == 27


def test_a_latency_far_above_the_baseline_shrinks_by_at_most_half_per_target() -> None:
    limit = floodgate.AdaptiveLimit(20, floor=1, smoothing=1.0)
    now = run_interval(limit, 0.0, 0.1)
    run_interval(limit, now, 10.0)  # gradient 0.012 is held at 0.5
    assert limit.limit == 10


def test_the_limit_never_goes_below_the_floor() -> None:
    limit = floodgate.AdaptiveLimit(27, floor=7)
    now = run_interval(limit, 0.0, 0.5)
    for _ in range(50):
        now = run_interval(limit, now, 5.0, used=7)
    assert limit.limit == 7


def test_recovery_grows_by_the_square_root_back_to_the_ceiling_and_no_further() -> None:
    limit = floodgate.AdaptiveLimit(27, floor=7, smoothing=0.2)
    now = run_interval(limit, 0.0, 0.5)
    for _ in range(50):
        now = run_interval(limit, now, 5.0)
    assert limit.limit == 7
    now = run_interval(limit, now, 0.5)  # estimate 7 + 0.2 * sqrt(7) = 7.529
    assert limit.limit == 7
    now = run_interval(limit, now, 0.5)  # 7.529 + 0.2 * sqrt(7.529) = 8.078
    assert limit.limit == 8
    seen = []
    for _ in range(40):
        now = run_interval(limit, now, 0.5)
        seen.append(limit.limit)
    assert seen == sorted(seen)
    assert seen[-1] == 27


def test_an_unused_limit_does_not_grow() -> None:
    limit = floodgate.AdaptiveLimit(27, floor=7)
    now = run_interval(limit, 0.0, 0.5)
    for _ in range(20):
        now = run_interval(limit, now, 5.0)
    low = limit.limit
    for _ in range(20):
        now = run_interval(limit, now, 0.5, used=low // 2 - 1)  # a quiet period: under half used
    assert limit.limit == low
    for _ in range(2):  # the first step up is less than one request
        now = run_interval(limit, now, 0.5, used=low // 2 + 1)
    assert limit.limit > low


def test_no_update_before_the_interval_ends_or_before_min_samples() -> None:
    limit = floodgate.AdaptiveLimit(27, interval=1.0, min_samples=10)
    limit.note_in_flight(27)
    # Ten completions within 0.6 s of the first request's start: not an interval yet.
    assert not any(limit.observe(0.1, 0.05 * i) for i in range(1, 11))
    # The interval (from the first request's start, 0.05 - 0.1) has passed and ten are counted.
    assert limit.observe(0.1, 0.95) is True
    assert limit.statistics().updates == 1
    # A slow trickle: the interval passes long before ten complete, so nothing updates until they do.
    assert not any(limit.observe(5.0, 0.95 + 3.0 * i) for i in range(1, 10))
    assert limit.observe(5.0, 31.0) is True


def test_a_lasting_slowdown_becomes_the_new_baseline_after_the_window() -> None:
    limit = floodgate.AdaptiveLimit(27, floor=7, baseline_window=10.0)
    now = run_interval(limit, 0.0, 0.5)
    for _ in range(5):
        now = run_interval(limit, now, 1.0)
    assert limit.limit < 27
    assert limit.baseline == 0.5
    seen = []
    for _ in range(40):
        now = run_interval(limit, now, 1.0)  # the 0.5 s interval leaves the window at 10 s
        seen.append(limit.limit)
    assert limit.baseline == 1.0
    lowest = seen.index(min(seen))
    assert lowest < 10  # it fell while 0.5 s was the baseline...
    assert seen[lowest:] == sorted(seen[lowest:])  # ...then rose...
    assert seen[-1] == 27  # ...back to the ceiling: the slow state is the new normal


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ceiling": 5, "floor": 6}, "floor <= ceiling"),
        ({"ceiling": 5, "floor": 0}, "floor <= ceiling"),
        ({"ceiling": 5, "tolerance": 0.9}, "tolerance"),
        ({"ceiling": 5, "smoothing": 0.0}, "smoothing"),
        ({"ceiling": 5, "interval": 2.0, "baseline_window": 1.0}, "baseline_window"),
    ],
)
def test_invalid_settings_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        floodgate.AdaptiveLimit(**kwargs)


@settings(max_examples=200, deadline=None)
@given(
    ceiling=st.integers(1, 200),
    latencies=st.lists(st.floats(0.001, 30.0), min_size=1, max_size=400),
    used=st.lists(st.integers(0, 250), min_size=1, max_size=400),
)
def test_the_limit_stays_between_floor_and_ceiling(
    ceiling: int, latencies: list[float], used: list[int]
) -> None:
    floor = max(1, math.ceil(ceiling / 4))
    limit = floodgate.AdaptiveLimit(ceiling, floor=floor, min_samples=1, interval=0.5)
    now = 0.0
    for i, latency in enumerate(latencies):
        limit.note_in_flight(used[i % len(used)])
        now += 0.2
        limit.observe(latency, now)
        assert floor <= limit.limit <= ceiling


def run_queued_interval(
    limit: floodgate.AdaptiveLimit, now: float, latency: float, waiting: list[int]
) -> float:
    """One interval at ``latency`` in which entering requests saw ``waiting`` at the bottleneck."""
    for w in waiting:
        limit.note_queue(w)
    return run_interval(limit, now, latency)


def test_a_queue_at_the_bottleneck_beyond_the_allowance_lowers_the_limit_by_the_excess() -> None:
    limit = floodgate.AdaptiveLimit(27, floor=7, smoothing=1.0, queue_allowance=1.0)
    now = run_queued_interval(limit, 0.0, 0.6, [0, 0, 0, 0])
    assert limit.limit == 27
    # latency within tolerance, but on average 4 requests waited at the bottleneck: 3 too many
    now = run_queued_interval(limit, now, 0.65, [3, 5, 4, 4])
    assert limit.limit == 24
    assert limit.statistics().last_queue == 4.0
    # within the allowance: free to grow again (the door was used)
    now = run_queued_interval(limit, now, 0.6, [1, 0, 1, 0])
    assert limit.limit == 27  # 24 + sqrt(24), clamped


def test_a_queue_that_waits_within_the_tolerance_is_a_buffer_not_a_reason_to_shrink() -> None:
    # A slow provider: answers take 1.2 s, 10 complete a second. A queue of 2 (above the allowance
    # of 1) waits 2 / 10 = 0.2 s by Little's law, within the 0.2 x 1.2 = 0.24 s the tolerance allows:
    # it keeps the bottleneck busy through jitter, and the door keeps its limit (and grows when used).
    limit = floodgate.AdaptiveLimit(27, floor=7, smoothing=1.0, queue_allowance=1.0)
    now = run_queued_interval(limit, 0.0, 1.2, [0, 0, 0, 0])
    for _ in range(5):
        now = run_queued_interval(limit, now, 1.2, [2, 2, 2, 2])
        assert limit.limit == 27
    # a queue of 4 waits 0.4 s: it costs, and the limit drops by the excess
    run_queued_interval(limit, now, 1.2, [4, 4, 4, 4])
    assert limit.limit == 24


def test_a_queue_within_the_allowance_or_no_allowance_changes_nothing() -> None:
    within = floodgate.AdaptiveLimit(27, floor=7, smoothing=1.0, queue_allowance=2.0)
    ignored = floodgate.AdaptiveLimit(27, floor=7, smoothing=1.0)
    now = 0.0
    for _ in range(5):
        run_queued_interval(within, now, 0.6, [2, 2, 1, 3])
        now = run_queued_interval(ignored, now, 0.6, [9, 9, 9, 9])
    assert within.limit == ignored.limit == 27


def test_a_queue_and_a_slow_interval_take_the_lower_target_and_at_most_half() -> None:
    limit = floodgate.AdaptiveLimit(20, floor=1, smoothing=1.0, queue_allowance=0.0)
    now = run_queued_interval(limit, 0.0, 0.5, [0])
    # latency: 20 x 1.2 x 0.5 / 1.0 = 12; queue: 20 - 2 = 18: the lower wins
    now = run_queued_interval(limit, now, 1.0, [2])
    assert limit.limit == 12
    # a queue of 100: at most half per interval
    run_queued_interval(limit, now, 0.5, [100])
    assert limit.limit == 6


def test_with_the_queue_reported_a_latency_rise_and_nothing_waiting_holds_and_becomes_the_baseline() -> None:
    # A provider answering in 400 ms instead of 0: at the same arrival rate the requests need more
    # in flight, not fewer. Without a queue the rise is the work's, not the load's.
    limit = floodgate.AdaptiveLimit(26, floor=7, queue_allowance=1.0)
    now = run_queued_interval(limit, 0.0, 0.2, [0, 0, 0])
    for _ in range(30):
        now = run_queued_interval(limit, now, 0.6, [0, 0, 0])
        assert limit.limit == 26
    assert limit.baseline == pytest.approx(0.6)  # the fast past is dropped at once, not after baseline_window
    # the same rise with the latency-only rule (nothing reported) shrinks it to the floor
    blind = floodgate.AdaptiveLimit(26, floor=7)
    now = run_interval(blind, 0.0, 0.2)
    for _ in range(30):
        now = run_interval(blind, now, 0.6)
    assert blind.limit == 7


def test_after_a_shift_a_queue_is_judged_against_the_latency_the_work_has_now() -> None:
    limit = floodgate.AdaptiveLimit(26, floor=7, smoothing=1.0, queue_allowance=1.0)
    now = run_queued_interval(limit, 0.0, 0.2, [0])
    now = run_queued_interval(limit, now, 0.6, [0])  # the provider slowed: the new baseline
    assert (limit.limit, limit.baseline) == (26, pytest.approx(0.6))
    # now something waits (within the allowance) and answers take 1.2 s: twice the new baseline,
    # gradient 1.2 x 0.6 / 1.2 = 0.6 (against the old 0.2 s it would have been held at 0.5)
    now = run_queued_interval(limit, now, 1.2, [1, 0, 1, 0])
    assert limit.limit == math.floor(26 * 0.6)
    assert limit.baseline == pytest.approx(0.6)  # an interval with a queue never moves the baseline up
    # faster again with nothing waiting: the faster latency is the best of the window
    run_queued_interval(limit, now, 0.2, [0])
    assert limit.baseline == pytest.approx(0.2)


def test_with_the_queue_reported_a_rise_within_tolerance_changes_nothing_either_way() -> None:
    limit = floodgate.AdaptiveLimit(26, floor=7, queue_allowance=1.0)
    now = run_queued_interval(limit, 0.0, 0.5, [0])
    now = run_queued_interval(limit, now, 0.59, [0])  # 1.18x: within tolerance
    assert limit.baseline == 0.5  # not a shift: the best stays
    run_queued_interval(limit, now, 0.59, [1])
    assert limit.limit == 26


def test_a_resize_keeps_the_learned_place_under_the_new_ceiling_and_the_baseline() -> None:
    """The share of the bottleneck halves (a second process joined): a limit learned down to 24 of
    27 is as far under the new ceiling, and the latencies learned stay the baseline."""
    limit = floodgate.AdaptiveLimit(27, floor=7, tolerance=1.2, smoothing=0.2)
    now = run_interval(limit, 0.0, 0.5)
    now = run_interval(limit, now, 1.0)
    assert limit.limit == 24  # estimate 24.84
    limit.resize(13, floor=4)
    # 24.84 / 27 x 13 = 11.96
    assert (limit.limit, limit.ceiling, limit.floor, limit.baseline) == (11, 13, 4, 0.5)
    limit.resize(27, floor=7)  # back: the same place again, nothing lost on the way
    assert limit.limit == 24
    for _ in range(20):
        now = run_interval(limit, now, 0.5)
    assert limit.limit == 27  # and it recovers to the ceiling as before, no further


def test_a_resize_to_nothing_admits_nothing_and_starts_again_at_the_ceiling() -> None:
    limit = floodgate.AdaptiveLimit(27, floor=7)
    now = run_interval(limit, 0.0, 0.5)
    now = run_interval(limit, now, 1.0)
    limit.resize(0, floor=0)  # a process that holds no share (a joiner, a fenced one)
    assert limit.limit == 0
    run_interval(limit, now, 0.5, used=0)  # what completes meanwhile moves nothing
    assert limit.limit == 0
    limit.resize(13, floor=4)
    assert limit.limit == 13


@pytest.mark.parametrize(("ceiling", "floor"), [(13, 0), (13, 14), (0, 1), (-1, 0)])
def test_a_resize_checks_floor_and_ceiling(ceiling: int, floor: int) -> None:
    limit = floodgate.AdaptiveLimit(27, floor=7)
    with pytest.raises(ValueError, match="floor <= ceiling"):
        limit.resize(ceiling, floor=floor)
    assert (limit.limit, limit.ceiling, limit.floor) == (27, 27, 7)


def run_spread_interval(
    limit: floodgate.AdaptiveLimit, now: float, latencies: list[float], waiting: list[int]
) -> float:
    """One interval whose requests took ``latencies`` (their spread is the interval's noise), and
    in which entering requests saw ``waiting`` at the bottleneck."""
    for w in waiting:
        limit.note_queue(w)
    limit.note_in_flight(limit.limit)
    step = limit.interval / len(latencies)
    updated = [limit.observe(t, now + step * (i + 1)) for i, t in enumerate(latencies)]
    assert updated[-1]
    return now + limit.interval


def test_the_baseline_is_not_the_luckiest_interval_of_noisy_ones() -> None:
    # Answers of 1.0 s +- 0.3 s, ten per interval: interval means of 0.9 and 1.1 are noise (a
    # standard error is 0.1 s). The lowest mean, 0.9 s, would allow only 1.08 s, and a queue
    # waiting 0.15 s (within 0.2 x 1.0 s) would shrink the door while its bottleneck is not full.
    def noisy(mean: float) -> list[float]:
        return [mean - 0.3, mean + 0.3] * 5

    limit = floodgate.AdaptiveLimit(27, floor=7, smoothing=1.0, queue_allowance=1.0)
    now = 0.0
    for mean in (1.1, 0.9, 1.0, 0.95, 1.05):
        now = run_spread_interval(limit, now, noisy(mean), [0, 0])
    assert limit.baseline == pytest.approx(0.9 + 2 * math.sqrt(0.3**2 * 10 / 9 / 10))
    for _ in range(5):  # 1.5 waiting at 10 completions/s: 0.15 s, and answers of 1.15 s
        now = run_spread_interval(limit, now, noisy(1.15), [1, 2])
        assert limit.limit == 27
    # overload still shows: 6 waiting (0.6 s) and answers of 1.6 s lower it
    run_spread_interval(limit, now, noisy(1.6), [6, 6])
    assert limit.limit < 27


def test_a_queue_costs_a_request_only_the_waits_on_its_critical_path() -> None:
    # A rubric of four criteria at once: four calls pass the bottleneck per request, the request
    # waits once. Four waiting at 10 requests/s (40 calls/s) is a 0.1 s wait, within the 0.24 s
    # the tolerance allows over 1.2 s; counted as one call per request it would be 0.4 s.
    per_call = floodgate.AdaptiveLimit(27, floor=7, smoothing=1.0, queue_allowance=1.0, queue_cost=0.25)
    as_one = floodgate.AdaptiveLimit(27, floor=7, smoothing=1.0, queue_allowance=1.0)
    now = 0.0
    for waiting in ([0, 0], [4, 4], [4, 4]):
        run_queued_interval(per_call, now, 1.2, waiting)
        now = run_queued_interval(as_one, now, 1.2, waiting)
    assert per_call.limit == 27
    assert as_one.limit < 27
    with pytest.raises(ValueError, match="queue_cost"):
        floodgate.AdaptiveLimit(5, queue_cost=0)

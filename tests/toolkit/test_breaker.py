"""The circuit breaker's transitions, one by one: pure calls with an explicit ``now``, and one run on
trio's virtual clock where the calls await (tests/toolkit/test_dependency.py covers the breaker inside
the full call path)."""

from __future__ import annotations

import dataclasses
import math

import floodgate
import pytest
import trio
from floodgate import BreakerState, CircuitBreaker, CircuitOpen
from floodgate._breaker import Ticket

from .conftest import make_dependency

CLOSED, HALF_OPEN, OPEN = BreakerState.CLOSED, BreakerState.HALF_OPEN, BreakerState.OPEN


def make_breaker(**policy) -> tuple[CircuitBreaker, list[tuple[str, BreakerState, BreakerState]]]:
    """A breaker on ``policy`` (over these defaults) and the list its transitions are reported to."""
    settings = {
        "window": 10.0,
        "min_calls": 4,
        "failure_rate": 0.5,
        "slow_call_rate": 1.0,
        "slow_call_duration": 2.0,
        "open_duration": 5.0,
        "half_open_probes": 2,
        **policy,
    }
    moves: list[tuple[str, BreakerState, BreakerState]] = []
    breaker = CircuitBreaker(
        "api", floodgate.BreakerPolicy(**settings), on_transition=lambda *move: moves.append(move)
    )
    return breaker, moves


def call(breaker: CircuitBreaker, now: float, *, failed: bool = False, duration: float = 0.1) -> None:
    """One call admitted and finished at ``now``."""
    breaker.record(now, breaker.admit(now), failed=failed, duration=duration)


def open_at(breaker: CircuitBreaker, now: float) -> None:
    """Open a closed breaker with failures at ``now``."""
    for _ in range(breaker.policy.min_calls):
        call(breaker, now, failed=True)
        if breaker.state is OPEN:
            return
    raise AssertionError(f"{breaker!r} did not open")


# -- closed -> open ---------------------------------------------------------------------------


def test_it_opens_on_the_call_that_reaches_the_failure_rate_over_min_calls():
    breaker, moves = make_breaker()
    call(breaker, 1.0, failed=True)
    call(breaker, 1.0, failed=True)
    call(breaker, 1.0, failed=True)
    assert breaker.state is CLOSED  # 3 of 3 failed, but fewer than min_calls calls
    call(breaker, 1.5)  # 3 failures of 4 calls >= 0.5: a success can be the call that opens it
    assert breaker.state is OPEN
    assert moves == [("api", CLOSED, OPEN)]
    assert breaker.statistics(1.5).opened_at == 1.5


def test_a_failure_rate_under_the_threshold_keeps_it_closed():
    breaker, moves = make_breaker(failure_rate=0.5)
    for failed in (True, False, False, False, True, False, False, False):
        call(breaker, 1.0, failed=failed)
    assert breaker.state is CLOSED and moves == []
    stats = breaker.statistics(1.0)
    assert (stats.calls, stats.failures, stats.slow_calls) == (8, 2, 0)


def test_the_rate_is_exactly_at_the_threshold_opens():
    breaker, _ = make_breaker(failure_rate=0.5)
    for failed in (True, False, True):
        call(breaker, 1.0, failed=failed)
    assert breaker.state is CLOSED
    call(breaker, 1.0)  # 2 of 4
    assert breaker.state is OPEN


def test_failures_that_left_the_window_do_not_count():
    breaker, _ = make_breaker(window=10.0)
    for _ in range(3):
        call(breaker, 0.0, failed=True)
    call(breaker, 10.0, failed=True)  # the three at t=0 are gone (window 10 s)
    assert breaker.state is CLOSED
    assert breaker.statistics(10.0).calls == 1


def test_slow_calls_open_it_by_their_own_rate_and_the_duration_is_inclusive():
    breaker, _ = make_breaker(slow_call_rate=0.5, slow_call_duration=2.0)
    call(breaker, 1.0, duration=2.0)  # exactly slow_call_duration: slow
    call(breaker, 1.0, duration=1.999)
    call(breaker, 1.0, duration=0.1)
    assert breaker.state is CLOSED
    assert breaker.statistics(1.0).slow_calls == 1
    call(breaker, 1.0, duration=5.0)  # 2 slow of 4, none failed
    assert breaker.state is OPEN
    assert breaker.statistics(1.0).failures == 0


# -- open: refuses until open_duration, half-open at the exact instant -----------------------


def test_open_refuses_with_the_time_left_until_open_duration():
    breaker, _ = make_breaker(open_duration=5.0)
    open_at(breaker, 100.0)
    for now, left in ((100.0, 5.0), (103.5, 1.5), (104.75, 0.25)):
        with pytest.raises(CircuitOpen) as info:
            breaker.admit(now)
        assert (info.value.dependency, info.value.retry_after) == ("api", left)
        assert info.value.reason == "circuit open"
    assert breaker.state is OPEN


def test_it_half_opens_at_the_exact_instant_open_duration_ends():
    breaker, moves = make_breaker(open_duration=5.0)
    open_at(breaker, 100.0)
    with pytest.raises(CircuitOpen):
        breaker.admit(math.nextafter(105.0, 0.0))
    assert breaker.state is OPEN
    ticket = breaker.admit(105.0)
    assert ticket == Ticket(generation=2, probe=True)
    assert breaker.state is HALF_OPEN
    assert moves == [("api", CLOSED, OPEN), ("api", OPEN, HALF_OPEN)]
    assert breaker.statistics(105.0).probes_in_flight == 1


def test_half_open_lets_half_open_probes_through_at_a_time():
    breaker, _ = make_breaker(half_open_probes=2, open_duration=5.0)
    open_at(breaker, 0.0)
    first, second = breaker.admit(5.0), breaker.admit(5.0)
    assert first.probe and second.probe
    with pytest.raises(CircuitOpen, match="probes in flight") as info:
        breaker.admit(5.0)
    assert info.value.retry_after == 5.0  # open_duration
    breaker.cancel(first)  # a cancelled probe frees its place and says nothing
    assert breaker.state is HALF_OPEN
    assert breaker.admit(5.0).probe


# -- half-open -> closed / open ---------------------------------------------------------------


def test_half_open_closes_when_every_probe_succeeds_and_starts_a_fresh_window():
    breaker, moves = make_breaker(half_open_probes=2)
    open_at(breaker, 0.0)
    first, second = breaker.admit(5.0), breaker.admit(5.0)
    breaker.record(5.5, first, failed=False, duration=0.5)
    assert breaker.state is HALF_OPEN  # one of two
    breaker.record(6.0, second, failed=False, duration=1.0)
    assert breaker.state is CLOSED
    assert moves[-1] == ("api", HALF_OPEN, CLOSED)
    stats = breaker.statistics(6.0)
    assert (stats.calls, stats.failures, stats.opened_at, stats.probes_in_flight) == (0, 0, None, 0)
    # the failures from before it opened are forgotten: it takes min_calls new ones to open again
    for _ in range(3):
        call(breaker, 6.0, failed=True)
    assert breaker.state is CLOSED


@pytest.mark.parametrize(
    ("failed", "duration"), [(True, 0.1), (False, 2.0)], ids=["failed_probe", "slow_probe"]
)
def test_half_open_reopens_on_a_failed_or_slow_probe(failed, duration):
    breaker, moves = make_breaker(half_open_probes=2, open_duration=5.0, slow_call_duration=2.0)
    open_at(breaker, 0.0)
    probe = breaker.admit(5.0)
    breaker.record(7.0, probe, failed=failed, duration=duration)
    assert breaker.state is OPEN
    assert moves[-1] == ("api", HALF_OPEN, OPEN)
    assert breaker.statistics(7.0).opened_at == 7.0  # a fresh open_duration from the failed probe
    with pytest.raises(CircuitOpen) as info:
        breaker.admit(8.0)
    assert info.value.retry_after == 4.0
    assert breaker.admit(12.0).probe


# -- stale outcomes ---------------------------------------------------------------------------


def test_a_call_admitted_before_it_opened_cannot_touch_it():
    breaker, _ = make_breaker()
    slow = breaker.admit(0.0)  # closed, generation 0
    open_at(breaker, 1.0)
    before = breaker.statistics(2.0)
    breaker.record(2.0, slow, failed=False, duration=0.1)
    breaker.cancel(slow)
    assert breaker.statistics(2.0) == before


def test_the_late_success_of_a_probe_from_an_earlier_half_open_cannot_close_it():
    breaker, moves = make_breaker(half_open_probes=2, open_duration=5.0)
    open_at(breaker, 0.0)
    lost, late = breaker.admit(5.0), breaker.admit(5.0)
    breaker.record(6.0, lost, failed=True, duration=0.1)  # reopens
    breaker.record(6.5, late, failed=False, duration=1.5)
    breaker.cancel(late)
    assert breaker.state is OPEN
    assert breaker.statistics(6.5).probes_in_flight == 0
    # ... nor does it count in the next half-open: each of its probes must succeed
    probe = breaker.admit(11.0)
    assert breaker.statistics(11.0).probes_in_flight == 1
    breaker.record(11.0, late, failed=False, duration=0.1)
    assert breaker.state is HALF_OPEN
    breaker.record(11.5, probe, failed=False, duration=0.5)
    assert breaker.state is HALF_OPEN  # half_open_probes is 2: one success is not enough
    breaker.record(12.0, breaker.admit(12.0), failed=False, duration=0.1)
    assert breaker.state is CLOSED
    assert [after for _, _, after in moves] == [OPEN, HALF_OPEN, OPEN, HALF_OPEN, CLOSED]


def test_cancel_outside_half_open_changes_nothing():
    breaker, _ = make_breaker()
    ticket = breaker.admit(0.0)
    breaker.cancel(ticket)
    stats = breaker.statistics(0.0)
    assert (stats.state, stats.calls, stats.probes_in_flight, stats.transitions) == (CLOSED, 0, 0, 0)


# -- statistics and repr ----------------------------------------------------------------------


def test_statistics_is_a_frozen_snapshot_and_repr_names_the_state():
    breaker, _ = make_breaker()
    assert repr(breaker) == "<CircuitBreaker 'api' closed transitions=0>"
    call(breaker, 0.0, failed=True)
    call(breaker, 0.0, duration=3.0)
    stats = breaker.statistics(0.0)
    assert stats == floodgate.BreakerStatistics(
        name="api",
        state=CLOSED,
        calls=2,
        failures=1,
        slow_calls=1,
        probes_in_flight=0,
        opened_at=None,
        transitions=0,
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.calls = 0  # type: ignore[misc]
    open_at(breaker, 1.0)
    assert stats.state is CLOSED  # the snapshot did not move with the breaker
    assert repr(breaker) == "<CircuitBreaker 'api' open transitions=1>"
    breaker.admit(6.0)
    assert repr(breaker) == "<CircuitBreaker 'api' half_open transitions=2>"
    assert breaker.statistics(6.0).state is HALF_OPEN and int(HALF_OPEN) == 1


def test_without_a_transition_callback_it_still_moves():
    breaker = CircuitBreaker("db", floodgate.BreakerPolicy(min_calls=1, open_duration=1.0))
    call(breaker, 0.0, failed=True)
    assert breaker.state is OPEN
    assert breaker.admit(1.0).probe and breaker.state is HALF_OPEN


# -- with awaits, on the virtual clock --------------------------------------------------------


async def test_a_probe_slower_than_a_failing_one_cannot_close_the_reopened_circuit(autojump_clock):
    """Two probes in flight through a Dependency: the fast one fails at t=6 and reopens the circuit,
    the slow one succeeds at t=7 and is ignored; the next probe is let through at exactly t=11."""
    dep = make_dependency(
        global_concurrency=3,
        retry={"max_attempts": 1},
        breaker={"min_calls": 2, "failure_rate": 0.5, "open_duration": 5.0, "half_open_probes": 2},
    )

    async def fail_after(seconds: float) -> None:
        await trio.sleep(seconds)
        raise floodgate.DependencyError("HTTP 500", status=500)

    async def succeed_after(seconds: float) -> str:
        await trio.sleep(seconds)
        return "ok"

    for _ in range(2):
        with pytest.raises(floodgate.DependencyError):
            await dep.call(fail_after, 0)
    assert dep.breaker.state is OPEN
    await trio.sleep(5.0)
    results: list[object] = []

    async def probe(fn, seconds: float) -> None:
        try:
            results.append(await dep.call(fn, seconds))
        except floodgate.DependencyError as exc:
            results.append(exc.status)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(probe, fail_after, 1.0)
        nursery.start_soon(probe, succeed_after, 2.0)
    assert trio.current_time() == 7.0
    assert sorted(results, key=str) == [500, "ok"]
    stats = dep.breaker.statistics(trio.current_time())
    assert (stats.state, stats.opened_at, stats.probes_in_flight) == (OPEN, 6.0, 0)
    with pytest.raises(CircuitOpen) as info:
        await dep.call(succeed_after, 0)
    assert info.value.retry_after == 4.0
    await trio.sleep(4.0)
    assert await dep.call(succeed_after, 0) == "ok"  # a probe, at t=11 exactly
    assert dep.breaker.state is HALF_OPEN

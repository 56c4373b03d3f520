"""Guarded calls: retries, backoff, Retry-After, deadlines, retry budget, breaker, rate limit."""

from __future__ import annotations

import math

import floodgate
import httpx
import pytest
import trio

from .conftest import budget_dict, make_dependency


class Script:
    """An async callable that plays a script of outcomes and records when it was called."""

    def __init__(self, *outcomes):
        self.outcomes = list(outcomes)
        self.times: list[float] = []

    async def __call__(self):
        self.times.append(trio.current_time())
        outcome = self.outcomes.pop(0) if self.outcomes else "ok"
        if isinstance(outcome, BaseException):
            raise outcome
        if isinstance(outcome, int | float) and not isinstance(outcome, bool):
            await trio.sleep(outcome)
            return "slow"
        if outcome == "hang":
            await trio.sleep_forever()
        return outcome


def status(code: int, retry_after: float | None = None) -> floodgate.DependencyError:
    return floodgate.DependencyError(f"HTTP {code}", status=code, retry_after=retry_after)


async def test_success_passes_the_result_through(autojump_clock):
    dep = make_dependency()
    assert await dep.call(Script("value")) == "value"
    stats = dep.statistics()
    assert (stats.calls_total, stats.gate.in_use, stats.breaker.calls) == (1, 0, 1)


async def test_backoff_schedule_is_exponential_with_full_jitter(autojump_clock):
    draws = iter([1.0, 1.0, 0.5])
    dep = make_dependency(rng=lambda: next(draws), retry={"max_attempts": 4})
    fn = Script(status(503), status(503), status(502), "ok")
    assert await dep.call(fn, idempotent=True) == "ok"
    # delays: 1.0 * 0.1, 1.0 * 0.2, 0.5 * 0.4
    assert fn.times == pytest.approx([0.0, 0.1, 0.3, 0.5])


def test_backoff_delay_bounds():
    for retry, ceiling in [(1, 0.1), (2, 0.2), (3, 0.4), (4, 0.8), (5, 1.0), (9, 1.0)]:
        assert floodgate.backoff_delay(retry, base=0.1, cap=1.0, rng=lambda: 0.0) == 0.0
        high = floodgate.backoff_delay(retry, base=0.1, cap=1.0, rng=lambda: 0.999999)
        assert high == pytest.approx(ceiling, rel=1e-5) and high < ceiling


def test_backoff_ceiling_doubles_up_to_the_cap():
    ceilings = [floodgate.backoff_ceiling(n, base=0.5, cap=8.0) for n in range(1, 8)]
    assert ceilings == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert floodgate.backoff_ceiling(10_000, base=0.5, cap=8.0) == 8.0  # no overflow in a long outage
    with pytest.raises(ValueError):
        floodgate.backoff_ceiling(0, base=0.5, cap=8.0)


@pytest.mark.parametrize(("seconds", "header"), [(0.0, 1), (0.2, 1), (1.0, 1), (1.01, 2), (59.5, 60)])
def test_retry_after_is_whole_seconds_rounded_up_and_at_least_one(seconds, header):
    assert floodgate.retry_after_seconds(seconds) == header


async def test_retry_after_is_honoured_with_a_jitter_never_earlier(autojump_clock):
    # retry_after_jitter is 0.1: the wait is Retry-After x (1 + 0.1 x rng()), rng() = 1.0 here
    dep = make_dependency()
    fn = Script(status(429, retry_after=2.0), status(503, retry_after=0.5), "ok")
    assert await dep.call(fn, idempotent=True) == "ok"
    assert fn.times == pytest.approx([0.0, 2.2, 2.75])


async def test_retry_after_jitter_zero_is_exact(autojump_clock):
    dep = make_dependency(rng=lambda: 0.0)
    fn = Script(status(503, retry_after=2.0), "ok")
    assert await dep.call(fn, idempotent=True) == "ok"
    assert fn.times == [0.0, 2.0]
    dep = make_dependency(retry={"retry_after_jitter": 0.0})
    fn = Script(status(503, retry_after=2.0), "ok")
    assert await dep.call(fn, idempotent=True) == "ok"
    assert fn.times == [2.0, 4.0]


async def test_callers_told_the_same_retry_after_come_back_spread_out(autojump_clock):
    # One dependency, ten calls refused together with "retry after 1 s" (cool-down off, so each
    # call honours only its own answer): the draws spread their retries over [1.0, 1.1).
    draws = iter([i / 10 for i in range(10)])
    dep = make_dependency(
        rng=lambda: next(draws), cooldown={"enabled": False}, global_concurrency=10, max_waiters=10
    )
    scripts = [Script(status(429, retry_after=1.0), "ok") for _ in range(10)]
    async with trio.open_nursery() as nursery:
        for fn in scripts:
            nursery.start_soon(dep.call, fn)
    retried_at = sorted(fn.times[1] for fn in scripts)
    assert retried_at == pytest.approx([1.0 + i / 100 for i in range(10)])
    assert min(retried_at) >= 1.0


async def test_429_is_retried_even_for_non_idempotent_calls(autojump_clock):
    dep = make_dependency(rng=lambda: 0.0)
    fn = Script(status(429, retry_after=1.0), "ok")
    assert await dep.call(fn, idempotent=False) == "ok"
    assert fn.times == [0.0, 1.0]


async def test_retry_after_over_the_cap_ends_the_call(autojump_clock):
    dep = make_dependency()
    with pytest.raises(floodgate.DependencyError) as info:
        await dep.call(Script(status(429, retry_after=30.0)), idempotent=True)
    assert (info.value.status, info.value.retry_after, info.value.dependency) == (429, 30.0, "api")
    assert "over cap" in info.value.reason
    assert trio.current_time() == 0


async def test_non_idempotent_5xx_is_not_retried(autojump_clock):
    dep = make_dependency()
    fn = Script(status(503), "ok")
    with pytest.raises(floodgate.DependencyError, match="not idempotent"):
        await dep.call(fn)
    assert fn.times == [0.0]


async def test_client_errors_are_not_retried(autojump_clock):
    dep = make_dependency()
    fn = Script(status(400), "ok")
    with pytest.raises(floodgate.DependencyError) as info:
        await dep.call(fn, idempotent=True)
    assert info.value.status == 400 and len(fn.times) == 1


async def test_attempts_exhausted_raise_the_last_status(autojump_clock):
    dep = make_dependency()
    fn = Script(status(503), status(503), status(504))
    with pytest.raises(floodgate.DependencyError) as info:
        await dep.call(fn, idempotent=True)
    assert info.value.status == 504 and "3 attempts" in info.value.reason
    assert isinstance(info.value.__cause__, floodgate.DependencyError)


async def test_attempt_timeout_then_retry(autojump_clock):
    dep = make_dependency(timeouts={"attempt": 1.0})
    fn = Script("hang", "hang", "hang")
    with pytest.raises(floodgate.DeadlineExceeded, match="attempt timed out after 1s") as info:
        await dep.call(fn, idempotent=True)
    assert info.value.dependency == "api"
    assert fn.times == pytest.approx([0.0, 1.1, 2.3])
    assert trio.current_time() == pytest.approx(3.3)


async def test_request_deadline_caps_the_attempt(autojump_clock):
    dep = make_dependency(timeouts={"attempt": 10.0})
    with pytest.raises(floodgate.DeadlineExceeded):
        with floodgate.deadline_after(2.0):
            await dep.call(Script("hang"), idempotent=True)
    assert trio.current_time() == 2.0
    stats = dep.statistics()
    assert stats.gate.in_use == 0 and stats.breaker.calls == 0  # cancelled, not a failure


async def test_too_little_time_left_fails_fast(autojump_clock):
    dep = make_dependency()  # min_time_to_start = 0.05
    fn = Script("ok")
    with floodgate.deadline_after(1.0):
        await trio.sleep(0.96)
        with pytest.raises(floodgate.DeadlineExceeded, match="too little time left to start"):
            await dep.call(fn)
    assert fn.times == []


async def test_no_retry_when_the_deadline_leaves_no_time_for_it(autojump_clock):
    dep = make_dependency()
    fn = Script(status(503, retry_after=1.0), "ok")
    with floodgate.deadline_after(1.02):
        with pytest.raises(floodgate.DependencyError, match="no time left for a retry"):
            await dep.call(fn, idempotent=True)
    assert fn.times == [0.0]


async def test_max_total_bounds_the_retries(autojump_clock):
    dep = make_dependency(retry={"max_total": 1.5, "max_attempts": 5})
    fn = Script(status(503, retry_after=1.0), status(503, retry_after=1.0), "ok")
    with pytest.raises(floodgate.DependencyError, match="max_total"):
        await dep.call(fn, idempotent=True)
    assert fn.times == pytest.approx([0.0, 1.1])


async def test_retry_budget_stops_retry_storms(autojump_clock):
    dep = make_dependency(retry_budget={"ratio": 0.0, "min_retries": 1, "window": 10.0})
    assert await dep.call(Script(status(503), "ok"), idempotent=True) == "ok"  # spends the one retry
    with pytest.raises(floodgate.RetryBudgetExhausted) as info:
        await dep.call(Script(status(503), "ok"), idempotent=True)
    assert info.value.http_status == 503 and info.value.dependency == "api"
    # the window slides: ten seconds later the budget is back
    await trio.sleep(10)
    assert await dep.call(Script(status(503), "ok"), idempotent=True) == "ok"


def test_retry_budget_is_a_share_of_calls():
    budget = floodgate.RetryBudget(ratio=0.2, window=10.0, min_retries=0)
    for _ in range(10):
        budget.record_call(0.0)
    assert [budget.try_spend(1.0) for _ in range(3)] == [True, True, False]
    stats = budget.statistics(1.0)
    assert (stats.calls, stats.retries, stats.denied_total) == (10, 2, 1)
    assert budget.statistics(10.0).calls == 0


async def test_breaker_opens_half_opens_and_closes(autojump_clock):
    dep = make_dependency(
        global_concurrency=3,
        retry={"max_attempts": 1},
        breaker={
            "min_calls": 4,
            "failure_rate": 0.5,
            "open_duration": 5.0,
            "half_open_probes": 2,
            "window": 10.0,
        },
    )
    for outcome in ["ok", status(500), "ok", status(503)]:
        try:
            await dep.call(Script(outcome))
        except floodgate.DependencyError:
            pass
    assert dep.breaker.state is floodgate.BreakerState.OPEN
    await trio.sleep(1)
    fn = Script("ok")
    with pytest.raises(floodgate.CircuitOpen) as info:
        await dep.call(fn)
    assert info.value.retry_after == pytest.approx(4.0) and fn.times == []
    await trio.sleep(4)
    # half-open: two probes may run at once, a third is refused
    async with trio.open_nursery() as nursery:
        probes = Script(0.5, 0.5)
        nursery.start_soon(dep.call, probes)
        nursery.start_soon(dep.call, probes)
        await trio.sleep(0.1)
        assert dep.breaker.state is floodgate.BreakerState.HALF_OPEN
        with pytest.raises(floodgate.CircuitOpen, match="probes"):
            await dep.call(Script("ok"))
    assert dep.breaker.state is floodgate.BreakerState.CLOSED
    assert trio.current_time() == pytest.approx(5.5)


async def test_failed_probe_reopens(autojump_clock):
    dep = make_dependency(retry={"max_attempts": 1}, breaker={"min_calls": 2, "open_duration": 5.0})
    for _ in range(2):
        with pytest.raises(floodgate.DependencyError):
            await dep.call(Script(status(500)))
    await trio.sleep(5)
    with pytest.raises(floodgate.DependencyError):
        await dep.call(Script(status(500)))
    assert dep.breaker.state is floodgate.BreakerState.OPEN
    with pytest.raises(floodgate.CircuitOpen) as info:
        await dep.call(Script("ok"))
    assert info.value.retry_after == 5.0


async def test_slow_calls_open_the_breaker(autojump_clock):
    dep = make_dependency(breaker={"min_calls": 3, "slow_call_rate": 1.0, "slow_call_duration": 1.0})
    for _ in range(3):
        assert await dep.call(Script(1.0)) == "slow"
    assert dep.breaker.state is floodgate.BreakerState.OPEN


async def test_client_side_rate_limit(autojump_clock):
    dep = make_dependency(rate_limit={"rpm": 60, "burst": 1, "max_wait": 0.5})
    fn = Script()
    await dep.call(fn)
    with pytest.raises(floodgate.Overloaded, match="rate limit") as info:
        await dep.call(fn)
    assert info.value.retry_after == pytest.approx(1.0)
    await trio.sleep(0.6)
    await dep.call(fn)  # waits 0.4 for the token that refills at t=1.0
    assert fn.times == pytest.approx([0.0, 1.0])


def test_token_bucket_refill():
    bucket = floodgate.TokenBucket(rate=2.0, burst=3)
    assert [bucket.reserve(0.0, max_wait=0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.reserve(0.0, max_wait=0.1) is None
    assert bucket.reserve(0.0, max_wait=1.0) == pytest.approx(0.5)  # reserved: balance -1
    assert bucket.wait_needed(0.0) == pytest.approx(1.0)
    assert bucket.statistics(10.0).tokens == 3.0  # refills to burst, not beyond
    bucket.refund()
    assert bucket.statistics(10.0).tokens == 3.0


async def test_cancelled_rate_limit_waiter_returns_its_token(autojump_clock):
    dep = make_dependency(rate_limit={"rpm": 60, "burst": 1, "max_wait": 5.0})
    await dep.call(Script())
    async with trio.open_nursery() as nursery:
        nursery.start_soon(dep.call, Script())
        await trio.sleep(0.2)
        assert dep.bucket is not None and dep.bucket.wait_needed(trio.current_time()) == pytest.approx(1.8)
        nursery.cancel_scope.cancel()
    assert dep.bucket is not None and dep.bucket.wait_needed(trio.current_time()) == pytest.approx(0.8)


async def test_gate_bounds_concurrent_calls(autojump_clock):
    dep = make_dependency(max_waiters=1, max_wait=1.0)  # capacity 2
    peak = 0
    active = 0

    async def work():
        nonlocal peak, active
        active += 1
        peak = max(peak, active)
        await trio.sleep(0.5)
        active -= 1

    rejected = 0

    async def caller():
        nonlocal rejected
        try:
            await dep.call(work)
        except floodgate.Overloaded:
            rejected += 1

    async with trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(caller)
    assert (peak, rejected) == (2, 2)
    assert trio.current_time() == 1.0


async def test_other_exceptions_pass_through_unretried(autojump_clock):
    dep = make_dependency()
    fn = Script(ValueError("bad json"), "ok")
    with pytest.raises(ValueError):
        await dep.call(fn, idempotent=True)
    assert len(fn.times) == 1 and dep.statistics().breaker.calls == 0 and dep.gate.statistics().in_use == 0


async def test_transport_errors_are_retried_and_mapped(autojump_clock):
    dep = make_dependency()
    fn = Script(
        ConnectionRefusedError("refused"), ConnectionRefusedError("refused"), ConnectionRefusedError("no")
    )
    with pytest.raises(floodgate.DependencyError, match="ConnectionRefusedError: no") as info:
        await dep.call(fn)  # connection refused: never processed, safe to retry even if not idempotent
    assert info.value.status is None and len(fn.times) == 3
    assert math.isfinite(fn.times[-1])


async def test_rate_limit_wait_is_bounded_by_the_deadline(autojump_clock):
    dep = make_dependency(rate_limit={"rpm": 60, "burst": 1, "max_wait": 5.0})
    await dep.call(Script())
    with floodgate.deadline_after(0.5):
        with pytest.raises(floodgate.Overloaded, match="rate limit"):
            await dep.call(Script())
    assert trio.current_time() == 0


@pytest.mark.parametrize("cancel_at", [0.2, 0.45, 0.95, 1.05, 1.5, 2.2, 2.45, 2.65, 3.2])
async def test_cancellation_at_any_await_leaves_everything_consistent(autojump_clock, cancel_at):
    # The call under test starts at t=0.1 behind a holder of the only slot:
    #   0.1-0.5 waits for the gate; 0.5-1.0 waits for a token (60/min, burst 1);
    #   1.0 attempt 1 fails (503); 1.0-1.1 backoff; 1.1-2.0 waits for a token;
    #   2.0-2.5 attempt 2 hangs until its timeout; 2.5-2.7 backoff; 2.7-3.0 token; 3.0-3.5 attempt 3 hangs
    dep = make_dependency(
        global_concurrency=1,
        rate_limit={"rpm": 60, "burst": 1, "max_wait": 2.0},
        timeouts={"attempt": 0.5, "min_time_to_start": 0.0},
    )
    fn = Script(status(503), "hang", "hang")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(dep.call, Script(0.4))  # holds the slot (and the token) until 0.4
        await trio.sleep(0.1)
        # Cancelled from outside (no deadline the call could see coming, unlike move_on_after).
        scope = trio.CancelScope()

        async def cancel_later():
            await trio.sleep(cancel_at)
            scope.cancel()

        nursery.start_soon(cancel_later)
        with scope:
            await dep.call(fn, idempotent=True)
        cancelled_at = trio.current_time()
    assert cancelled_at == pytest.approx(0.1 + cancel_at)
    assert fn.times == pytest.approx([t for t in [1.0, 2.0, 3.0] if t < cancelled_at])
    now = trio.current_time()
    stats = dep.statistics()
    assert (stats.gate.in_use, stats.gate.waiting) == (0, 0)
    assert stats.breaker.probes_in_flight == 0
    assert dep.bucket is not None
    # a token reserved by a cancelled waiter was given back: one per attempt made, plus the holder's
    assert dep.bucket.statistics(now).granted_total == 1 + len(fn.times)


async def test_closing_dependencies_closes_every_client_even_when_one_fails():
    class FailsToClose(httpx.AsyncClient):
        async def aclose(self) -> None:
            raise RuntimeError("close failed")

    policy = floodgate.parse_budget(budget_dict()).dependency("api")
    healthy = httpx.AsyncClient()
    deps = floodgate.Dependencies(
        {
            "first": floodgate.Dependency("first", policy, capacity=1, client=FailsToClose()),
            "second": floodgate.Dependency("second", policy, capacity=1, client=healthy),
        }
    )
    with pytest.raises(RuntimeError, match="close failed"):
        await deps.aclose()
    assert healthy.is_closed

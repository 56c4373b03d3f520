"""Degradation, singleflight, TTL cache and the loop-lag monitor."""

from __future__ import annotations

import floodgate
import pytest
import trio
from prometheus_client import CollectorRegistry


async def test_optional_falls_back_and_records_why(autojump_clock):
    registry = CollectorRegistry()
    degraded = floodgate.Degradations(registry=registry)

    async def rerank():
        raise floodgate.CircuitOpen("circuit open", dependency="rerank", retry_after=3)

    async def search():
        return ["r1"]

    assert await floodgate.optional("rerank", rerank, fallback="fused", degradations=degraded) == "fused"
    assert await floodgate.optional("search", search, fallback=[], degradations=degraded) == ["r1"]
    assert degraded.steps == ["rerank"]
    assert degraded.as_list() == [{"step": "rerank", "dependency": "rerank", "reason": "circuit_open"}]
    assert (
        registry.get_sample_value("floodgate_degraded_total", {"step": "rerank", "reason": "circuit_open"})
        == 1
    )


@pytest.mark.parametrize(
    "error",
    [
        floodgate.Overloaded("full", dependency="llm"),
        floodgate.DeadlineExceeded("attempt timed out", dependency="llm"),
        floodgate.DependencyError("HTTP 500", dependency="llm", status=500),
        floodgate.RetryBudgetExhausted("spent", dependency="llm"),
    ],
)
async def test_optional_covers_every_floodgate_error(error):
    degraded = floodgate.Degradations()

    async def step():
        raise error

    result = await floodgate.optional(
        "answer", step, fallback_factory=lambda exc: exc.code, degradations=degraded
    )
    assert result == error.code
    assert degraded.as_list() == [{"step": "answer", "dependency": "llm", "reason": error.code}]


async def test_optional_step_time_limit(autojump_clock):
    degraded = floodgate.Degradations()
    result = await floodgate.optional(
        "rerank", trio.sleep_forever, fallback=None, degradations=degraded, within=0.3
    )
    assert result is None and trio.current_time() == pytest.approx(0.3)
    assert degraded.as_list() == [{"step": "rerank", "dependency": "rerank", "reason": "timeout"}]


async def test_optional_charges_a_timeout_to_its_dependency_and_names_the_fallback(autojump_clock):
    degraded = floodgate.Degradations()
    result = await floodgate.optional(
        "rerank",
        trio.sleep_forever,
        fallback="fused",
        degradations=degraded,
        within=0.3,
        dependency="reranker",
        fallback_name="fused_score",
    )
    assert result == "fused"

    async def failing():
        raise floodgate.Overloaded("full", dependency="reranker-eu")

    await floodgate.optional(
        "rerank", failing, degradations=degraded, dependency="reranker", fallback_name="fused_score"
    )
    assert degraded.as_list() == [
        {"step": "rerank", "dependency": "reranker", "reason": "timeout", "fallback": "fused_score"},
        # the error's own dependency wins: it says which budget refused
        {"step": "rerank", "dependency": "reranker-eu", "reason": "overloaded", "fallback": "fused_score"},
    ]
    assert [d.fallback for d in degraded] == ["fused_score", "fused_score"]


async def test_optional_does_not_swallow_request_cancellation_or_bugs(autojump_clock):
    degraded = floodgate.Degradations()
    with pytest.raises(floodgate.DeadlineExceeded):
        with floodgate.deadline_after(1.0):
            await floodgate.optional("rerank", trio.sleep_forever, fallback=None, degradations=degraded)

    async def buggy():
        raise KeyError("x")

    with pytest.raises(KeyError):
        await floodgate.optional("rerank", buggy, fallback=None, degradations=degraded)
    assert not degraded


async def test_singleflight_shares_one_call(autojump_clock):
    flights = floodgate.Singleflight("search")
    calls = []

    async def search(query):
        calls.append(query)
        await trio.sleep(1)
        return f"results for {query}"

    results = []

    async def ask(query):
        results.append(await flights.do(("search", query), search, query))

    async with trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(ask, "trio")
        nursery.start_soon(ask, "anyio")
    assert calls.count("trio") == 1 and calls.count("anyio") == 1
    assert results.count("results for trio") == 5
    assert trio.current_time() == 1
    assert flights.statistics().shared_total == 4 and flights.statistics().in_flight == 0


async def followers_of_a_cancelled_leader(
    flights: floodgate.Singleflight, followers: int, attempts: list[float]
) -> list[str]:
    """A leader starts a 1 s call of key "k", ``followers`` join it at 0.1 s, the leader is
    cancelled at 0.2 s; returns what the followers got (``attempts``: when each call started)."""

    async def slow():
        attempts.append(trio.current_time())
        await trio.sleep(1)
        return "done"

    got: list[str] = []

    async def follower():
        got.append(await flights.do("k", slow))

    async with trio.open_nursery() as nursery:
        leader = trio.CancelScope()

        async def lead():
            with leader:
                await flights.do("k", slow)

        nursery.start_soon(lead)
        await trio.sleep(0.1)
        for _ in range(followers):
            nursery.start_soon(follower)
        await trio.sleep(0.1)
        leader.cancel()
    return got


async def test_singleflight_shares_errors_and_survives_a_cancelled_leader(autojump_clock):
    flights = floodgate.Singleflight()
    attempts: list[float] = []
    got = await followers_of_a_cancelled_leader(flights, 1, attempts)
    assert got == ["done"] and attempts == [0.0, pytest.approx(0.2)]

    async def failing():
        await trio.sleep(0.5)
        raise floodgate.DependencyError("HTTP 500", status=500)

    errors = []

    async def try_it():
        try:
            await flights.do("e", failing)
        except floodgate.DependencyError as exc:
            errors.append(exc.status)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(try_it)
        nursery.start_soon(try_it)
    assert errors == [500, 500]


async def test_ttl_cache_expires_entries_at_ttl(autojump_clock):
    registry = CollectorRegistry()
    cache = floodgate.TTLCache(10.0, 2, name="embed", registry=registry)
    assert isinstance(cache, floodgate.CacheStore)
    await cache.set("a", 1)
    await trio.sleep(9.999)
    assert await cache.get("a") == 1
    await trio.sleep(0.001)
    assert await cache.get("a") is floodgate.MISSING
    await cache.set("none", None)
    assert await cache.get("none") is None  # None is a value, MISSING is absence
    stats = cache.statistics()
    assert (stats.hits, stats.misses) == (2, 1)
    assert (
        registry.get_sample_value("floodgate_cache_requests_total", {"cache": "embed", "result": "hit"}) == 2
    )


async def test_ttl_cache_evicts_least_recently_used(autojump_clock):
    cache = floodgate.TTLCache(60, 2)
    cache.set_nowait("a", 1)
    cache.set_nowait("b", 2)
    assert cache.get_nowait("a") == 1
    cache.set_nowait("c", 3)
    assert cache.get_nowait("b") is floodgate.MISSING
    assert cache.get_nowait("a") == 1 and cache.statistics().evictions == 1


async def test_get_or_load_coalesces_misses_and_caches(autojump_clock):
    cache = floodgate.TTLCache(5.0, 100)
    loads = []

    async def load(key):
        loads.append(trio.current_time())
        await trio.sleep(1)
        return key.upper()

    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(cache.get_or_load, "q", load, "q")
    assert await cache.get_or_load("q", load, "q") == "Q"
    assert loads == [0.0]
    await trio.sleep(5)  # loaded at t=1, expires at t=6
    assert await cache.get_or_load("q", load, "q") == "Q"
    assert loads == [0.0, 6.0]


async def test_loop_lag_monitor_reports_late_wakeups(autojump_clock):
    registry = CollectorRegistry()
    monitor = floodgate.LoopLagMonitor(interval=0.5, registry=registry)
    async with trio.open_nursery() as nursery:
        await nursery.start(monitor.run)
        await trio.sleep(1.25)
        nursery.cancel_scope.cancel()
    stats = monitor.statistics()
    assert stats.samples == 2 and stats.max_lag == 0.0  # the virtual clock is never late
    monitor.record(0.2)
    assert monitor.statistics().max_lag == 0.2
    assert registry.get_sample_value("floodgate_loop_lag_seconds_count") == 3


@pytest.mark.realtime
async def test_loop_lag_monitor_sees_a_blocked_loop():
    import time

    monitor = floodgate.LoopLagMonitor(interval=0.01, warn_after=1.0)
    async with trio.open_nursery() as nursery:
        await nursery.start(monitor.run)
        await trio.sleep(0.005)
        time.sleep(0.06)  # noqa: ASYNC251 - blocking the event loop on purpose, as CPU-bound code would
        await trio.sleep(0.03)
        nursery.cancel_scope.cancel()
    assert monitor.statistics().max_lag >= 0.04


async def test_singleflight_counts_a_call_that_joined_once_even_when_its_leader_is_cancelled(autojump_clock):
    flights = floodgate.Singleflight()
    # one follower runs ``slow`` again, the other joins that second flight
    got = await followers_of_a_cancelled_leader(flights, 2, [])
    assert got == ["done", "done"]
    assert flights.statistics().shared_total == 2

"""The cool-down after a provider 429: the pure rule, then a Dependency's callers on the virtual clock."""

from __future__ import annotations

import functools

import floodgate
import httpx
import pytest
import trio
from prometheus_client import CollectorRegistry

from .conftest import budget_dict, make_dependency
from .test_dependency import Script, status


def cooldown(**kwargs) -> floodgate.Cooldown:
    return floodgate.Cooldown(**{"without_retry_after": 1.0, "max_seconds": 10.0, "jitter": 0.1, **kwargs})


# -- the rule ----------------------------------------------------------------------------------------


def test_a_429_pauses_for_as_long_as_the_provider_asked():
    c = cooldown()
    assert c.remaining(5.0) == 0 and c.wait(5.0) == 0
    assert c.pushback(5.0, 2.0) == 2.0
    assert c.remaining(5.0) == 2.0 and c.remaining(6.5) == 0.5 and c.remaining(7.0) == 0
    stats = c.statistics(6.0)
    assert (stats.remaining, stats.started_total, stats.extended_total, stats.seconds_total) == (
        1.0,
        1,
        0,
        2.0,
    )


def test_without_retry_after_the_default_and_never_past_the_cap():
    c = cooldown(without_retry_after=0.5, max_seconds=3.0)
    assert c.pushback(0.0, None) == 0.5
    assert c.pushback(10.0, 3600.0) == 3.0  # a mistaken hour-long Retry-After pauses max_seconds
    assert c.remaining(10.0) == 3.0


def test_a_longer_answer_extends_a_shorter_one_changes_nothing():
    c = cooldown()
    c.pushback(0.0, 2.0)
    assert c.pushback(1.0, 0.5) == 0.0  # ends at 1.5, inside the pause
    assert c.remaining(1.0) == 1.0
    assert c.pushback(1.0, 3.0) == 2.0  # now until 4.0: two seconds more
    stats = c.statistics(1.0)
    assert (stats.started_total, stats.extended_total, stats.seconds_total) == (1, 1, 4.0)
    assert c.pushback(4.0, 1.0) == 1.0  # after the end: a new pause
    assert c.statistics(4.0).started_total == 2


def test_zero_retry_after_is_no_pause():
    c = cooldown()
    assert c.pushback(0.0, 0.0) == 0.0 and c.remaining(0.0) == 0


@pytest.mark.parametrize("draw", [0.0, 0.25, 0.5, 0.999])
def test_a_waiter_never_goes_early_and_at_most_jitter_late(draw):
    c = cooldown(jitter=0.2)
    c.pushback(0.0, 2.0)
    wait = c.wait(0.5, lambda: draw)
    assert wait == pytest.approx(1.5 * (1 + 0.2 * draw))
    assert 1.5 <= wait <= 1.5 * 1.2


def test_retry_after_delay_is_never_less_than_asked():
    for i in range(100):
        draw = i / 100
        delay = floodgate.retry_after_delay(1.0, jitter=0.1, rng=lambda d=draw: d)
        assert 1.0 <= delay < 1.1
    assert floodgate.retry_after_delay(0.0, jitter=0.1, rng=lambda: 0.9) == 0.0


def test_bad_settings_are_refused():
    for kwargs in ({"without_retry_after": -1.0}, {"max_seconds": 0.0}, {"jitter": 1.5}):
        with pytest.raises(ValueError):
            cooldown(**kwargs)


# -- every caller of the dependency ---------------------------------------------------------------


async def test_a_429_pauses_new_calls_that_can_wait(autojump_clock):
    # max_wait 3 s: a call arriving during a 2 s pause waits it out, plus its jitter, then goes.
    dep = make_dependency(rng=lambda: 0.5, max_wait=3.0, max_waiters=4)
    first = Script(status(429, retry_after=2.0), "ok")
    second = Script("ok")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(dep.call, first)
        await trio.sleep(0.5)
        assert dep.statistics().cooldown.remaining == 1.5
        assert await dep.call(second) == "ok"
    # the second waited 1.5 s x 1.05; the first retried after 2 s x 1.05
    assert second.times == pytest.approx([0.5 + 1.5 * 1.05])
    assert first.times == pytest.approx([0.0, 2.1])
    assert dep.statistics().cooldown.started_total == 1


async def test_a_new_call_that_cannot_wait_is_refused_fast_without_reaching_the_provider(autojump_clock):
    registry = CollectorRegistry()
    budget = floodgate.parse_budget(budget_dict(max_wait=1.0))
    dep = floodgate.Dependency(
        "api", budget.dependency("api"), capacity=2, registry=registry, rng=lambda: 0.0
    )
    await dep.call(Script(status(429, retry_after=3.0), "ok"), idempotent=True)  # retries at 3.0
    # a pause starts anew only with a new 429: the retry succeeded, so the dependency is free
    assert dep.statistics().cooldown.remaining == 0
    first = Script(status(429, retry_after=4.0), "ok")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(dep.call, first)
        await trio.sleep(0.1)
        later = Script("ok")
        started = trio.current_time()
        with pytest.raises(floodgate.CoolingDown) as info:
            await dep.call(later)
        assert trio.current_time() == started  # refused at once
        assert later.times == []
        assert info.value.retry_after == pytest.approx(3.9)
        assert (info.value.http_status, info.value.code, info.value.dependency) == (429, "overloaded", "api")
        assert isinstance(info.value, floodgate.Overloaded)
    value = registry.get_sample_value
    assert value("floodgate_rejections_total", {"dependency": "api", "reason": "cooldown"}) == 1
    assert value("floodgate_cooldowns_total", {"dependency": "api"}) == 2
    assert value("floodgate_cooldown_seconds_total", {"dependency": "api"}) == pytest.approx(7.0)


async def test_the_deadline_bounds_the_wait_for_the_pause(autojump_clock):
    dep = make_dependency(rng=lambda: 0.0, max_wait=5.0, max_waiters=4)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(dep.call, Script(status(429, retry_after=2.0), "ok"))
        await trio.sleep(0.01)
        with floodgate.deadline_after(1.0), pytest.raises(floodgate.CoolingDown):
            await dep.call(Script("ok"))
        assert trio.current_time() == 0.01  # refused at once


async def test_a_retry_waits_for_a_pause_another_call_began(autojump_clock):
    # A backs off 0.2 s after a 503; meanwhile B's 429 at 0.1 pauses the dependency until 1.1:
    # A's retry, due at 0.2, goes after the pause (0.9 s left, x 1.1 jitter), not into it.
    dep = make_dependency(rng=lambda: 1.0, retry={"backoff_base": 0.2}, max_waiters=4)
    a = Script(status(503), "ok")
    b = Script(status(429, retry_after=1.0), "ok")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(functools.partial(dep.call, a, idempotent=True))
        nursery.start_soon(_call_at, dep, b, 0.1)
    assert a.times == pytest.approx([0.0, 0.2 + 0.9 * 1.1])
    assert b.times == pytest.approx([0.1, 0.1 + 1.1])


async def _call_at(dep, fn, at):
    await trio.sleep_until(at)
    await dep.call(fn)


async def test_a_retry_gives_up_when_the_pause_outlasts_max_total(autojump_clock):
    # A backs off 0.25 s after a 503; B's 429 at 0.1 pauses for 5 s, past A's max_total of 2 s.
    dep = make_dependency(rng=lambda: 0.5, retry={"max_total": 2.0, "backoff_base": 0.5}, max_waiters=4)
    a = Script(status(503), "ok")

    async def a_call():
        with pytest.raises(floodgate.CoolingDown) as info:
            await dep.call(a, idempotent=True)
        assert isinstance(info.value.__cause__, floodgate.DependencyError)
        assert trio.current_time() == 0.25  # refused when its retry was due, not after waiting

    async def b_call():
        await trio.sleep(0.1)
        with pytest.raises(floodgate.DependencyError, match="max_total"):
            await dep.call(Script(status(429, retry_after=5.0), "ok"))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(a_call)
        nursery.start_soon(b_call)
    assert a.times == [0.0]
    assert dep.statistics().failures_total == 2


async def test_without_the_cooldown_other_callers_go_ahead(autojump_clock):
    dep = make_dependency(rng=lambda: 0.0, cooldown={"enabled": False}, max_waiters=4)
    second = Script("ok")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(dep.call, Script(status(429, retry_after=2.0), "ok"))
        await trio.sleep(0.5)
        await dep.call(second)
    assert second.times == [0.5]
    assert dep.statistics().cooldown is None


async def test_retry_after_ms_sizes_the_retry_and_the_pause(autojump_clock):
    seen: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(trio.current_time())
        if len(seen) == 1:
            return httpx.Response(429, headers={"retry-after": "1", "retry-after-ms": "250"})
        return httpx.Response(200, json={"ok": True})

    budget = floodgate.parse_budget(budget_dict())
    deps = floodgate.Dependencies.from_budget(
        budget,
        service="svc",
        http_base_urls={"api": "http://api.test"},
        transport=httpx.MockTransport(handler),
        rng=lambda: 0.0,
    )
    async with deps:
        await deps["api"].request("POST", "/v1/x", json={})
        assert deps["api"].statistics().cooldown.seconds_total == pytest.approx(0.25)
    assert seen == pytest.approx([0.0, 0.25])


def test_retry_after_from_headers():
    h = httpx.Headers
    assert floodgate.retry_after_from_headers(h({"retry-after-ms": "20", "retry-after": "1"})) == 0.02
    assert floodgate.retry_after_from_headers(h({"Retry-After": "3"})) == 3.0
    assert floodgate.retry_after_from_headers(h({"retry-after-ms": "soon", "retry-after": "2"})) == 2.0
    assert floodgate.retry_after_from_headers(h({"retry-after-ms": "-5"})) == 0.0
    assert floodgate.retry_after_from_headers(h({"retry-after-ms": "nan"})) is None
    assert floodgate.retry_after_from_headers(h({})) is None


def test_budget_keys():
    budget = floodgate.parse_budget(
        budget_dict(
            cooldown={"max_seconds": 2.0, "without_retry_after": 0.2}, retry={"retry_after_jitter": 0.3}
        )
    )
    policy = budget.dependency("api")
    assert (policy.cooldown.enabled, policy.cooldown.max_seconds, policy.cooldown.without_retry_after) == (
        True,
        2.0,
        0.2,
    )
    assert policy.retry.retry_after_jitter == 0.3
    with pytest.raises(floodgate.BudgetError, match="retry_after_jitter"):
        floodgate.parse_budget(budget_dict(retry={"retry_after_jitter": 2.0}))
    with pytest.raises(floodgate.BudgetError, match=r"cooldown\.max_seconds"):
        floodgate.parse_budget(budget_dict(cooldown={"max_seconds": 0}))
    data = budget_dict()
    data["dependencies"]["db"]["cooldown"] = {"enabled": False}
    with pytest.raises(floodgate.BudgetError, match="cooldown has no effect on a postgres"):
        floodgate.parse_budget(data)


async def test_a_caller_cancelled_while_waiting_out_the_pause_leaves_everything_consistent(autojump_clock):
    dep = make_dependency(rng=lambda: 0.0, max_wait=5.0, max_waiters=4)
    later = Script("ok")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(dep.call, Script(status(429, retry_after=2.0), "ok"))
        await trio.sleep(0.1)
        with trio.CancelScope() as scope:  # cancelled from outside: no deadline to refuse at once by
            nursery.start_soon(_cancel_at, scope, 0.6)
            await dep.call(later)  # waits for the pause, holding a gate slot
        assert scope.cancelled_caught and trio.current_time() == 0.6
        stats = dep.statistics()
        assert later.times == [] and stats.in_flight == 0
        assert stats.gate.in_use == 1  # the first call's slot only: the cancelled one gave its back
    stats = dep.statistics()
    assert (stats.gate.in_use, stats.in_flight, stats.calls_total, stats.failures_total) == (0, 0, 1, 0)


async def _cancel_at(scope: trio.CancelScope, at: float) -> None:
    await trio.sleep_until(at)
    scope.cancel()

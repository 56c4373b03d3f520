"""Fixed-window decisions, run against both counter stores (memory and Redis) with the same tests.

Time is a fake clock injected into the limiter (and the memory store): windows move because the
test moves the clock, never because it sleeps. The Redis tests use a unique key prefix, so they
never touch another user's keys, and windows far in the "future" of the fake clock.
"""

from __future__ import annotations

import threading

import pytest

from services.ratelimit import (
    Code,
    CounterStoreError,
    Descriptor,
    MemoryCounterStore,
    RateLimiter,
    RedisCounterStore,
    decision_to_response,
    parse_config,
)

from .conftest import redis_prefix

CONFIG = parse_config(
    {
        "domain": "fg",
        "descriptors": [
            {
                "key": "tenant",
                "descriptors": [
                    {
                        "key": "route",
                        "value": "deal_brain",
                        "rate_limit": {"unit": "second", "requests_per_unit": 3},
                    },
                    {
                        "key": "route",
                        "value": "omnirag_submit",
                        "rate_limit": {"unit": "minute", "requests_per_unit": 2},
                    },
                    {
                        "key": "route",
                        "value": "shadowed",
                        "shadow_mode": True,
                        "rate_limit": {"unit": "second", "requests_per_unit": 1},
                    },
                    {"key": "route", "value": "free", "rate_limit": {"unlimited": True}},
                ],
            }
        ],
    }
)


class FakeClock:
    def __init__(self, now: float = 1_800_000_000.25) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def desc(tenant: str, route: str) -> Descriptor:
    return Descriptor(entries=(("tenant", tenant), ("route", route)))


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.realtime)])
def make_limiter(request):
    """A factory of ``(limiter, clock)`` on one backend; closes the stores it opened."""
    opened = []

    def factory(config=CONFIG):
        clock = FakeClock()
        if request.param == "memory":
            store = MemoryCounterStore(clock=clock)
        else:
            store = RedisCounterStore.from_url(request.getfixturevalue("redis_url"))
            opened.append(store)
        limiter = RateLimiter(config, store, clock=clock, key_prefix=redis_prefix())
        return limiter, clock

    yield factory
    for store in opened:
        store.close()


def decide(limiter, *descriptors, hits=1, domain="fg"):
    return limiter.should_rate_limit(domain, list(descriptors), hits)


def test_over_limit_within_a_window_and_reset_after(make_limiter):
    limiter, clock = make_limiter()
    codes = [decide(limiter, desc("a", "deal_brain")).code for _ in range(4)]
    assert codes == [Code.OK, Code.OK, Code.OK, Code.OVER_LIMIT]
    clock.now += 1.0  # next one-second window
    assert decide(limiter, desc("a", "deal_brain")).code is Code.OK


def test_remaining_and_duration_until_reset(make_limiter):
    limiter, clock = make_limiter()
    first = decide(limiter, desc("a", "deal_brain")).statuses[0]
    assert first.limit_remaining == 2
    assert first.duration_until_reset == pytest.approx(0.75)  # clock at .25 into the second
    clock.now += 30  # minute windows are aligned to the epoch minute
    minute = decide(limiter, desc("a", "omnirag_submit")).statuses[0]
    assert minute.limit_remaining == 1
    assert minute.duration_until_reset == pytest.approx(60 - (clock.now % 60))


def test_tenants_have_separate_counters(make_limiter):
    limiter, _ = make_limiter()
    for _ in range(3):
        decide(limiter, desc("a", "deal_brain"))
    assert decide(limiter, desc("a", "deal_brain")).code is Code.OVER_LIMIT
    assert [decide(limiter, desc("b", "deal_brain")).code for _ in range(3)] == [Code.OK] * 3


def test_one_descriptor_over_makes_the_request_over(make_limiter):
    limiter, _ = make_limiter()
    decide(limiter, desc("a", "omnirag_submit"), hits=2)
    decision = decide(limiter, desc("a", "deal_brain"), desc("a", "omnirag_submit"))
    assert decision.code is Code.OVER_LIMIT
    assert [s.code for s in decision.statuses] == [Code.OK, Code.OVER_LIMIT]
    assert decision.retry_after is not None and 1 <= decision.retry_after <= 60


def test_hits_addend_counts_several_requests(make_limiter):
    limiter, _ = make_limiter()
    assert decide(limiter, desc("a", "deal_brain"), hits=3).code is Code.OK
    assert decide(limiter, desc("a", "deal_brain")).code is Code.OVER_LIMIT


def test_shadow_mode_allows_but_reports(make_limiter):
    limiter, _ = make_limiter()
    decide(limiter, desc("a", "shadowed"))
    second = decide(limiter, desc("a", "shadowed"))
    assert second.code is Code.OK
    assert second.statuses[0].shadow_over_limit is True
    assert limiter.statistics().shadow_over_limit == 1
    assert limiter.statistics().over_limit == 0


def test_unlimited_and_unmatched_descriptors_pass(make_limiter):
    limiter, _ = make_limiter()
    for _ in range(10):
        decision = decide(limiter, desc("a", "free"), desc("a", "no_such_route"), Descriptor((("x", "y"),)))
        assert decision.code is Code.OK
    assert all(s.limit is None or s.limit.unlimited for s in decision.statuses)


def test_unknown_domain_is_not_limited(make_limiter):
    limiter, _ = make_limiter()
    assert decide(limiter, *[desc("a", "deal_brain")] * 5, domain="other-domain").code is Code.OK


def test_response_message_carries_what_envoy_needs(make_limiter):
    limiter, _ = make_limiter()
    for _ in range(3):
        decide(limiter, desc("a", "deal_brain"))
    response = decision_to_response(decide(limiter, desc("a", "deal_brain")))
    assert response.overall_code == response.OVER_LIMIT
    status = response.statuses[0]
    assert status.current_limit.requests_per_unit == 3
    assert status.current_limit.unit == response.RateLimit.SECOND
    assert status.limit_remaining == 0
    assert status.duration_until_reset.ToMilliseconds() == 750


def test_a_batch_decides_as_the_same_requests_one_by_one(make_limiter):
    """The single-threaded server decides the calls it read together with one store call."""
    limiter, _ = make_limiter()
    batch = [("fg", [desc("a", "deal_brain")], 1)] * 5 + [("fg", [desc("b", "deal_brain")], 1)]
    codes = [d.code for d in limiter.should_rate_limit_many(batch)]
    assert codes == [Code.OK] * 3 + [Code.OVER_LIMIT] * 2 + [Code.OK]
    remaining = [
        d.statuses[0].limit_remaining for d in limiter.should_rate_limit_many(batch[:1] + batch[-1:])
    ]
    assert remaining == [0, 1]  # a: over (6th hit); b: its 2nd of 3
    stats = limiter.statistics()
    assert (stats.requests, stats.over_limit) == (8, 3)


def test_a_failing_store_fails_the_whole_batch_and_counts_each():
    clock = FakeClock()
    limiter = RateLimiter(CONFIG, RedisCounterStore.from_url("redis://127.0.0.1:1/0"), clock=clock)
    with pytest.raises(CounterStoreError):
        limiter.should_rate_limit_many([("fg", [desc("a", "deal_brain")], 1)] * 3)
    assert limiter.statistics().store_errors == 3


# -- backend-specific ------------------------------------------------------------------------


def test_memory_store_sweeps_expired_windows():
    clock = FakeClock()
    store = MemoryCounterStore(clock=clock, sweep_interval=1.0)
    limiter = RateLimiter(CONFIG, store, clock=clock)
    for tenant in "abc":
        decide(limiter, desc(tenant, "deal_brain"))
    assert store.statistics().keys == 3
    clock.now += 2.0
    decide(limiter, desc("d", "deal_brain"))
    stats = store.statistics()
    assert (stats.keys, stats.expired) == (1, 3)


def test_redis_keys_expire_with_their_window(redis_url):
    import redis

    clock = FakeClock()
    prefix = redis_prefix()
    store = RedisCounterStore.from_url(redis_url)
    limiter = RateLimiter(CONFIG, store, clock=clock, key_prefix=prefix)
    decide(limiter, desc("a", "omnirag_submit"))
    store.close()
    client = redis.Redis.from_url(redis_url)
    try:
        keys = client.keys(f"{prefix}*")
        assert len(keys) == 1
        # the reference service's key shape: domain_key_value_..._windowstart
        assert keys[0].decode() == f"{prefix}fg_tenant_a_route_omnirag_submit_{int(clock.now // 60 * 60)}"
        assert 0 < client.ttl(keys[0]) <= 60
    finally:
        client.delete(*client.keys(f"{prefix}*"))
        client.close()


def test_unreachable_redis_raises_counter_store_error():
    clock = FakeClock()
    # a port nothing listens on (a reserved, unassigned one); connecting fails fast
    limiter = RateLimiter(CONFIG, RedisCounterStore.from_url("redis://127.0.0.1:1/0"), clock=clock)
    with pytest.raises(CounterStoreError, match="redis"):
        decide(limiter, desc("a", "deal_brain"))
    assert limiter.statistics().store_errors == 1


def test_concurrent_threads_never_lose_a_count(make_limiter):
    """The server decides in several threads: 8 threads x 50 hits must count exactly 400."""
    limiter, _ = make_limiter()
    big = parse_config(
        {
            "domain": "fg",
            "descriptors": [{"key": "k", "rate_limit": {"unit": "hour", "requests_per_unit": 1000}}],
        }
    )
    limiter = RateLimiter(big, limiter.store, clock=FakeClock(), key_prefix=redis_prefix())

    def hammer():
        for _ in range(50):
            decide(limiter, Descriptor((("k", "v"),)))

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert decide(limiter, Descriptor((("k", "v"),))).statuses[0].limit_remaining == 1000 - 401
    assert limiter.statistics().requests == 401

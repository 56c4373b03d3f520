"""Token and cost budgets in the rate-limit service: windows, headers, the usage report, the generated config.

Every decision here runs against both counter stores (memory; Redis when one answers) on a fake
clock injected into the limiter: windows move because the test moves the clock, never by sleeping.
The limits are generated from a budget file's tenant table by `cluster.ratelimit_config`, exactly as
the committed ``config/ratelimit.yaml`` is.
"""

from __future__ import annotations

import tomllib

import floodgate
import pytest
import yaml

from cluster.ratelimit_config import MARKER, RATELIMIT_CONFIG, budget_section, llm_routes, render
from harness import REPO_ROOT
from services.ratelimit import (
    COST_SCALE,
    Code,
    Descriptor,
    MemoryCounterStore,
    RateLimiter,
    RedisCounterStore,
    budget_descriptor_entries,
    decision_to_response,
    in_flight_descriptor_entries,
    load_config,
    parse_config,
    reset_duration,
    tenant_usage,
)

from .conftest import redis_prefix

BUDGET_TOML = REPO_ROOT / "config" / "budget.toml"
DOMAIN = "floodgate"
T0 = 20_834 * 86_400.0  # midnight UTC (so a minute too): every window starts here


def budget_with(tenants: dict) -> floodgate.Budget:
    data = tomllib.loads(BUDGET_TOML.read_text())
    data["tenants"] = tenants
    return floodgate.parse_budget(data)


BUDGET = budget_with(
    {
        "default": {"tokens_per_minute": 1000, "tokens_per_day": 5000, "cost_per_day": 0.01},
        "big": {"tokens_per_minute": 3000},
        "heavy": {"weight": 2},  # a table of its own, the default's budgets
    }
)


def config_for(budget: floodgate.Budget):
    """The descriptor config the generator writes for ``budget`` (the budget part alone)."""
    text = "domain: floodgate\ndescriptors:\n" + budget_section(budget)
    return parse_config(yaml.safe_load(text))


class FakeClock:
    def __init__(self, now: float = T0 + 0.25) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.realtime)])
def make_limiter(request):
    opened = []

    def factory(budget=BUDGET):
        clock = FakeClock()
        if request.param == "memory":
            store = MemoryCounterStore(clock=clock)
        else:
            store = RedisCounterStore.from_url(request.getfixturevalue("redis_url"))
            opened.append(store)
        return RateLimiter(config_for(budget), store, clock=clock, key_prefix=redis_prefix()), clock

    yield factory
    for store in opened:
        store.close()


WINDOWS = ("tokens_per_minute", "tokens_per_day", "cost_per_day")


def ask(limiter, tenant):
    """What the gateway asks before an LLM request: every budget window, zero hits."""
    descriptors = [Descriptor(tuple(budget_descriptor_entries(w, tenant)), 0) for w in WINDOWS]
    return limiter.should_rate_limit(DOMAIN, descriptors)


def report(limiter, tenant, route, tokens, cost_usd=0.0):
    """What the gateway reports once the answer is complete (Envoy's apply_on_stream_done)."""
    descriptors = []
    for window in WINDOWS:
        hits = round(cost_usd * COST_SCALE) if window == "cost_per_day" else tokens
        descriptors.append(Descriptor(tuple(budget_descriptor_entries(window, tenant)), hits))
        descriptors.append(Descriptor(tuple(budget_descriptor_entries(window, tenant, route)), hits))
    return limiter.should_rate_limit(DOMAIN, descriptors)


def start(limiter, tenant):
    """The ask as the gateway sends it: every budget window, and one start of the tenant's request."""
    descriptors = [Descriptor(tuple(budget_descriptor_entries(w, tenant)), 0) for w in WINDOWS]
    descriptors.append(Descriptor(tuple(in_flight_descriptor_entries(tenant)), 1))
    return limiter.should_rate_limit(DOMAIN, descriptors)


def finish(limiter, tenant, route="deal_brain", tokens=0, cost_usd=0.0):
    """The report at the end of the stream, as the gateway sends it: what the request used (nothing
    when it used nothing: Envoy leaves those descriptors out), and one end of the tenant's request."""
    descriptors = []
    for window in WINDOWS:
        hits = round(cost_usd * COST_SCALE) if window == "cost_per_day" else tokens
        if hits:
            descriptors.append(Descriptor(tuple(budget_descriptor_entries(window, tenant)), hits))
            descriptors.append(Descriptor(tuple(budget_descriptor_entries(window, tenant, route)), hits))
    descriptors.append(Descriptor(tuple(in_flight_descriptor_entries(tenant, finished=True)), 1))
    return limiter.should_rate_limit(DOMAIN, descriptors)


def headers(decision) -> dict[str, str]:
    return {h.key: h.value for h in decision_to_response(decision).response_headers_to_add}


def test_asking_counts_nothing_and_passes_while_tokens_are_left(make_limiter):
    limiter, _ = make_limiter()
    for _ in range(5):
        assert ask(limiter, "a").code is Code.OK
    report(limiter, "a", "deal_brain", 999)
    assert ask(limiter, "a").code is Code.OK  # one token left of 1000
    report(limiter, "a", "deal_brain", 1)
    decision = ask(limiter, "a")  # exactly spent: nothing is left
    assert decision.code is Code.OVER_LIMIT


def test_a_spent_minute_refuses_until_the_window_frees_then_passes(make_limiter):
    limiter, clock = make_limiter()
    clock.now = T0 + 20.0
    report(limiter, "a", "deal_brain", 1200)  # one answer overshot the minute's 1000
    decision = ask(limiter, "a")
    assert decision.code is Code.OVER_LIMIT
    assert decision.retry_after == 40  # the minute's window ends at T0 + 60
    clock.now = T0 + 59.9
    assert ask(limiter, "a").code is Code.OVER_LIMIT
    clock.now = T0 + 60.0
    assert ask(limiter, "a").code is Code.OK


def test_the_day_window_refuses_after_the_minutes_free_again(make_limiter):
    limiter, clock = make_limiter()
    for minute in range(5):
        clock.now = T0 + 60 * minute
        assert ask(limiter, "a").code is Code.OK
        report(limiter, "a", "nexus_assess", 1000)
    clock.now = T0 + 3600.0  # the minute is fresh; the day's 5000 are spent
    decision = ask(limiter, "a")
    assert decision.code is Code.OVER_LIMIT
    assert decision.retry_after == 86400 - 3600
    clock.now = T0 + 86400.0
    assert ask(limiter, "a").code is Code.OK


def test_the_cost_budget_counts_micro_dollars(make_limiter):
    limiter, _ = make_limiter()
    report(limiter, "a", "deal_brain", 10, cost_usd=0.009999)
    assert ask(limiter, "a").code is Code.OK
    report(limiter, "a", "deal_brain", 10, cost_usd=0.000001)
    decision = ask(limiter, "a")
    assert decision.code is Code.OVER_LIMIT
    assert headers(decision)["x-ratelimit-remaining-cost"] == "0"


def test_tenants_have_their_own_budgets_and_overrides(make_limiter):
    limiter, _ = make_limiter()
    report(limiter, "a", "deal_brain", 1000)
    assert ask(limiter, "a").code is Code.OVER_LIMIT
    assert ask(limiter, "b").code is Code.OK  # another tenant's counter
    report(limiter, "big", "deal_brain", 1000)
    assert ask(limiter, "big").code is Code.OK  # its own table: 3000 a minute
    assert headers(ask(limiter, "big"))["x-ratelimit-limit-tokens"] == "3000"


def test_headers_tell_the_tightest_window_and_leave_envoys_headers_to_requests(make_limiter):
    limiter, clock = make_limiter()
    clock.now = T0 + 15.0
    report(limiter, "a", "deal_brain", 400, cost_usd=0.0025)
    decision = ask(limiter, "a")
    assert headers(decision) == {
        "x-ratelimit-limit-tokens": "1000",  # the minute: 600 left, where the day has 4600
        "x-ratelimit-remaining-tokens": "600",
        "x-ratelimit-reset-tokens": "45s",
        "x-ratelimit-limit-cost": "0.01",
        "x-ratelimit-remaining-cost": "0.0075",
        "x-ratelimit-reset-cost": "23h59m45s",
    }
    # no current_limit: Envoy builds its x-ratelimit-* headers from the request limits only
    assert not any(s.HasField("current_limit") for s in decision_to_response(decision).statuses)


def test_the_requests_in_flight_are_reserved_at_their_mean(make_limiter):
    limiter, clock = make_limiter()
    clock.now = T0 + 1.0
    for tokens in (200, 200):
        assert start(limiter, "a").code is Code.OK
        finish(limiter, "a", tokens=tokens)
    # 400 used, 200 a request: 600 left, so three may be in flight (400 + 3 x 200 = 1000), not four
    assert [start(limiter, "a").code for _ in range(4)] == [Code.OK] * 3 + [Code.OVER_LIMIT]
    decision = start(limiter, "a")  # refused with 600 counted as left: the rest is reserved
    assert decision.code is Code.OVER_LIMIT and headers(decision)["x-ratelimit-remaining-tokens"] == "0"
    assert decision.retry_after == 59  # the minute's window ends at T0 + 60
    assert tenant_usage(limiter, DOMAIN, "a")["windows"]["tokens_per_minute"]["remaining"] == 600
    finish(limiter, "a")  # the refused asks end too (Envoy reports every stream), using nothing
    finish(limiter, "a")
    finish(limiter, "a", tokens=230)  # one of the three: 630 used, 210 a request, two in flight
    assert start(limiter, "a").code is Code.OVER_LIMIT  # 630 + 3 x 210 = 1260
    finish(limiter, "a")
    for _ in range(2):
        finish(limiter, "a", tokens=190)
    # 1010 used: over by 10, how far the three differed from their mean; without the reservation
    # the two asks refused above would have been let in, and counted too
    assert tenant_usage(limiter, DOMAIN, "a")["windows"]["tokens_per_minute"]["used"] == 1010
    assert start(limiter, "a").code is Code.OVER_LIMIT
    finish(limiter, "a")
    clock.now = T0 + 60.0  # a new minute: nothing in flight, about 200 a request
    assert [start(limiter, "a").code for _ in range(5)] == [Code.OK] * 4 + [Code.OVER_LIMIT]


def test_the_cost_budget_reserves_at_the_mean_cost(make_limiter):
    limiter, _ = make_limiter()
    assert start(limiter, "a").code is Code.OK
    finish(limiter, "a", tokens=10, cost_usd=0.004)  # 0.004 used of 0.01, 0.004 a request
    assert start(limiter, "a").code is Code.OK  # 0.004 + 0.004
    assert start(limiter, "a").code is Code.OVER_LIMIT  # 0.004 + 2 x 0.004 > 0.01
    finish(limiter, "a")


def test_a_start_whose_end_is_never_reported_is_forgotten_within_two_buckets(make_limiter):
    limiter, clock = make_limiter()
    clock.now = T0 + 1.0
    assert start(limiter, "a").code is Code.OK
    finish(limiter, "a", tokens=300)
    for _ in range(2):  # two starts whose ends are lost (an ask cancelled with its client, say)
        assert start(limiter, "a").code is Code.OK
    assert start(limiter, "a").code is Code.OVER_LIMIT  # 300 + 3 x 300 > 1000
    finish(limiter, "a")
    clock.now = T0 + 61.0  # a new minute, but the lost two still hold their place: 3, then 4 x 300
    assert [start(limiter, "a").code for _ in range(2)] == [Code.OK, Code.OVER_LIMIT]
    finish(limiter, "a", tokens=300)
    finish(limiter, "a")
    clock.now = T0 + 121.0  # their bucket is forgotten: three fit again (3 x 300), not four
    assert [start(limiter, "a").code for _ in range(4)] == [Code.OK] * 3 + [Code.OVER_LIMIT]


def test_a_gateway_that_sends_no_starts_keeps_the_plain_question(make_limiter):
    # without the in-flight descriptors (an older gateway configuration) nothing is reserved
    limiter, _ = make_limiter()
    report(limiter, "a", "deal_brain", 900)
    assert [ask(limiter, "a").code for _ in range(3)] == [Code.OK] * 3


def test_reset_durations_are_written_as_openai_does():
    assert [reset_duration(s) for s in (0, 0.2, 59, 60, 61.5, 3600, 86399.1)] == [
        "0s",
        "1s",
        "59s",
        "1m0s",
        "1m2s",
        "1h0m0s",
        "24h0m0s",
    ]


def test_usage_reports_each_window_per_endpoint_and_only_the_callers(make_limiter):
    limiter, clock = make_limiter()
    clock.now = T0 + 30.0
    report(limiter, "a", "deal_brain", 300, cost_usd=0.001)
    report(limiter, "a", "nexus_assess", 200, cost_usd=0.0005)
    report(limiter, "b", "deal_brain", 900)
    usage = tenant_usage(limiter, DOMAIN, "a")
    assert usage["tenant"] == "a"
    minute = usage["windows"]["tokens_per_minute"]
    assert minute == {
        "unit": "tokens",
        "limit": 1000,
        "used": 500,
        "remaining": 500,
        "resets_in_seconds": 30.0,
        "endpoints": {"deal_brain": 300, "nexus_assess": 200, "shadow_hunter": 0},
    }
    cost = usage["windows"]["cost_per_day"]
    assert (cost["unit"], cost["limit"], cost["used"]) == ("usd", 0.01, 0.0015)
    assert cost["endpoints"]["deal_brain"] == 0.001
    # b's 900 tokens are nowhere in a's report, and b's report holds only b's
    assert tenant_usage(limiter, DOMAIN, "b")["windows"]["tokens_per_minute"]["used"] == 900
    # reading counts nothing
    assert tenant_usage(limiter, DOMAIN, "a")["windows"]["tokens_per_minute"]["used"] == 500


def test_usage_of_a_tenant_that_used_nothing_is_all_zero(make_limiter):
    limiter, _ = make_limiter()
    usage = tenant_usage(limiter, DOMAIN, "quiet")["windows"]
    assert set(usage) == set(WINDOWS)
    assert all(w["used"] == 0 and w["remaining"] == w["limit"] for w in usage.values())


# -- the generated config -------------------------------------------------------------------------


def test_the_committed_config_is_what_the_budget_gives():
    current = RATELIMIT_CONFIG.read_text()
    assert render(current, floodgate.load_budget(BUDGET_TOML)) == current, (
        "config/ratelimit.yaml's budgets are stale: run python -m cluster.ratelimit_config"
    )
    assert MARKER in current
    load_config(RATELIMIT_CONFIG)  # and the service reads it


def test_the_committed_budgets_follow_the_tenant_table():
    budget = floodgate.load_budget(BUDGET_TOML)
    limits = load_config(RATELIMIT_CONFIG).domain(DOMAIN)
    for tenant in ["someone-new", *budget.tenants.configured]:
        policy = budget.tenants.policy(tenant)
        for window in WINDOWS:
            value = getattr(policy, window)
            matched = limits.find_limit(budget_descriptor_entries(window, tenant))
            if value is None:
                assert matched is None or matched.rate_limit.unlimited
                continue
            scale = COST_SCALE if window == "cost_per_day" else 1
            assert matched.rate_limit.requests_per_unit == round(value * scale)
            assert not matched.shadow_mode
            for route in llm_routes(budget):
                counted = limits.find_limit(budget_descriptor_entries(window, tenant, route))
                assert counted.shadow_mode  # counted for the usage report, never refusing


def test_a_tenant_without_a_cost_budget_is_unlimited_where_the_default_has_one():
    budget = budget_with({"default": {"cost_per_day": 1.0}, "free": {"tokens_per_day": 10}})
    limits = config_for(budget).domain(DOMAIN)
    assert limits.find_limit(budget_descriptor_entries("cost_per_day", "free")).rate_limit.requests_per_unit
    no_cost = budget_with({"free": {"cost_per_day": 1.0}})  # the default has none
    limits = config_for(no_cost).domain(DOMAIN)
    other = limits.find_limit(budget_descriptor_entries("cost_per_day", "other"))
    assert other.rate_limit.unlimited
    assert limits.find_limit(
        budget_descriptor_entries("cost_per_day", "free")
    ).rate_limit.requests_per_unit == (COST_SCALE)


def test_the_local_cluster_runs_the_budgets_of_its_own_budget_file(tmp_path):
    from pathlib import Path

    from cluster.children import cluster_children
    from cluster.ratelimit_config import write_ratelimit_config
    from cluster.settings import ClusterSettings

    budget = budget_with({"default": {"tokens_per_minute": 7}})
    settings = ClusterSettings(data_dir=tmp_path)
    written = write_ratelimit_config(budget, settings.ratelimit_config_path)
    limits = load_config(written).domain(DOMAIN)
    assert (
        limits.find_limit(budget_descriptor_entries("tokens_per_minute", "t")).rate_limit.requests_per_unit
        == 7
    )
    committed = RATELIMIT_CONFIG.read_text().partition(MARKER)[0]
    assert written.read_text().startswith(committed)  # the request limits as committed
    ratelimit = next(
        c for c in cluster_children(settings, envoy_config=Path("/tmp/envoy.yaml")) if c.name == "ratelimit"
    )
    assert ratelimit.env["RATELIMIT_CONFIG"] == str(settings.ratelimit_config_path.resolve())

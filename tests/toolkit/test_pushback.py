"""The in-flight limit learned from a provider's 429s: the rule, then a Dependency on the virtual clock."""

from __future__ import annotations

import floodgate
import pytest
import trio
from prometheus_client import CollectorRegistry

from .conftest import budget_dict

# -- the rule ----------------------------------------------------------------------------------------


def test_it_starts_at_the_ceiling():
    limit = floodgate.PushbackLimit(8)
    assert (limit.limit, limit.ceiling, limit.floor) == (8, 8, 1)


def test_a_429_explained_by_our_own_concurrency_lowers_to_what_the_provider_took():
    limit = floodgate.PushbackLimit(9)
    # refused with 8 of ours inside: the provider's limit is at most 8 — not halved to 4
    assert limit.pushback(10.0, sent_with=9, generation=limit.generation)
    assert limit.limit == 8


def test_no_deeper_than_the_multiplicative_decrease():
    limit = floodgate.PushbackLimit(16, decrease=0.5)
    for expected in (8, 4, 2, 1):
        # refused with 2 of ours inside, again and again: halved each round trip, never deeper
        assert limit.pushback(1.0, sent_with=3, generation=limit.generation)
        assert limit.limit == max(expected, 2)
        if expected == 2:
            break
    assert not limit.pushback(2.0, sent_with=3, generation=limit.generation)  # the evidence: 2
    assert limit.limit == 2


def test_a_429_with_more_of_ours_in_flight_than_the_limit_changes_nothing():
    # calls admitted before a lowering still retry: the excess explains the refusal
    limit = floodgate.PushbackLimit(10)
    assert not limit.pushback(1.0, sent_with=14, generation=0)
    assert not limit.pushback(1.0, sent_with=11, generation=0)
    assert limit.limit == 10


def test_one_decrease_per_round_trip():
    limit = floodgate.PushbackLimit(16)
    sent = limit.generation
    # twelve attempts left together and were refused together: one decrease, on the first answer
    assert limit.pushback(1.0, sent_with=12, generation=sent)
    assert limit.limit == 11
    for sent_with in range(5, 12):
        assert not limit.pushback(1.0, sent_with=sent_with, generation=sent)
    assert limit.limit == 11
    assert limit.pushback(1.5, sent_with=9, generation=limit.generation)
    assert limit.limit == 8


def test_never_below_the_floor():
    limit = floodgate.PushbackLimit(8, floor=3)
    for t in range(1, 10):
        limit.pushback(float(t), sent_with=1, generation=limit.generation)
    assert limit.limit == 3
    assert limit.statistics().decreases_total == 2  # 8 -> 4 -> 3, then nothing to lower


def test_increase_by_one_after_an_interval_of_use_without_429():
    limit = floodgate.PushbackLimit(10, increase_interval=30.0)
    limit.pushback(0.0, sent_with=5, generation=0)
    limit.pushback(0.0, sent_with=5, generation=limit.generation)
    assert limit.limit == 4  # a 429 at 5: the level to probe again only slowly
    g = limit.generation
    assert not limit.success(29.9, sent_with=4, generation=g)  # used, but too early
    assert limit.success(30.0, sent_with=1, generation=g)  # used once since the change: enough
    assert limit.limit == 5
    # the next step needs a new interval, and use of the new limit
    assert not limit.success(61.0, sent_with=4, generation=limit.generation)
    assert limit.limit == 5
    assert limit.success(61.0, sent_with=5, generation=limit.generation)
    assert limit.limit == 6


def test_below_the_level_that_drew_a_429_it_climbs_back_sooner():
    # halved from 10 to 5 (the 429's estimate may undershoot): 6, 7, 8 and 9 are tried every
    # recovery_interval (a tenth: 3 s); 10, where the 429 came, only after increase_interval
    limit = floodgate.PushbackLimit(10, increase_interval=30.0)
    limit.pushback(0.0, sent_with=3, generation=0)
    assert limit.limit == 5
    t, times = 0.0, []
    while limit.limit < 10:
        t += 0.5
        if limit.success(t, sent_with=limit.limit, generation=limit.generation):
            times.append(t)
    assert times == [3.0, 6.0, 9.0, 12.0, 42.0]
    with pytest.raises(ValueError):
        floodgate.PushbackLimit(10, increase_interval=1.0, recovery_interval=2.0)


def test_an_idle_limit_does_not_grow():
    limit = floodgate.PushbackLimit(10, increase_interval=1.0)
    limit.pushback(0.0, sent_with=6, generation=0)
    for t in range(1, 100):
        assert not limit.success(float(t), sent_with=2, generation=limit.generation)
    assert limit.limit == 5


def test_use_reported_by_calls_sent_before_a_change_does_not_count():
    limit = floodgate.PushbackLimit(10, increase_interval=1.0)
    limit.pushback(5.0, sent_with=6, generation=0)  # -> 5
    assert not limit.success(6.5, sent_with=8, generation=0)  # old traffic
    assert not limit.success(7.0, sent_with=1, generation=limit.generation)
    assert limit.limit == 5


def test_never_above_the_ceiling():
    limit = floodgate.PushbackLimit(3, increase_interval=1.0)
    for t in range(1, 20):
        limit.success(float(t), sent_with=3, generation=limit.generation)
    assert limit.limit == 3 and limit.statistics().increases_total == 0


def test_a_new_ceiling():
    limit = floodgate.PushbackLimit(8, floor=4)
    assert limit.set_ceiling(12, 0.0) and limit.limit == 12  # untouched by pushback: follows it up
    assert limit.set_ceiling(6, 1.0) and limit.limit == 6
    limit.pushback(2.0, sent_with=6, generation=limit.generation)
    assert limit.limit == 5
    assert not limit.set_ceiling(10, 3.0) and limit.limit == 5  # learned from the provider: stays
    assert limit.set_ceiling(2, 4.0) and (limit.limit, limit.floor) == (2, 2)
    assert limit.set_ceiling(10, 5.0) and (limit.limit, limit.floor) == (5, 4)  # remembered
    with pytest.raises(ValueError):
        limit.set_ceiling(0, 6.0)


def test_climbing_back_to_the_ceiling_forgets_what_was_learned():
    limit = floodgate.PushbackLimit(4, increase_interval=1.0)
    limit.pushback(0.0, sent_with=4, generation=0)
    assert limit.limit == 3
    assert limit.success(1.0, sent_with=3, generation=limit.generation)
    assert limit.limit == 4
    assert limit.set_ceiling(6, 2.0) and limit.limit == 6


@pytest.mark.parametrize(
    "kwargs", [{"floor": 0}, {"floor": 9}, {"decrease": 1.0}, {"decrease": 0.0}, {"increase_interval": 0.0}]
)
def test_bad_settings_are_refused(kwargs):
    with pytest.raises(ValueError):
        floodgate.PushbackLimit(8, **kwargs)


# -- a Dependency against a provider that allows fewer calls than the budget -------------------------


class Provider:
    """A provider with ``max_concurrent`` calls at once: the rest are refused 429 (Retry-After
    ``retry_after``), as the simulator's ``rate_limit.max_concurrent`` does."""

    def __init__(self, *, max_concurrent: int, latency: float, retry_after: float = 1.0):
        self.max_concurrent = max_concurrent
        self.latency = latency
        self.retry_after = retry_after
        self.inside = 0
        self.peak = 0
        self.answered: list[float] = []
        self.refused: list[float] = []

    async def __call__(self) -> str:
        now = trio.current_time()
        if self.inside >= self.max_concurrent:
            self.refused.append(now)
            await trio.lowlevel.checkpoint()
            raise floodgate.DependencyError("HTTP 429", status=429, retry_after=self.retry_after)
        self.inside += 1
        self.peak = max(self.peak, self.inside)
        try:
            await trio.sleep(self.latency)
        finally:
            self.inside -= 1
        self.answered.append(trio.current_time())
        return "ok"


def adaptive_dependency(capacity: int, registry=None, **adaptive) -> floodgate.Dependency:
    budget = floodgate.parse_budget(
        budget_dict(
            global_concurrency=capacity,
            max_waiters=64,
            max_wait=2.0,
            adaptive=adaptive or True,
            retry={"max_attempts": 3, "retry_after_cap": 5.0},
        )
    )
    seed = iter(range(10**9))
    return floodgate.Dependency(
        "api",
        budget.dependency("api"),
        capacity=capacity,
        registry=registry,
        rng=lambda: (next(seed) * 0.6180339887) % 1.0,  # spread, and the same every run
    )


async def closed_loop(dep: floodgate.Dependency, provider: Provider, *, clients: int, until: float) -> None:
    """``clients`` callers, each calling again as soon as it has an answer (after Retry-After when
    refused), until ``until``."""

    async def client() -> None:
        while trio.current_time() < until:
            try:
                await dep.call(provider)
            except floodgate.FloodgateError as exc:
                await trio.sleep(exc.retry_after or 0.1)

    async with trio.open_nursery() as nursery:
        for _ in range(clients):
            nursery.start_soon(client)


def window(times: list[float], start: float, end: float) -> int:
    return sum(start <= t < end for t in times)


async def test_the_limit_finds_the_provider_limit_and_stays_polite(autojump_clock):
    # budget: 16 in flight; the provider takes 4 at once, 100 ms each: it allows 40 calls/s
    registry = CollectorRegistry()
    dep = adaptive_dependency(16, registry=registry)
    provider = Provider(max_concurrent=4, latency=0.1)
    await closed_loop(dep, provider, clients=32, until=200.0)
    # adapted within the first seconds: the gate's capacity is the provider's limit
    stats = dep.statistics()
    assert stats.limit.limit in (4, 5) and stats.gate.capacity == stats.limit.limit
    assert registry.get_sample_value("floodgate_dependency_concurrency_limit", {"dependency": "api"}) == (
        stats.limit.limit
    )
    # after the adaptation (the first 20 s): under 1 % of the attempts are refused, and the
    # throughput is within 10 % of the 40/s the provider allows
    answered = window(provider.answered, 20.0, 200.0)
    refused = window(provider.refused, 20.0, 200.0)
    assert refused / (answered + refused) < 0.01
    assert answered / 180.0 >= 0.9 * 40
    # it keeps probing (one more than the provider takes, once per increase_interval), politely
    assert 3 <= refused <= 8
    assert provider.peak == 4


async def test_without_adaptation_the_same_load_is_mostly_refused(autojump_clock):
    # the baseline the test above improves on: a fixed limit of 16 against a provider at 4
    budget = floodgate.parse_budget(budget_dict(global_concurrency=16, max_waiters=64, max_wait=2.0))
    dep = floodgate.Dependency("api", budget.dependency("api"), capacity=16, rng=lambda: 0.5)
    provider = Provider(max_concurrent=4, latency=0.1)
    await closed_loop(dep, provider, clients=32, until=60.0)
    answered = window(provider.answered, 20.0, 60.0)
    refused = window(provider.refused, 20.0, 60.0)
    assert refused / (answered + refused) > 0.3


async def test_a_provider_that_raises_its_limit_is_followed_slowly(autojump_clock):
    dep = adaptive_dependency(16, increase_interval=10.0)
    provider = Provider(max_concurrent=4, latency=0.1)
    await closed_loop(dep, provider, clients=32, until=20.0)
    assert dep.limit.limit in (4, 5)
    provider.max_concurrent = 8
    await closed_loop(dep, provider, clients=32, until=80.0)
    assert dep.limit.limit in (8, 9)  # four steps of one per 10 s, then probing again


async def test_resize_sets_the_ceiling_and_the_gate_takes_the_lower(autojump_clock):
    dep = adaptive_dependency(16)
    provider = Provider(max_concurrent=4, latency=0.1)
    await closed_loop(dep, provider, clients=32, until=10.0)
    learned = dep.limit.limit
    dep.resize(3)
    assert (dep.gate.capacity, dep.limit.ceiling, dep.limit.limit) == (3, 3, 3)
    dep.resize(0)  # a process that holds no share: the gate admits no one
    assert dep.gate.capacity == 0
    dep.resize(16)
    assert dep.gate.capacity == dep.limit.limit <= learned
    fixed = floodgate.Dependency(
        "api", floodgate.parse_budget(budget_dict()).dependency("api"), capacity=2, rng=lambda: 0.0
    )
    fixed.resize(5)
    assert fixed.gate.capacity == 5 and fixed.limit is None


def test_budget_keys():
    on = floodgate.parse_budget(budget_dict(adaptive=True)).dependency("api").adaptive
    assert (on.floor, on.decrease, on.increase_interval) == (1, 0.5, 30.0)
    assert floodgate.parse_budget(budget_dict(adaptive=False)).dependency("api").adaptive is None
    assert floodgate.parse_budget(budget_dict()).dependency("api").adaptive is None
    tuned = floodgate.parse_budget(budget_dict(adaptive={"floor": 2, "increase_interval": 10.0}))
    assert tuned.dependency("api").adaptive.floor == 2
    with pytest.raises(floodgate.BudgetError, match=r"adaptive\.decrease"):
        floodgate.parse_budget(budget_dict(adaptive={"decrease": 1.5}))
    with pytest.raises(floodgate.BudgetError, match=r"adaptive\.step"):
        floodgate.parse_budget(budget_dict(adaptive={"step": 2}))

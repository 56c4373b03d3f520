"""An adaptive dependency against the simulator's ``rate_limit.max_concurrent``, set below the budget.

The budget lets a process have 16 LLM calls in flight; the simulated provider takes 4 at once and
answers the rest 429 (``Retry-After: 1``, ``retry-after-ms: 1000``). With ``adaptive = true`` the
dependency learns the provider's limit (`floodgate.PushbackLimit`) and pauses after each 429
(`floodgate.Cooldown`): once adapted, under 1 % of its attempts are refused, while its throughput
stays within 10 % of the 4 / latency the provider allows. First on the virtual clock, with the
simulator app in-process (long enough to include the limit's probes), then against a real
simulator process over HTTP (short: the adaptation and a steady window).
"""

from __future__ import annotations

from typing import Any

import floodgate
import httpx
import pytest
import trio
from prometheus_client import CollectorRegistry

from harness.chat_load import attempts, closed_loop
from harness.services import set_behaviour, start_simulator
from services.simulator import SimulatorSettings, create_app

PROVIDER_LIMIT = 4


def budget(**llm: Any) -> floodgate.Budget:
    return floodgate.parse_budget(
        {
            "deployment": {"database_max_connections": 20, "database_reserve": 2},
            "services": {"online": {"replicas": 1, "workers": 1}},
            "dependencies": {
                "llm": {
                    "global_concurrency": 16,
                    "shares": {"online": 1.0},
                    "max_waiters": 64,
                    "max_wait": 2.0,
                    "timeouts": {"attempt": 8.0, "read": 8.0},
                    **llm,
                }
            },
        }
    )


def dependencies(budget: floodgate.Budget, base_url: str, registry: CollectorRegistry, **kwargs):
    return floodgate.Dependencies.from_budget(
        budget, service="online", registry=registry, http_base_urls={"llm": base_url}, **kwargs
    )


@pytest.mark.timeout(60)
async def test_the_adaptive_limit_settles_at_the_simulators_max_concurrent(autojump_clock) -> None:
    latency = 0.4  # the provider allows 4 / 0.4 s = 10 calls/s
    simulator = create_app(
        SimulatorSettings(
            seed=1,
            behaviour={
                "chat": {
                    "latency": {"fixed_ms": latency * 1000},
                    "rate_limit": {"max_concurrent": PROVIDER_LIMIT},
                }
            },
        )
    )
    registry = CollectorRegistry()
    deps = dependencies(
        budget(adaptive=True),
        "http://simulator.test",
        registry,
        transport=httpx.ASGITransport(app=simulator),
        rng=lambda: 0.5,
    )
    async with deps:
        llm = deps["llm"]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: closed_loop(llm, clients=32, until=150.0))
            await trio.sleep_until(30.0)  # adapted by then
            ok_before, refused_before = attempts(registry)
        ok, refused = attempts(registry)
    ok, refused = ok - ok_before, refused - refused_before
    allowed = PROVIDER_LIMIT / latency * 120.0
    assert refused / (ok + refused) < 0.01
    assert ok >= 0.9 * allowed
    assert 2 <= refused  # it keeps probing for more, once per increase_interval (30 s)
    stats = llm.statistics()
    assert stats.limit.limit in (PROVIDER_LIMIT, PROVIDER_LIMIT + 1)
    assert registry.get_sample_value("floodgate_dependency_concurrency_limit", {"dependency": "llm"}) == (
        stats.limit.limit
    )


@pytest.mark.timeout(60)
async def test_a_fixed_limit_above_the_providers_is_mostly_refused(autojump_clock) -> None:
    # the baseline: the same load without adaptation (the cool-down alone) still sends 16 at a time
    simulator = create_app(
        SimulatorSettings(
            seed=1,
            behaviour={
                "chat": {"latency": {"fixed_ms": 400}, "rate_limit": {"max_concurrent": PROVIDER_LIMIT}}
            },
        )
    )
    registry = CollectorRegistry()
    deps = dependencies(
        budget(),
        "http://simulator.test",
        registry,
        transport=httpx.ASGITransport(app=simulator),
        rng=lambda: 0.5,
    )
    async with deps:
        await closed_loop(deps["llm"], clients=32, until=30.0)
    ok, refused = attempts(registry)
    assert refused / (ok + refused) > 0.3


@pytest.fixture
def simulator(tmp_path, realtime):
    proc = start_simulator(tmp_path)
    try:
        yield proc
    finally:
        proc.stop()


async def measure(
    deps: dict[str, floodgate.Dependency],
    registries: dict[str, CollectorRegistry],
    *,
    adapt: float,
    window: float,
) -> dict[str, tuple[float, float]]:
    """Closed-loop load on each dependency at once for ``adapt + window`` seconds: per name,
    (answers/s, share of attempts refused 429) over the last ``window`` seconds."""
    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        for llm in deps.values():
            nursery.start_soon(lambda llm=llm: closed_loop(llm, clients=24, until=start + adapt + window))
        await trio.sleep_until(start + adapt)
        before = {name: attempts(registry) for name, registry in registries.items()}
        await trio.sleep_until(start + adapt + window)
        after = {name: attempts(registry) for name, registry in registries.items()}
    result = {}
    for name in deps:
        ok, refused = (a - b for a, b in zip(after[name], before[name], strict=True))
        result[name] = (ok / window, refused / max(1.0, ok + refused))
    return result


@pytest.mark.timeout(60)
async def test_against_a_simulator_process(simulator) -> None:
    set_behaviour(
        simulator, {"chat": {"latency": {"fixed_ms": 100}, "rate_limit": {"max_concurrent": PROVIDER_LIMIT}}}
    )
    # What the provider allows is measured at the same time, on the same machine: a second
    # dependency with its own API key (the simulator limits each key apart) and a fixed limit set
    # to the provider's max_concurrent — what an operator who knew the limit would write. (On
    # paper 4 / 100 ms is 40/s; the simulator's own time per answer comes on top.)
    registries = {"adaptive": CollectorRegistry(), "known": CollectorRegistry()}
    adaptive = dependencies(
        budget(adaptive=True), simulator.url, registries["adaptive"], api_keys={"llm": "sk-adaptive"}
    )
    known = dependencies(
        budget(global_concurrency=PROVIDER_LIMIT),
        simulator.url,
        registries["known"],
        api_keys={"llm": "sk-known"},
    )
    async with adaptive, known:
        result = await measure(
            {"adaptive": adaptive["llm"], "known": known["llm"]}, registries, adapt=6.0, window=8.0
        )
        assert adaptive["llm"].statistics().limit.limit == PROVIDER_LIMIT
    (rate, refused_share), (allowed, known_refused) = result["adaptive"], result["known"]
    assert known_refused == 0
    assert refused_share < 0.01
    assert rate >= 0.9 * allowed, result

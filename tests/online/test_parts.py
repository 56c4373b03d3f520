"""The online service's small parts: fusion, bounded fan-out, degradation policy, Server-Timing."""

from __future__ import annotations

import floodgate
import pytest
import trio
from floodgate._plan import DOOR_LOSS, erlang_b
from providers import WebHit

import services.online
from services.online._admission import HEADROOM, endpoint_capacity, make_door
from services.online._chunks import ChunkHit
from services.online._deal_brain import RRF_K, fuse
from services.online._degrade import degradable, degradations_of
from services.online._fanout import gather_settled, gather_strict
from services.online._timing import ServerTiming

from .conftest import TENANT, make_budget


def test_public_api_is_declared() -> None:
    assert sorted(services.online.__all__) == sorted(
        [
            "ENDPOINTS",
            "Endpoint",
            "EndpointCapacity",
            "endpoint_capacity",
            "OnlineSettings",
            "OnlineState",
            "build_openapi",
            "create_app",
            "online_state",
            "open_downstreams",
        ]
    )
    for name in services.online.__all__:
        assert getattr(services.online, name) is not None


def test_fuse_interleaves_by_reciprocal_rank_and_dedupes_web_urls() -> None:
    docs = [ChunkHit("d1", 0, "doc one", None, 0.9), ChunkHit("d2", 0, "doc two", None, 0.8)]
    web = [
        WebHit("https://a", "A", "a text", 9.0, 1),
        WebHit("https://a", "A", "a text", 9.0, 2),
        WebHit("https://b", "B", "b text", 5.0, 3),
    ]
    fused = fuse(docs, web, limit=10)
    assert [(c.source, c.doc_id or c.url) for c in fused] == [
        ("document", "d1"),
        ("web", "https://a"),
        ("document", "d2"),
        ("web", "https://b"),
    ]
    assert fused[0].fused == 1 / (RRF_K + 1)
    assert fused[3].fused == 1 / (RRF_K + 2)
    assert len(fuse(docs, web, limit=3)) == 3


async def test_gather_strict_fails_with_the_first_error_unwrapped_and_cancels_the_rest(
    autojump_clock,
) -> None:
    finished = []

    async def slow() -> int:
        await trio.sleep(10)
        finished.append("slow")
        return 1

    async def failing() -> int:
        await trio.sleep(1)
        raise floodgate.Overloaded("full", dependency="llm", retry_after=1.0)

    start = trio.current_time()
    with pytest.raises(floodgate.Overloaded):
        await gather_strict([slow, failing, slow], limit=3)
    assert trio.current_time() - start == 1
    assert finished == []


async def test_gather_strict_keeps_order_and_the_limit(autojump_clock) -> None:
    running = peak = 0

    def make(i: int):
        async def call() -> int:
            nonlocal running, peak
            running += 1
            peak = max(peak, running)
            await trio.sleep(1)
            running -= 1
            return i

        return call

    start = trio.current_time()
    assert await gather_strict([make(i) for i in range(5)], limit=2) == [0, 1, 2, 3, 4]
    assert peak == 2
    assert trio.current_time() - start == 3


async def test_gather_settled_reports_each_toolkit_error_and_lets_bugs_through(autojump_clock) -> None:
    async def ok() -> str:
        return "ok"

    async def down() -> str:
        raise floodgate.CircuitOpen("open", dependency="search", retry_after=5)

    outcomes = await gather_settled([ok, down, ok], limit=2)
    assert [o.ok for o in outcomes] == [True, False, True]
    assert isinstance(outcomes[1].error, floodgate.CircuitOpen)

    async def bug() -> str:
        raise KeyError("bug")

    with pytest.raises(ExceptionGroup):
        await gather_settled([ok, bug], limit=2)


async def test_degradable_follows_the_budget_policy(autojump_clock) -> None:
    policy = make_budget().endpoint("deal_brain")  # rerank and llm degradable; search required

    async def fails() -> list:
        raise floodgate.DependencyError("HTTP 503", dependency="rerank", status=503)

    log = floodgate.Degradations()
    assert await degradable(
        "rerank",
        fails,
        dependency="rerank",
        policy=policy,
        fallback=lambda: ["fused"],
        degradations=log,
        reserve=0.1,
    ) == ["fused"]
    with pytest.raises(floodgate.DependencyError):
        await degradable(
            "search", fails, dependency="search", policy=policy, fallback=list, degradations=log, reserve=0.1
        )
    assert [d.model_dump() for d in degradations_of(log, policy)] == [
        {"step": "rerank", "dependency": "rerank", "reason": "dependency_error", "fallback": "fused_score"}
    ]


async def test_degradable_step_is_cut_before_the_request_deadline(autojump_clock) -> None:
    policy = make_budget().endpoint("deal_brain")
    log = floodgate.Degradations()

    async def hangs() -> str:
        await trio.sleep_forever()
        return "never"

    start = trio.current_time()
    with floodgate.deadline_after(2.0):
        result = await degradable(
            "answer",
            hangs,
            dependency="llm",
            policy=policy,
            fallback=lambda: None,
            degradations=log,
            reserve=0.25,
        )
    assert result is None
    assert trio.current_time() - start == 1.75
    assert [(d.step, d.reason) for d in log] == [("answer", "deadline_exceeded")]


async def test_server_timing_records_steps_including_cancelled_ones(autojump_clock) -> None:
    timing = ServerTiming()
    with timing.step("embed", dependency="embed"):
        await trio.sleep(0.02)
    with trio.move_on_after(0.5):
        with timing.step("answer", dependency="llm"):
            await trio.sleep(1)
    assert timing.header() == 'embed;dur=20.0, answer;dur=500.0;desc="cancelled", total;dur=520.0'
    assert [s.name for s in timing.cancelled_steps()] == ["answer"]
    with pytest.raises(ValueError):
        with timing.step("bad name"):
            pass


def test_the_door_admits_what_the_budget_implies_and_refuses_at_once() -> None:
    capacity = endpoint_capacity(make_budget(), "deal_brain")
    assert capacity.bottleneck == "llm"
    assert capacity.bottleneck_latency == 0.4
    door = make_door(make_budget(), "deal_brain")
    # the fewest places that refuse at most 1 % of random arrivals at 40/s, each held 0.6 s x 1.05
    load = 40 * 0.6 * HEADROOM
    assert erlang_b(capacity.in_flight, load) <= DOOR_LOSS < erlang_b(capacity.in_flight - 1, load)
    assert door.limit == door.ceiling == capacity.in_flight
    # acme's share is the whole door (tests/online/test_tenant_shares.py: the other tenants')
    for _ in range(capacity.in_flight):
        door.enter(TENANT)
    with pytest.raises(floodgate.Overloaded) as refused:
        door.enter(TENANT)
    assert refused.value.dependency == "llm"
    assert refused.value.retry_after == 1.0
    assert str(refused.value) == (
        f"llm: deal_brain is at its limit of {capacity.in_flight} requests in flight "
        f"(the llm budget carries {capacity.rps:.3g} requests/s)"
    )
    door.leave(TENANT)
    door.enter(TENANT)
    stats = door.statistics()
    assert (stats.in_flight, stats.admitted_total, stats.refused_total) == (
        capacity.in_flight,
        capacity.in_flight + 1,
        1,
    )
    for _ in range(capacity.in_flight):
        door.leave(TENANT)
    with pytest.raises(RuntimeError):
        door.leave(TENANT)

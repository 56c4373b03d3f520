"""Faults downstream: degradation, Retry-After, hangs against the deadline, and circuit breakers.

All on the virtual clock: the simulator's latencies, Retry-After waits, attempt timeouts and the
request deadline run on trio's MockClock, so the times asserted are exact.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import floodgate
import pytest
import trio

from .conftest import Harness, online_harness

DEAL = "/v1/deal-brain/answers"
ASSESS = "/v1/nexus-assess/assessments"
QUESTION = "How much did Aldercrest Robotics pay to acquire Norfield Analytics?"
RUBRIC = [{"id": "growth", "description": "revenue growth"}, {"id": "risk", "description": "regulatory risk"}]


def approx(x: float):
    return pytest.approx(x, abs=1e-9)


# -- degradation -------------------------------------------------------------------------------------


async def test_reranker_down_degrades_to_the_fused_score(autojump_clock, memory_chunks) -> None:
    async with online_harness(chunks=memory_chunks, behaviour={"rerank": {"outage": True}}) as h:
        response = await h.post(DEAL, {"question": QUESTION})
        body = await response.get_json()
        assert (await h.stats())["rerank"][
            "requests"
        ] == 1  # 503 with Retry-After 30s: over the cap, no retry
    assert response.status_code == 200
    assert body["degraded"] == [
        {"step": "rerank", "dependency": "rerank", "reason": "dependency_error", "fallback": "fused_score"}
    ]
    assert body["answer"] is not None  # the LLM still answers, over the fused order
    scores = [p["score"] for p in body["passages"]]
    assert scores == sorted(scores, reverse=True)
    assert scores[0] == round(1 / 61, 6)  # reciprocal rank fusion: rank 1 of its list


async def test_a_degraded_answer_is_counted_for_its_route_and_a_full_one_is_not(
    autojump_clock, memory_chunks
) -> None:
    """The degraded share per endpoint (`floodgate top`, the dashboard) counts answers, not steps."""
    async with online_harness(chunks=memory_chunks) as h:

        def degraded() -> float:
            value = h.registry.get_sample_value("online_degraded_responses_total", {"route": DEAL})
            return value or 0.0

        assert (await h.post(DEAL, {"question": QUESTION})).status_code == 200
        assert degraded() == 0
        await h.behave({"rerank": {"outage": True}})
        assert (await h.post(DEAL, {"question": QUESTION})).status_code == 200
        assert degraded() == 1


@asynccontextmanager
async def llm_slot_taken(h: Harness) -> AsyncIterator[None]:
    """The simulated LLM admits one request per key, and a request that never ends holds it:
    every call of the service gets 429 with ``Retry-After: 1`` until the block ends."""
    await h.behave({"chat": {"latency": {"fixed_ms": 10_000_000}, "rate_limit": {"max_concurrent": 1}}})
    async with trio.open_nursery() as nursery:
        body = {"model": "m", "messages": [{"role": "user", "content": "hog"}]}
        nursery.start_soon(partial(h.simulator.test_client().post, "/v1/chat/completions", json=body))
        await trio.sleep(0.001)
        await h.behave({"chat": {"latency": {"fixed_ms": 0}}})
        yield
        nursery.cancel_scope.cancel()


async def test_llm_429_retry_after_is_honoured(autojump_clock) -> None:
    async with online_harness(
        behaviour={"chat": {"latency": {"fixed_ms": 100}, "rate_limit": {"max_concurrent": 1}}}
    ) as h:
        start = trio.current_time()
        response = await h.post(ASSESS, {"subject": "s", "rubric": RUBRIC})
        elapsed = trio.current_time() - start
        stats = (await h.stats())["chat"]
    # Both criteria go out at once; the provider admits one and answers the other 429 +
    # Retry-After: 1. That one waits 1 s (plus up to 10 % jitter, never less), is admitted, and
    # answers 100 ms later.
    assert response.status_code == 200
    assert 1.1 <= elapsed <= 1.2
    assert stats["statuses"] == {"200": 2, "429": 1}


async def test_llm_429_persisting_degrades_deal_brain_after_honoured_retries(
    autojump_clock, memory_chunks
) -> None:
    async with online_harness(chunks=memory_chunks) as h:
        attempts = h.budget.dependency("llm").retry.max_attempts
        async with llm_slot_taken(h):
            start = trio.current_time()
            response = await h.post(DEAL, {"question": QUESTION})
            elapsed = trio.current_time() - start
            refused = (await h.stats())["chat"]["statuses"]["429"]
    assert response.status_code == 200
    body = await response.get_json()
    assert body["answer"] is None
    assert body["citations"] == []
    assert body["passages"]
    assert body["degraded"] == [
        {"step": "answer", "dependency": "llm", "reason": "dependency_error", "fallback": "passages_only"}
    ]
    assert refused == attempts
    # one Retry-After second between attempts, plus up to 10 % jitter
    assert attempts - 1 <= elapsed <= (attempts - 1) * 1.1


async def test_llm_429_persisting_fails_nexus_assess_cleanly(autojump_clock) -> None:
    async with online_harness() as h:
        attempts = h.budget.dependency("llm").retry.max_attempts
        async with llm_slot_taken(h):
            start = trio.current_time()
            response = await h.post(ASSESS, {"subject": "s", "rubric": RUBRIC})
            elapsed = trio.current_time() - start
    assert response.status_code == 502
    body = await response.get_json()
    assert set(body) == {"error"}  # no partial score
    assert body["error"]["code"] == "dependency_error"
    assert body["error"]["details"]["dependency"] == "llm"
    assert body["error"]["details"]["status"] == 429
    # at least a Retry-After second between attempts; a parallel criterion's 429 pauses the whole
    # llm dependency (its cool-down), so a retry may wait for it too, within the retry's max_total
    assert attempts - 1 <= elapsed <= h.budget.dependency("llm").retry.max_total


# -- hangs and deadlines -----------------------------------------------------------------------------


async def test_llm_hang_ends_nexus_assess_at_the_attempt_timeout(autojump_clock) -> None:
    async with online_harness(behaviour={"chat": {"hang_rate": 1.0}}) as h:
        timeout = h.budget.dependency("llm").timeouts.attempt
        assert timeout < h.budget.endpoint("nexus_assess").deadline
        start = trio.current_time()
        response = await h.post(ASSESS, {"subject": "s", "rubric": RUBRIC})
        elapsed = trio.current_time() - start
        stats = (await h.stats())["chat"]
    assert response.status_code == 504
    error = (await response.get_json())["error"]
    assert error["code"] == "deadline_exceeded"
    assert error["details"]["dependency"] == "llm"
    assert elapsed == approx(timeout)  # not retried: retry_on_timeout is off for the LLM
    assert stats["current_concurrent"] == 0  # the hung calls were cancelled, not left behind
    assert stats["statuses"] == {"499": len(RUBRIC)}


async def test_llm_hang_ends_the_request_at_the_deadline_the_gateway_gives(autojump_clock) -> None:
    async with online_harness(behaviour={"chat": {"hang_rate": 1.0}}) as h:
        start = trio.current_time()
        response = await h.post(
            ASSESS, {"subject": "s", "rubric": RUBRIC}, headers={"x-envoy-expected-rq-timeout-ms": "2500"}
        )
        elapsed = trio.current_time() - start
    assert response.status_code == 504
    error = (await response.get_json())["error"]
    assert elapsed == approx(2.5)
    assert error["code"] == "deadline_exceeded"
    assert error["details"]["dependency"] == "llm"
    assert "waiting for score" in error["message"]
    assert 'score;dur=2500.0;desc="cancelled"' in response.headers["Server-Timing"]


async def test_a_longer_deadline_header_than_the_endpoint_allows_is_ignored(
    autojump_clock, memory_chunks
) -> None:
    async with online_harness(behaviour={"chat": {"hang_rate": 1.0}}, chunks=memory_chunks) as h:
        deadline = h.budget.endpoint("deal_brain").deadline
        start = trio.current_time()
        response = await h.post(
            DEAL, {"question": QUESTION, "web": False}, headers={"x-envoy-expected-rq-timeout-ms": "60000"}
        )
        elapsed = trio.current_time() - start
    # The LLM step is degradable: it is cut before the deadline so the request still answers.
    reserve = min(0.5, 0.1 * deadline)
    assert response.status_code == 200
    assert elapsed == approx(deadline - reserve)
    body = await response.get_json()
    assert body["degraded"] == [
        {"step": "answer", "dependency": "llm", "reason": "deadline_exceeded", "fallback": "passages_only"}
    ]


# -- circuit breakers --------------------------------------------------------------------------------


async def test_rerank_breaker_opens_after_the_configured_failures_and_half_opens_later(
    autojump_clock, memory_chunks
) -> None:
    async with online_harness(chunks=memory_chunks, behaviour={"rerank": {"error_rate": 1.0}}) as h:
        policy = h.budget.dependency("rerank").breaker
        breaker = h.wired.dependencies["rerank"].breaker
        reasons = []
        while not reasons or reasons[-1] != "circuit_open":
            body = await (await h.post(DEAL, {"question": QUESTION})).get_json()
            reasons.append(body["degraded"][0]["reason"])
            assert len(reasons) < 50
        # Every attempt that reached the reranker failed; the breaker opened at min_calls of them.
        assert (await h.stats())["rerank"]["requests"] == policy.min_calls
        assert breaker.state is floodgate.BreakerState.OPEN
        assert set(reasons[:-1]) == {"dependency_error"}

        # While open, nothing reaches the reranker.
        await trio.sleep(policy.open_duration / 2)
        body = await (await h.post(DEAL, {"question": QUESTION})).get_json()
        assert body["degraded"][0]["reason"] == "circuit_open"
        assert (await h.stats())["rerank"]["requests"] == policy.min_calls

        # At open_duration after it opened the next calls are probes; when they succeed, it closes.
        # (Sleep to that instant, not "half, then half": (t + 2.5) + 2.5 can round below t + 5.0.)
        await h.behave({"rerank": {"error_rate": 0.0}})
        opened_at = breaker.statistics(trio.current_time()).opened_at
        await trio.sleep_until(opened_at + policy.open_duration)
        body = await (await h.post(DEAL, {"question": QUESTION})).get_json()
        assert body["degraded"] == []
        assert breaker.state is (
            floodgate.BreakerState.CLOSED
            if policy.half_open_probes == 1
            else floodgate.BreakerState.HALF_OPEN
        )
        for _ in range(policy.half_open_probes - 1):
            body = await (await h.post(DEAL, {"question": QUESTION})).get_json()
            assert body["degraded"] == []
        assert breaker.state is floodgate.BreakerState.CLOSED


async def test_open_breaker_on_a_required_dependency_is_a_fast_503_with_retry_after(
    autojump_clock, memory_chunks
) -> None:
    async with online_harness(chunks=memory_chunks, behaviour={"search": {"outage": True}}) as h:
        policy = h.budget.dependency("search").breaker
        for i in range(policy.min_calls):
            response = await h.post(DEAL, {"question": f"{QUESTION} {i}"})
            assert response.status_code == 502
            error = (await response.get_json())["error"]
            assert error["details"]["dependency"] == "search"
        await trio.sleep(1.0)
        start = trio.current_time()
        response = await h.post(DEAL, {"question": QUESTION})
        elapsed = trio.current_time() - start
        assert (await h.stats())["search"]["requests"] == policy.min_calls
    assert response.status_code == 503
    error = (await response.get_json())["error"]
    assert error["code"] == "circuit_open"
    assert error["details"]["dependency"] == "search"
    assert response.headers["Retry-After"] == str(int(policy.open_duration - 1.0))
    assert elapsed == 0.0


# -- shadowHunter's partial results ------------------------------------------------------------------

HUNT = "/v1/shadow-hunter/hunts"


async def test_shadow_hunter_returns_partial_results_with_counts(autojump_clock) -> None:
    async with online_harness() as h:
        warm = await h.post(
            HUNT, {"subject": "s", "queries": ["Aldercrest Robotics", "Norfield"], "extract_top": 0}
        )
        assert warm.status_code == 200
        # The search provider goes down: the two cached queries still answer, the new ones fail.
        await h.behave({"search": {"outage": True}})
        queries = ["Aldercrest Robotics", "Meridian Cloud", "Norfield", "Vantage Payments"]
        response = await h.post(HUNT, {"subject": "s", "queries": queries, "extract_top": 2})
        body = await response.get_json()
    assert response.status_code == 200
    assert body["complete"] is False
    assert body["counts"] == {
        "queries": 4,
        "queries_succeeded": 2,
        "extractions": 2,
        "extractions_succeeded": 2,
    }
    assert [q["status"] for q in body["queries"]] == ["ok", "failed", "ok", "failed"]
    failed = body["queries"][1]
    assert failed["results"] == 0
    assert failed["error"]["code"] == "dependency_error"
    assert failed["error"]["dependency"] == "search"
    assert body["results"]


async def test_shadow_hunter_fails_only_when_no_search_succeeded(autojump_clock) -> None:
    async with online_harness(behaviour={"search": {"outage": True}}) as h:
        response = await h.post(HUNT, {"subject": "s", "queries": ["Aldercrest Robotics", "Norfield"]})
    assert response.status_code == 502
    error = (await response.get_json())["error"]
    assert error["code"] == "dependency_error"
    assert error["details"]["dependency"] == "search"


async def test_shadow_hunter_failed_extractions_are_counted_not_fatal(autojump_clock) -> None:
    async with online_harness(behaviour={"chat": {"error_rate": 1.0, "error_status": 500}}) as h:
        response = await h.post(HUNT, {"subject": "Aldercrest Robotics", "extract_top": 3})
        body = await response.get_json()
    # The expansion fell back to the subject as the only query; the three extractions failed.
    assert response.status_code == 200
    assert [q["query"] for q in body["queries"]] == ["Aldercrest Robotics"]
    assert body["counts"] == {
        "queries": 1,
        "queries_succeeded": 1,
        "extractions": 3,
        "extractions_succeeded": 0,
    }
    assert body["findings"] == []
    assert body["complete"] is False
    assert body["degraded"] == [
        {"step": "expand", "dependency": "llm", "reason": "dependency_error", "fallback": "caller_queries"},
        {"step": "extract", "dependency": "llm", "reason": "dependency_error", "fallback": "fewer_findings"},
    ]

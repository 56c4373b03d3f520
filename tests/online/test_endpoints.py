"""Happy paths of the three endpoints, through the real app and the real simulator, on virtual time.

Simulator latencies are fixed, so step durations and total times are exact virtual values.
"""

from __future__ import annotations

import pytest
import trio

from .conftest import FIXED_LATENCIES, TENANT, online_harness

DEAL = "/v1/deal-brain/answers"
HUNT = "/v1/shadow-hunter/hunts"
ASSESS = "/v1/nexus-assess/assessments"
QUESTION = "How much did Aldercrest Robotics pay to acquire Norfield Analytics?"


def timings(header: str) -> dict[str, float]:
    out = {}
    for part in header.split(", "):
        name, _, rest = part.partition(";dur=")
        out[name] = float(rest.split(";")[0])
    return out


# -- dealBrain ---------------------------------------------------------------------------------------


async def test_deal_brain_answers_from_documents_and_web_with_citations(
    autojump_clock, memory_chunks
) -> None:
    async with online_harness(behaviour=FIXED_LATENCIES, chunks=memory_chunks) as h:
        start = trio.current_time()
        response = await h.post(DEAL, {"question": QUESTION, "top_k": 4})
        elapsed = trio.current_time() - start
        assert response.status_code == 200
        body = await response.get_json()
    # embed (20) then vector search, in parallel with search (150); then rerank (50), then the LLM (400)
    assert elapsed == pytest.approx(0.6, abs=1e-9)
    assert timings(response.headers["Server-Timing"]) == {
        "embed": 20.0,
        "vector_search": 0.0,
        "search": 150.0,
        "rerank": 50.0,
        "answer": 400.0,
        "total": 600.0,
    }
    assert body["degraded"] == []
    assert len(body["passages"]) == 4
    assert [p["id"] for p in body["passages"]] == [1, 2, 3, 4]
    assert body["passages"][0]["source"] == "document"
    assert body["passages"][0]["doc_id"] == "memo-1"
    assert {p["source"] for p in body["passages"]} == {"document", "web"}
    assert "420 million" in body["answer"]
    assert "[1]" in body["answer"]
    assert body["citations"][0] == {"passage": 1, "source": "document", "doc_id": "memo-1", "url": None}
    cited = {c["passage"] for c in body["citations"]}
    assert cited <= {p["id"] for p in body["passages"]}


async def test_deal_brain_without_web_searches_only_the_tenants_documents(
    autojump_clock, memory_chunks
) -> None:
    async with online_harness(chunks=memory_chunks) as h:
        response = await h.post(DEAL, {"question": QUESTION, "web": False})
        assert response.status_code == 200
        body = await response.get_json()
        assert (await h.stats())["search"]["requests"] == 0
    assert {p["source"] for p in body["passages"]} == {"document"}
    assert {p["doc_id"] for p in body["passages"]} == {"memo-1"}


async def test_deal_brain_web_search_is_cached_and_coalesced(autojump_clock, memory_chunks) -> None:
    async with online_harness(behaviour=FIXED_LATENCIES, chunks=memory_chunks) as h:
        async with trio.open_nursery() as nursery:
            for _ in range(5):
                nursery.start_soon(h.post, DEAL, {"question": QUESTION})
        await h.post(
            DEAL, {"question": "  how much did ALDERCREST Robotics pay to acquire norfield analytics? "}
        )
        stats = await h.stats()
    # Five identical questions in flight share one search and one embedding; the sixth (same
    # words, other case and spacing) is a cache hit for the search.
    assert stats["search"]["requests"] == 1
    assert stats["embeddings"]["requests"] == 2


# -- shadowHunter ------------------------------------------------------------------------------------


async def test_shadow_hunter_with_caller_queries_dedupes_results_and_extracts(autojump_clock) -> None:
    queries = ["Aldercrest Robotics", "Aldercrest Robotics latest news", "aldercrest  robotics"]
    async with online_harness(behaviour=FIXED_LATENCIES) as h:
        response = await h.post(
            HUNT, {"subject": "Aldercrest Robotics", "queries": queries, "extract_top": 3}
        )
        assert response.status_code == 200
        body = await response.get_json()
        stats = await h.stats()
    # The third query repeats the first (case-insensitively): it is searched once.
    assert [q["query"] for q in body["queries"]] == queries[:2]
    assert body["counts"] == {
        "queries": 2,
        "queries_succeeded": 2,
        "extractions": 3,
        "extractions_succeeded": 3,
    }
    assert body["complete"] is True
    urls = [r["url"] for r in body["results"]]
    assert len(urls) == len(set(urls))
    assert any(len(r["queries"]) == 2 for r in body["results"])  # found by both searches, listed once
    assert body["findings"]
    assert {f["url"] for f in body["findings"]} <= set(urls[:3])
    assert stats["search"]["requests"] == 2
    assert stats["chat"]["requests"] == 3  # no expansion call, three extractions
    # search (150, in parallel) then extraction (400, in parallel)
    assert timings(response.headers["Server-Timing"])["total"] == 550.0


async def test_shadow_hunter_expands_the_subject_with_the_llm(autojump_clock) -> None:
    async with online_harness() as h:
        response = await h.post(HUNT, {"subject": "Aldercrest Robotics", "query_count": 3, "extract_top": 2})
        body = await response.get_json()
        stats = await h.stats()
    assert response.status_code == 200
    assert len(body["queries"]) == 3
    assert body["queries"][0]["query"] == "Aldercrest Robotics"
    assert stats["chat"]["requests"] == 1 + 2
    assert stats["search"]["requests"] == 3


async def test_shadow_hunter_fan_out_is_bounded_per_request(autojump_clock) -> None:
    async with online_harness(behaviour={"search": {"latency": {"fixed_ms": 100}}}) as h:
        fan_out = h.budget.endpoint("shadow_hunter").fan_out
        n = h.budget.endpoint("shadow_hunter").max_items
        start = trio.current_time()
        response = await h.post(
            HUNT, {"subject": "s", "queries": [f"Aldercrest query {i}" for i in range(n)], "extract_top": 0}
        )
        elapsed = trio.current_time() - start
        stats = await h.stats()
    assert response.status_code == 200
    assert stats["search"]["peak_concurrent"] == fan_out
    assert elapsed == pytest.approx(-(-n // fan_out) * 0.1, abs=1e-9)


# -- nexusAssess -------------------------------------------------------------------------------------

RUBRIC = [
    {"id": "growth", "description": "revenue growth over the last year", "weight": 2},
    {"id": "moat", "description": "defensible technology"},
    {"id": "risk", "description": "low regulatory risk", "weight": 0.5},
]


async def test_nexus_assess_scores_every_criterion_and_weights_the_total(autojump_clock) -> None:
    async with online_harness(behaviour=FIXED_LATENCIES) as h:
        start = trio.current_time()
        response = await h.post(ASSESS, {"subject": "Aldercrest Robotics", "rubric": RUBRIC})
        elapsed = trio.current_time() - start
        body = await response.get_json()
    assert response.status_code == 200
    assert elapsed == pytest.approx(0.4, abs=1e-9)  # three calls in parallel
    assert [s["id"] for s in body["scores"]] == ["growth", "moat", "risk"]
    assert all(0 <= s["score"] <= 10 and s["rationale"] for s in body["scores"])
    weights = {c["id"]: c.get("weight", 1.0) for c in RUBRIC}
    expected = sum(s["score"] * weights[s["id"]] for s in body["scores"]) / sum(weights.values())
    assert body["total"] == round(expected, 4)
    assert body["cached"] is False


async def test_nexus_assess_serves_identical_requests_from_the_cache_per_tenant(autojump_clock) -> None:
    request = {"subject": "Aldercrest Robotics", "rubric": RUBRIC}
    async with online_harness() as h:
        first = await (await h.post(ASSESS, request)).get_json()
        second = await (await h.post(ASSESS, request)).get_json()
        assert (await h.stats())["chat"]["requests"] == 3
        other_tenant = await (await h.post(ASSESS, request, tenant="globex")).get_json()
        assert (await h.stats())["chat"]["requests"] == 6
        ttl = h.budget.endpoint("nexus_assess").cache_ttl
        await trio.sleep(ttl)
        expired = await (await h.post(ASSESS, request)).get_json()
        assert (await h.stats())["chat"]["requests"] == 9
    assert second["cached"] is True
    assert {**second, "cached": False} == first
    assert other_tenant["cached"] is False
    assert expired["cached"] is False


async def test_nexus_assess_identical_requests_in_flight_share_one_computation(autojump_clock) -> None:
    request = {"subject": "Aldercrest Robotics", "rubric": RUBRIC}
    results = []
    async with online_harness(behaviour=FIXED_LATENCIES) as h:

        async def one() -> None:
            response = await h.post(ASSESS, request)
            results.append(await response.get_json())

        async with trio.open_nursery() as nursery:
            for _ in range(4):
                nursery.start_soon(one)
        assert (await h.stats())["chat"]["requests"] == 3
    assert sorted(r["cached"] for r in results) == [False, True, True, True]
    assert len({r["total"] for r in results}) == 1


async def test_responses_carry_the_request_id_given(autojump_clock) -> None:
    async with online_harness() as h:
        response = await h.post(
            ASSESS, {"subject": "s", "rubric": RUBRIC[:1]}, headers={"x-request-id": "abc123"}
        )
    assert response.headers["x-request-id"] == "abc123"
    assert TENANT

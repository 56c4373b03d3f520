"""Budgets are never exceeded, and overload is a fast, explicit 429.

Many concurrent requests of all three endpoints; the simulator's own statistics (peak concurrent
requests per API) must stay within the per-process limits the budget file derives.
"""

from __future__ import annotations

import chassis
import pytest
import trio

from services.online._admission import endpoint_capacity

from .conftest import FIXED_LATENCIES, SIM_API, close_door, make_budget, online_harness

DEAL = "/v1/deal-brain/answers"
HUNT = "/v1/shadow-hunter/hunts"
ASSESS = "/v1/nexus-assess/assessments"


async def test_concurrent_load_never_exceeds_any_per_process_limit(autojump_clock, memory_chunks) -> None:
    statuses: list[int] = []
    async with online_harness(behaviour=FIXED_LATENCIES, chunks=memory_chunks) as h:

        async def send(path: str, body: dict) -> None:
            response = await h.post(path, body)
            statuses.append(response.status_code)
            if response.status_code == 429:
                assert int(response.headers["Retry-After"]) >= 1

        async with trio.open_nursery() as nursery:
            for i in range(40):
                nursery.start_soon(send, DEAL, {"question": f"Aldercrest Robotics acquisition number {i}"})
            for i in range(15):
                queries = [f"Aldercrest hunt {i} angle {j}" for j in range(8)]
                nursery.start_soon(send, HUNT, {"subject": f"s{i}", "queries": queries})
            for i in range(15):
                rubric = [{"id": f"c{j}", "description": f"criterion {i}.{j}"} for j in range(10)]
                nursery.start_soon(send, ASSESS, {"subject": f"s{i}", "rubric": rubric})
        stats = await h.stats()
        limits = {dep: h.limit(dep) for dep in SIM_API}
    for dep, api in SIM_API.items():
        assert stats[api]["peak_concurrent"] <= limits[dep], (dep, stats[api]["peak_concurrent"], limits[dep])
    # The load was enough to fill the LLM and search budgets: the bound was tested, not idle.
    assert stats["chat"]["peak_concurrent"] == limits["llm"]
    assert stats["search"]["peak_concurrent"] == limits["search"]
    assert set(statuses) <= {200, 429}
    assert statuses.count(200) > 0


async def test_overload_of_a_required_budget_is_a_fast_429_naming_the_dependency(autojump_clock) -> None:
    # A slow LLM and more calls than its gate holds plus its queue: the excess is refused at once,
    # and what waited is refused at max_wait — never left waiting for the slow provider.
    async with online_harness(behaviour={"chat": {"latency": {"fixed_ms": 3000}}}) as h:
        llm = h.budget.dependency("llm")
        criteria = h.budget.endpoint("nexus_assess").max_items
        rejected: list[tuple[float, dict, str]] = []

        async def send(i: int) -> None:
            rubric = [{"id": f"c{j}", "description": f"criterion {i}.{j}"} for j in range(criteria)]
            start = trio.current_time()
            response = await h.post(ASSESS, {"subject": f"subject {i}", "rubric": rubric})
            if response.status_code == 429:
                body = await response.get_json()
                rejected.append((trio.current_time() - start, body["error"], response.headers["Retry-After"]))
            else:
                assert response.status_code == 200

        async with trio.open_nursery() as nursery:
            for i in range(12):
                nursery.start_soon(send, i)
        assert (await h.stats())["chat"]["peak_concurrent"] <= h.limit("llm")
    assert rejected
    for waited, error, retry_after in rejected:
        assert waited <= llm.max_wait
        assert error["code"] == "overloaded"
        assert error["details"]["dependency"] == "llm"
        assert int(retry_after) >= 1


async def test_one_request_cannot_take_a_whole_dependency_budget(autojump_clock) -> None:
    async with online_harness(behaviour={"chat": {"latency": {"fixed_ms": 100}}}) as h:
        fan_out = h.budget.endpoint("nexus_assess").fan_out
        criteria = h.budget.endpoint("nexus_assess").max_items
        rubric = [{"id": f"c{j}", "description": f"criterion {j}"} for j in range(criteria)]
        response = await h.post(ASSESS, {"subject": "s", "rubric": rubric})
        assert response.status_code == 200
        assert (await h.stats())["chat"]["peak_concurrent"] == fan_out


async def test_the_endpoint_door_admits_what_the_budget_carries_and_refuses_the_rest_in_milliseconds(
    autojump_clock, memory_chunks
) -> None:
    async with online_harness(behaviour={"chat": {"latency": {"fixed_ms": 400}}}, chunks=memory_chunks) as h:
        capacity = endpoint_capacity(h.budget, "deal_brain")
        llm = h.budget.dependency("llm")
        assert capacity.bottleneck == "llm"
        assert capacity.rps == h.limit("llm") / llm.typical_latency
        outcomes: list[tuple[int, float, dict]] = []

        async def send(i: int) -> None:
            start = trio.current_time()
            response = await h.post(DEAL, {"question": f"Aldercrest Robotics deal {i}"})
            outcomes.append((response.status_code, trio.current_time() - start, await response.get_json()))

        async with trio.open_nursery() as nursery:
            for i in range(capacity.in_flight + 10):
                nursery.start_soon(send, i)
    refused = [(t, body) for status, t, body in outcomes if status == 429]
    served = [body for status, _, body in outcomes if status == 200]
    assert len(served) == capacity.in_flight
    assert len(refused) == 10
    for waited, body in refused:
        assert waited == 0.0  # refused at the door: no downstream work, no waiting
        assert body["error"]["details"]["dependency"] == "llm"
        assert "requests in flight" in body["error"]["message"]


async def test_the_door_refuses_before_any_other_work(autojump_clock) -> None:
    async with online_harness() as h:
        close_door(h.app.extensions["online"].doors["nexus_assess"])
        response = await h.post(ASSESS, b'{"not": json')  # would be a 400 if it were read
        assert response.status_code == 429
        assert response.headers["Retry-After"] == "1"
        assert (await h.stats())["chat"]["requests"] == 0
        assert h.app.extensions["online"].doors["nexus_assess"].statistics().refused_total == 1


@pytest.mark.parametrize(
    ("endpoint", "policy", "problem"),
    [
        (
            "shadow_hunter",
            {"required": []},
            "endpoints.shadow_hunter: calls search but names it neither required nor degradable",
        ),
        (
            "nexus_assess",
            {"required": ["llm", "rerank"]},
            "endpoints.nexus_assess: names rerank, which it does not call",
        ),
    ],
)
async def test_a_failure_policy_that_does_not_match_the_endpoint_stops_start_up(
    autojump_clock, endpoint, policy, problem
) -> None:
    # `required` and `degradable` together name exactly what the endpoint calls, so what the budget
    # file (and `floodgate plan`) says about failures is what the endpoint does.
    with pytest.raises(chassis.StartupError) as caught:
        async with online_harness(budget=make_budget({"endpoints": {endpoint: policy}})):
            pass
    assert problem in str(caught.value)

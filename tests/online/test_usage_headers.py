"""What a request used goes back to the gateway in its response headers, for the token and cost budgets.

The headers must equal what the token counters saw for that very request (the gateway counts them
against the tenant's budget), even when requests of several tenants run at once, and be absent when
a request used nothing.
"""

from __future__ import annotations

import math

import pytest
import trio
from providers import USAGE_COST_HEADER, USAGE_TOKENS_HEADER

from .conftest import TENANT, online_harness

DEAL = "/v1/deal-brain/answers"
ASSESS = "/v1/nexus-assess/assessments"
QUESTION = "How much did Aldercrest Robotics pay to acquire Norfield Analytics?"


def spent(h, tenant: str, endpoint: str) -> tuple[int, float]:
    """LLM tokens and the estimated cost of every priced call, from the metrics, for ``tenant``."""

    def sample(name: str, dependency: str, **kind: str) -> float:
        labels = {"dependency": dependency, "endpoint": endpoint, "tenant": tenant, **kind}
        return h.registry.get_sample_value(name, labels) or 0.0

    tokens = sample("floodgate_tokens_total", "llm", kind="prompt") + sample(
        "floodgate_tokens_total", "llm", kind="completion"
    )
    cost = sum(sample("floodgate_cost_usd_total", dep) for dep in ("llm", "embed"))
    return int(tokens), cost


async def test_a_response_carries_the_tokens_and_cost_its_request_used(autojump_clock, memory_chunks) -> None:
    async with online_harness(chunks=memory_chunks) as h:
        response = await h.post(DEAL, {"question": QUESTION, "top_k": 4})
        assert response.status_code == 200
        tokens, cost = spent(h, TENANT, "deal_brain")
        assert tokens > 0 and cost > 0
        assert int(response.headers[USAGE_TOKENS_HEADER]) == tokens  # LLM tokens only: the budgets' unit
        assert int(response.headers[USAGE_COST_HEADER]) == math.ceil(round(cost * 1_000_000, 6))


async def test_concurrent_requests_of_two_tenants_each_report_their_own(
    autojump_clock, memory_chunks
) -> None:
    async with online_harness(chunks=memory_chunks) as h:
        responses = {}

        async def ask(tenant: str, criteria: int) -> None:
            rubric = [
                {"id": f"c{i}", "description": f"Point {i} of the deal is met"} for i in range(criteria)
            ]
            request = {"subject": "Norfield Analytics", "rubric": rubric}
            responses[tenant] = await h.post(ASSESS, request, tenant=tenant)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ask, "acme", 1)
            nursery.start_soon(ask, "globex", 3)
        for tenant in ("acme", "globex"):
            assert responses[tenant].status_code == 200, await responses[tenant].get_data(as_text=True)
            tokens, _ = spent(h, tenant, "nexus_assess")
            assert int(responses[tenant].headers[USAGE_TOKENS_HEADER]) == tokens
        assert spent(h, "globex", "nexus_assess")[0] > spent(h, "acme", "nexus_assess")[0]


@pytest.mark.parametrize("body", [{"question": ""}, b"not json"])
async def test_a_request_that_used_nothing_reports_nothing(autojump_clock, memory_chunks, body) -> None:
    async with online_harness(chunks=memory_chunks) as h:
        response = await h.post(DEAL, body)
        assert response.status_code in (400, 422)
        assert USAGE_TOKENS_HEADER not in response.headers
        assert USAGE_COST_HEADER not in response.headers

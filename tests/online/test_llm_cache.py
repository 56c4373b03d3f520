"""Identical LLM work is not paid twice: dealBrain's answer to the same question over the same
passages, and shadowHunter's expansion and extractions, are the tenant's cached answers for the
endpoint's ``cache_ttl``; the tokens they did not spend are counted. Through the real app and the
real simulator, on the virtual clock."""

from __future__ import annotations

import trio

from .conftest import TENANT, online_harness

DEAL = "/v1/deal-brain/answers"
HUNT = "/v1/shadow-hunter/hunts"
QUESTION = "How much did Aldercrest Robotics pay to acquire Norfield Analytics?"


def tokens(h, name: str, endpoint: str, tenant: str = TENANT) -> float:
    """Prompt plus completion tokens of ``name`` (``floodgate_tokens_total`` or ``_saved_total``)."""
    labels = {"dependency": "llm", "endpoint": endpoint, "tenant": tenant}
    return sum(
        h.registry.get_sample_value(name, {**labels, "kind": kind}) or 0.0
        for kind in ("prompt", "completion")
    )


async def test_deal_brain_pays_once_for_the_same_question_per_tenant_until_the_ttl(
    autojump_clock, memory_chunks
) -> None:
    async with online_harness(chunks=memory_chunks) as h:
        ttl = h.budget.endpoint("deal_brain").cache_ttl
        assert ttl
        first = await (await h.post(DEAL, {"question": QUESTION})).get_json()
        spent = tokens(h, "floodgate_tokens_total", "deal_brain")
        assert spent > 0
        second = await (await h.post(DEAL, {"question": QUESTION})).get_json()
        assert await h.requests_to("llm") == 1
        assert second == first
        assert tokens(h, "floodgate_tokens_saved_total", "deal_brain") == spent
        assert tokens(h, "floodgate_tokens_total", "deal_brain") == spent  # nothing more spent

        # Another question is another answer.
        await h.post(DEAL, {"question": "Who advised on the Norfield deal?"})
        assert await h.requests_to("llm") == 2

        # Two tenants without documents see the same web passages, hence the same prompt: each
        # pays for its own answer, and neither is served the other's.
        await h.post(DEAL, {"question": QUESTION}, tenant="globex")
        await h.post(DEAL, {"question": QUESTION}, tenant="initech")
        assert await h.requests_to("llm") == 4
        await h.post(DEAL, {"question": QUESTION}, tenant="globex")
        assert await h.requests_to("llm") == 4
        assert tokens(h, "floodgate_tokens_saved_total", "deal_brain", "initech") == 0
        assert tokens(h, "floodgate_tokens_saved_total", "deal_brain", "globex") > 0

        # The answer was kept when the second request got it, 0.6 s in; its TTL runs from there.
        # (The web search cache expires too, so the passages are fetched again: still the same.)
        await trio.sleep(ttl)
        third = await (await h.post(DEAL, {"question": QUESTION})).get_json()
        assert await h.requests_to("llm") == 5
        assert third == first


async def test_deal_brain_answer_depends_on_the_passages(autojump_clock, memory_chunks) -> None:
    # The tenant's documents change between two identical questions: other passages, a new answer.
    async with online_harness(chunks=memory_chunks) as h:
        await h.post(DEAL, {"question": QUESTION})
        memory_chunks.add(TENANT, "memo-2", [QUESTION.replace("How much did", "What did")])
        second = await (await h.post(DEAL, {"question": QUESTION})).get_json()
        assert "memo-2" in {p["doc_id"] for p in second["passages"]}
        assert await h.requests_to("llm") == 2


async def test_shadow_hunter_expansion_and_extractions_are_paid_once_per_tenant(autojump_clock) -> None:
    hunt = {"subject": "Aldercrest Robotics", "query_count": 3, "extract_top": 2}
    async with online_harness() as h:
        first = await (await h.post(HUNT, hunt)).get_json()
        assert await h.requests_to("llm") == 1 + 2  # the expansion and two extractions
        spent = tokens(h, "floodgate_tokens_total", "shadow_hunter")
        second = await (await h.post(HUNT, hunt)).get_json()
        assert await h.requests_to("llm") == 3
        assert second == first
        assert tokens(h, "floodgate_tokens_saved_total", "shadow_hunter") == spent

        await h.post(HUNT, hunt, tenant="globex")
        assert await h.requests_to("llm") == 6

        # The same hunt extracting one more result: the expansion and the two known extractions are
        # reused, only the third is paid for.
        await h.post(HUNT, {**hunt, "extract_top": 3})
        assert await h.requests_to("llm") == 7

        await trio.sleep(h.budget.endpoint("shadow_hunter").cache_ttl)
        await h.post(HUNT, hunt)
        assert await h.requests_to("llm") == 10

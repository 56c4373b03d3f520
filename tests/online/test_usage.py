"""Cost signals: after a dealBrain answer the token counters moved (the simulator reports ``usage`` in
OpenAI's wire format) and the estimated cost follows the budget file's prices."""

from __future__ import annotations

import pytest

from .conftest import TENANT, online_harness

DEAL = "/v1/deal-brain/answers"
QUESTION = "How much did Aldercrest Robotics pay to acquire Norfield Analytics?"


async def test_a_deal_brain_answer_counts_its_tokens_and_their_cost(autojump_clock, memory_chunks) -> None:
    async with online_harness(chunks=memory_chunks) as h:

        def sample(name: str, dependency: str, **kind: str) -> float:
            labels = {"dependency": dependency, "endpoint": "deal_brain", "tenant": TENANT, **kind}
            return h.registry.get_sample_value(name, labels) or 0.0

        response = await h.post(DEAL, {"question": QUESTION, "top_k": 4})
        assert response.status_code == 200
        assert (await response.get_json())["degraded"] == []
        prompt = sample("floodgate_tokens_total", "llm", kind="prompt")
        completion = sample("floodgate_tokens_total", "llm", kind="completion")
        embedded = sample("floodgate_tokens_total", "embed", kind="prompt")
        assert prompt > 0 and completion > 0 and embedded > 0
        assert sample("floodgate_tokens_total", "embed", kind="completion") == 0  # embeddings have none
        chat_price = h.budget.price(h.wired.downstreams.llm.model)
        embed_price = h.budget.price(h.wired.downstreams.embedder.model)
        assert chat_price is not None and embed_price is not None  # config/budget.toml prices the simulator's
        assert sample("floodgate_cost_usd_total", "llm") == pytest.approx(
            chat_price.cost(prompt_tokens=int(prompt), completion_tokens=int(completion))
        )
        assert sample("floodgate_cost_usd_total", "embed") == pytest.approx(
            embed_price.cost(prompt_tokens=int(embedded), completion_tokens=0)
        )

        # The same question again: the answer and the query's embedding come from the caches; the
        # answer's tokens count as saved, not spent.
        response = await h.post(DEAL, {"question": QUESTION, "top_k": 4})
        assert response.status_code == 200
        assert sample("floodgate_tokens_total", "llm", kind="prompt") == prompt
        assert sample("floodgate_tokens_saved_total", "llm", kind="prompt") == prompt
        assert sample("floodgate_tokens_saved_total", "llm", kind="completion") == completion
        assert sample("floodgate_tokens_total", "embed", kind="prompt") == embedded

"""Token usage: read from the answers' ``usage`` (OpenAI's wire format), reported by the clients with
the caller's endpoint, counted and priced by `UsageMetrics`."""

from __future__ import annotations

from typing import Any

import floodgate
import httpx
import pytest
from prometheus_client import CollectorRegistry
from providers import UNKNOWN_ENDPOINT, ChatModel, Embedder, TokenUsage, UsageMetrics, read_usage

PRICES = {"chat": floodgate.ModelPrice(prompt_per_1k_tokens_usd=0.5, completion_per_1k_tokens_usd=2.0)}


@pytest.mark.parametrize(
    ("answer", "completion", "expected"),
    [
        ({"usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}}, True, (12, 5)),
        ({"usage": {"prompt_tokens": 7, "total_tokens": 7}}, False, (7, 0)),  # embeddings
        ({"usage": {"prompt_tokens": 7}}, True, None),  # a chat answer without completion tokens
        ({"usage": {"prompt_tokens": True, "completion_tokens": 1}}, True, None),
        ({"usage": {"prompt_tokens": -1, "completion_tokens": 1}}, True, None),
        ({"usage": None}, True, None),
        ({}, False, None),
        ([], False, None),
    ],
)
def test_read_usage(answer: Any, completion: bool, expected: tuple[int, int] | None) -> None:
    assert read_usage(answer, completion=completion) == expected


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def test_usage_metrics_count_tokens_and_price_only_known_models() -> None:
    registry = CollectorRegistry()
    metrics = UsageMetrics(registry=registry, prices=PRICES)
    metrics.record(TokenUsage("llm", "chat", "deal_brain", "acme", 1000, 250))
    metrics.record(TokenUsage("llm", "chat", "deal_brain", "acme", 1000, 250))
    metrics.record(TokenUsage("embed", "unpriced", "deal_brain", "acme", 40, 0))
    labels = {"dependency": "llm", "endpoint": "deal_brain", "tenant": "acme"}
    assert sample(registry, "floodgate_tokens_total", **labels, kind="prompt") == 2000
    assert sample(registry, "floodgate_tokens_total", **labels, kind="completion") == 500
    assert sample(registry, "floodgate_cost_usd_total", **labels) == pytest.approx(2 * (0.5 + 0.5))
    embed = {**labels, "dependency": "embed"}
    assert sample(registry, "floodgate_tokens_total", **embed, kind="prompt") == 40
    assert sample(registry, "floodgate_tokens_total", **embed, kind="completion") is None
    assert sample(registry, "floodgate_cost_usd_total", **embed) is None  # no price: no cost series


class Canned:
    """A dependency that answers every request with ``answer`` (JSON)."""

    name = "llm"

    def __init__(self, answer: dict[str, Any]) -> None:
        self.answer = answer

    async def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        return httpx.Response(200, json=self.answer)


class Recorder:
    def __init__(self) -> None:
        self.seen: list[TokenUsage] = []

    def record(self, usage: TokenUsage) -> None:
        self.seen.append(usage)


async def test_clients_report_usage_with_the_callers_endpoint() -> None:
    sink = Recorder()
    answer = {
        "choices": [{"message": {"content": "fine"}}],
        "usage": {"prompt_tokens": 9, "completion_tokens": 1, "total_tokens": 10},
    }
    chat = ChatModel(Canned(answer), model="chat", usage=sink)
    assert await chat.text(instructions="i", prompt="p", tenant="acme", endpoint="deal_brain") == "fine"
    await chat.text(instructions="i", prompt="p", tenant="acme")
    vectors = {
        "data": [{"index": 0, "embedding": [0.0, 1.0]}],
        "usage": {"prompt_tokens": 3, "total_tokens": 3},
    }
    embedder = Embedder(Canned(vectors), model="emb", dimensions=2, usage=sink)
    await embedder.embed(["x"], tenant="t2", endpoint="omnirag_ingest")
    assert sink.seen == [
        TokenUsage("llm", "chat", "deal_brain", "acme", 9, 1),
        TokenUsage("llm", "chat", UNKNOWN_ENDPOINT, "acme", 9, 1),
        TokenUsage("llm", "emb", "omnirag_ingest", "t2", 3, 0),
    ]


async def test_an_answer_without_usage_is_still_an_answer() -> None:
    sink = Recorder()
    chat = ChatModel(Canned({"choices": [{"message": {"content": "ok"}}]}), model="chat", usage=sink)
    assert await chat.text(instructions="i", prompt="p", tenant="acme", endpoint="deal_brain") == "ok"
    assert sink.seen == []

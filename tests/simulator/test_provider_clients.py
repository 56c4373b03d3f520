"""The services' provider clients (``providers``) against the simulator, through floodgate's guarded
dependencies as the services wire them: each client speaks its simulated API's wire format; and an
answer that does not parse is a `providers.MalformedAnswer`, never a crash."""

from __future__ import annotations

import math
from array import array
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import floodgate
import httpx
import pytest
from providers import (
    EMBEDDING_DIMENSIONS,
    ChatModel,
    Embedder,
    Fetcher,
    MalformedAnswer,
    Reranker,
    WebHit,
    WebSearch,
)

from services.simulator import CORPUS_BASE_URL
from services.simulator import embed as simulated_embedding

from .conftest import make_app

REPO_BUDGET = Path(__file__).resolve().parents[2] / "config" / "budget.toml"
SIMULATOR_URL = "http://simulator.test"
TENANT = "acme"


@pytest.fixture
async def deps() -> AsyncIterator[dict[str, floodgate.Dependency]]:
    """The online service's dependencies and the ingest worker's fetch, all on one simulator."""
    budget = floodgate.load_budget(REPO_BUDGET)
    transport = httpx.ASGITransport(app=make_app())
    online = floodgate.Dependencies.from_budget(
        budget,
        service="online",
        http_base_urls=dict.fromkeys(("llm", "embed", "rerank", "search"), SIMULATOR_URL),
        transport=transport,
    )
    worker = floodgate.Dependencies.from_budget(
        budget, service="ingest_worker", http_base_urls={"fetch": SIMULATOR_URL}, transport=transport
    )
    async with online, worker:
        yield {
            **{name: online[name] for name in ("llm", "embed", "rerank", "search")},
            "fetch": worker["fetch"],
        }


async def test_chat_runs_a_json_task_and_answers_text(deps) -> None:
    chat = ChatModel(deps["llm"], model="sim-chat-1")
    queries = await chat.json_task(
        "expand_queries",
        instructions="Return {queries: [...]}",
        prompt="Subject: Aldercrest Robotics",
        tenant=TENANT,
    )
    assert isinstance(queries, dict) and queries
    answer = await chat.text(
        instructions="Answer from the sources.",
        prompt="[1] Aldercrest Robotics builds warehouse robots.\n\nQuestion: What does Aldercrest build?",
        tenant=TENANT,
    )
    assert "robots" in answer


async def test_embeddings_are_the_simulators_vectors_in_float32(deps) -> None:
    embedder = Embedder(deps["embed"], model="sim-embed-384")
    texts = ["grid-scale batteries", "Aldercrest Robotics acquires Norfield Analytics"]
    vectors = await embedder.embed(texts, tenant=TENANT)
    assert [len(v) for v in vectors] == [EMBEDDING_DIMENSIONS] * 2
    for text, vector in zip(texts, vectors, strict=True):
        assert isinstance(vector, array) and vector.typecode == "f"
        assert vector == array("f", simulated_embedding(text, EMBEDDING_DIMENSIONS))
        assert math.isclose(math.sqrt(sum(x * x for x in vector)), 1.0, rel_tol=1e-5)
    assert await embedder.embed_query(texts[1], tenant=TENANT) == vectors[1]


async def test_query_embeddings_are_memoised(deps) -> None:
    class CountingMemo:
        def __init__(self) -> None:
            self.values: dict[Any, Any] = {}
            self.loads = 0

        async def get_or_load(self, key, fn, *args):
            if key not in self.values:
                self.loads += 1
                self.values[key] = await fn(*args)
            return self.values[key]

    memo = CountingMemo()
    embedder = Embedder(deps["embed"], model="sim-embed-384", memo=memo)
    first = await embedder.embed_query("grid-scale batteries", tenant="a")
    assert await embedder.embed_query("grid-scale batteries", tenant="b") is first
    assert memo.loads == 1


async def test_rerank_orders_documents_best_first(deps) -> None:
    reranker = Reranker(deps["rerank"], model="sim-rerank-1")
    documents = [
        "Lisbon weather is mild in spring.",
        "Aldercrest Robotics builds warehouse robots.",
        "Aldercrest Robotics agreed to acquire Norfield Analytics; the acquisition closes in May.",
    ]
    ranked = await reranker.rerank("Aldercrest Robotics acquisition", documents, top_n=2, tenant=TENANT)
    assert [index for index, _ in ranked] == [2, 1]
    assert ranked[0][1] > ranked[1][1] > 0


async def test_search_then_fetch_a_hit(deps) -> None:
    hits = await WebSearch(deps["search"]).search("Vector  DATABASES", count=3, tenant=TENANT)
    assert 0 < len(hits) <= 3
    assert all(isinstance(hit, WebHit) and hit.url.startswith(CORPUS_BASE_URL) for hit in hits)
    assert [hit.rank for hit in hits] == list(range(1, len(hits) + 1))
    fetcher = Fetcher(deps["fetch"])
    document = await fetcher.fetch(hits[0].url, tenant=TENANT)
    assert (document.url, document.title) == (hits[0].url, hits[0].title)
    assert len(document.text) > 300
    with pytest.raises(floodgate.DependencyError) as missing:
        await fetcher.fetch("https://example.com/nope", tenant=TENANT)
    assert missing.value.status == 404 and not isinstance(missing.value, MalformedAnswer)


# -- answers that do not parse -----------------------------------------------------------------------


class CannedProvider:
    """A `providers.DependencyClient` that answers every request 200 with ``body``."""

    name = "canned"

    def __init__(self, body: Any) -> None:
        self.body = body

    async def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        if isinstance(self.body, bytes):
            return httpx.Response(200, content=self.body)
        return httpx.Response(200, json=self.body)


async def chat_task(provider: CannedProvider) -> object:
    return await ChatModel(provider, model="m").json_task("t", instructions="i", prompt="p", tenant=TENANT)


async def embed_two(provider: CannedProvider) -> object:
    return await Embedder(provider, model="m", dimensions=2).embed(["a", "b"], tenant=TENANT)


async def rerank_two(provider: CannedProvider) -> object:
    return await Reranker(provider, model="m").rerank("q", ["a", "b"], top_n=2, tenant=TENANT)


async def search(provider: CannedProvider) -> object:
    return await WebSearch(provider).search("q", count=2, tenant=TENANT)


async def fetch(provider: CannedProvider) -> object:
    return await Fetcher(provider).fetch("https://x.test/", tenant=TENANT)


def one_vector(embedding: object) -> dict[str, object]:
    return {"data": [{"index": 0, "embedding": embedding}, {"index": 1, "embedding": [0.0, 1.0]}]}


@pytest.mark.parametrize(
    ("call", "body", "what"),
    [
        (chat_task, b"<html>", "body is not JSON"),
        (chat_task, {"choices": []}, "no choices[0].message.content"),
        (chat_task, {"choices": [{"message": {"content": 7}}]}, "message content is not text"),
        (chat_task, {"choices": [{"message": {"content": "no json"}}]}, "t did not return JSON"),
        (chat_task, {"choices": [{"message": {"content": "[1]"}}]}, "t did not return a JSON object"),
        (embed_two, {"data": [{"index": 0, "embedding": [1.0, 0.0]}]}, "1 vectors for 2 inputs"),
        (embed_two, one_vector([1.0, 0.0, 0.0]), "each must have 2 dimensions"),
        (embed_two, one_vector(["x", "y"]), "data is not [{index, embedding}]"),
        (embed_two, one_vector("not base64!"), "data is not [{index, embedding}]"),
        (embed_two, one_vector({"a": 1}), "data is not [{index, embedding}]"),
        (rerank_two, {"results": [{"index": 5, "relevance_score": 1.0}]}, "result index 5 out of range"),
        (rerank_two, {"results": [{"index": 0}]}, "results are not [{index, relevance_score}]"),
        (search, {"results": [{"title": "no url"}]}, "results are not [{url, title, snippet}]"),
        (fetch, {"url": "https://x.test/", "title": "no text"}, "body is not {url, title, text}"),
        (fetch, [1, 2], "body is not {url, title, text}"),
    ],
)
async def test_a_malformed_answer_is_the_providers_failure(call, body, what) -> None:
    with pytest.raises(MalformedAnswer) as caught:
        await call(CannedProvider(body))
    error = caught.value
    assert isinstance(error, floodgate.DependencyError) and error.http_status == 502
    assert (error.dependency, error.status) == ("canned", None)
    assert error.reason.startswith("unexpected answer: ") and what in error.reason


async def test_base64_and_list_embeddings_decode_alike() -> None:
    import base64
    import struct

    encoded = base64.b64encode(struct.pack("<2f", 0.25, -1.5)).decode()
    vectors = await Embedder(CannedProvider(one_vector(encoded)), model="m", dimensions=2).embed(
        ["a", "b"], tenant=TENANT
    )
    assert vectors == [array("f", [0.25, -1.5]), array("f", [0.0, 1.0])]

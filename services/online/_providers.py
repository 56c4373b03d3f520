"""Typed clients for the providers the online service calls, over floodgate's guarded calls.

Each class speaks one wire format (OpenAI chat completions and embeddings, Cohere/Jina rerank,
Brave-style web search) and turns a provider's answer into plain values. Every call goes through
``floodgate.Dependency.request`` (gate -> rate limit -> breaker -> deadline -> attempt -> retry), so
nothing here waits unbounded or retries on its own. An answer that does not parse is the provider's
failure: `DependencyError` (502), never a crash of the handler.
"""

from __future__ import annotations

import json
from array import array
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Any, NamedTuple, Protocol

import floodgate
import httpx

__all__ = [
    "ChatModel",
    "DependencyClient",
    "Embedder",
    "Memo",
    "Reranker",
    "WebHit",
    "WebSearch",
    "task_prompt",
]

EMBEDDING_DIMENSIONS = 384  # the width of chunks.embedding (migrations/0002_chunks.sql)


class DependencyClient(Protocol):
    """What the providers need of a dependency: floodgate's guarded HTTP request."""

    name: str

    async def request(
        self, method: str, url: str, *, tenant: str = ..., idempotent: bool | None = ..., **kwargs: Any
    ) -> httpx.Response: ...


class Memo(Protocol):
    """A cache that also coalesces identical calls in flight (``floodgate.TTLCache`` is one)."""

    async def get_or_load(self, key: Hashable, fn: Callable[..., Awaitable[Any]], *args: Any) -> Any: ...


def _bad_answer(dependency: str, what: str) -> floodgate.DependencyError:
    return floodgate.DependencyError(f"unexpected answer: {what}", dependency=dependency)


def _json(response: httpx.Response, dependency: str) -> Any:
    try:
        return response.json()
    except (ValueError, UnicodeDecodeError):
        raise _bad_answer(dependency, "body is not JSON") from None


def task_prompt(task: str, instructions: str) -> str:
    """The system message of a structured task. The ``floodgate-task:`` line tells the simulator
    which JSON shape to answer with; a real model reads the instructions that follow it."""
    return f"floodgate-task: {task}\n{instructions}"


class ChatModel:
    """An OpenAI-compatible chat completions endpoint (``POST /v1/chat/completions``)."""

    def __init__(self, client: DependencyClient, *, model: str) -> None:
        self._client = client
        self.model = model

    async def _complete(
        self, messages: list[dict[str, str]], *, tenant: str, json_mode: bool, max_tokens: int | None
    ) -> str:
        body: dict[str, Any] = {"model": self.model, "messages": messages, "temperature": 0}
        if json_mode:
            body["response_format"] = {"type": "json_object"}
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        # temperature 0 and no side effects: repeating a completion is safe.
        response = await self._client.request(
            "POST", "/v1/chat/completions", json=body, tenant=tenant, idempotent=True
        )
        data = _json(response, self._client.name)
        try:
            content = data["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise _bad_answer(self._client.name, "no choices[0].message.content") from None
        if not isinstance(content, str):
            raise _bad_answer(self._client.name, "message content is not text")
        return content

    async def json_task(self, task: str, *, instructions: str, prompt: str, tenant: str) -> dict[str, Any]:
        """Run a structured task and return its JSON object."""
        messages = [
            {"role": "system", "content": task_prompt(task, instructions)},
            {"role": "user", "content": prompt},
        ]
        content = await self._complete(messages, tenant=tenant, json_mode=True, max_tokens=None)
        try:
            value = json.loads(content)
        except ValueError:
            raise _bad_answer(self._client.name, f"{task} did not return JSON") from None
        if not isinstance(value, dict):
            raise _bad_answer(self._client.name, f"{task} did not return a JSON object")
        return value

    async def text(self, *, instructions: str, prompt: str, tenant: str, max_tokens: int = 512) -> str:
        messages = [
            {"role": "system", "content": task_prompt("answer", instructions)},
            {"role": "user", "content": prompt},
        ]
        return await self._complete(messages, tenant=tenant, json_mode=False, max_tokens=max_tokens)


class Embedder:
    """An OpenAI-compatible embeddings endpoint (``POST /v1/embeddings``), 384 dimensions.

    Query embeddings are cached and coalesced by ``memo`` (the same text has the same vector for
    every tenant: nothing of a tenant's data is in the key or the value).
    """

    def __init__(self, client: DependencyClient, *, model: str, memo: Memo | None = None) -> None:
        self._client = client
        self.model = model
        self._memo = memo

    async def embed_query(self, text: str, *, tenant: str) -> Sequence[float]:
        if self._memo is None:
            return await self._embed(text, tenant)
        return await self._memo.get_or_load(("embed", self.model, text), self._embed, text, tenant)

    async def _embed(self, text: str, tenant: str) -> Sequence[float]:
        body = {
            "model": self.model,
            "input": [text],
            "encoding_format": "float",
            "dimensions": EMBEDDING_DIMENSIONS,
        }
        response = await self._client.request(
            "POST", "/v1/embeddings", json=body, tenant=tenant, idempotent=True
        )
        data = _json(response, self._client.name)
        try:
            vector = data["data"][0]["embedding"]
        except (KeyError, IndexError, TypeError):
            raise _bad_answer(self._client.name, "no data[0].embedding") from None
        if not isinstance(vector, list) or len(vector) != EMBEDDING_DIMENSIONS:
            raise _bad_answer(self._client.name, f"embedding is not {EMBEDDING_DIMENSIONS} numbers")
        # float32, as pgvector stores it; one array object instead of 384 float objects, so a cache
        # of thousands of query embeddings does not make every garbage collection walk them. The
        # conversion is also the type check: anything but a number raises TypeError.
        try:
            return array("f", vector)
        except (TypeError, OverflowError):
            raise _bad_answer(self._client.name, f"embedding is not {EMBEDDING_DIMENSIONS} numbers") from None


class Reranker:
    """A Cohere/Jina-style rerank endpoint (``POST /v1/rerank``)."""

    def __init__(self, client: DependencyClient, *, model: str) -> None:
        self._client = client
        self.model = model

    async def rerank(
        self, query: str, documents: Sequence[str], *, top_n: int, tenant: str
    ) -> list[tuple[int, float]]:
        """``(index into documents, relevance)`` best first, at most ``top_n``."""
        body = {
            "model": self.model,
            "query": query,
            "documents": list(documents),
            "top_n": top_n,
            "return_documents": False,
        }
        response = await self._client.request("POST", "/v1/rerank", json=body, tenant=tenant, idempotent=True)
        data = _json(response, self._client.name)
        ranked: list[tuple[int, float]] = []
        try:
            for item in data["results"]:
                index, score = item["index"], item["relevance_score"]
                if not isinstance(index, int) or not 0 <= index < len(documents):
                    raise _bad_answer(self._client.name, f"result index {index!r} out of range")
                ranked.append((index, float(score)))
        except (KeyError, TypeError, ValueError):
            raise _bad_answer(self._client.name, "results are not [{index, relevance_score}]") from None
        return ranked[:top_n]


class WebHit(NamedTuple):
    """One search result: one small object of plain values (thousands sit in the search cache).
    Note: CPython's collector untracks only *exact* tuples of atoms; a NamedTuple stays tracked
    (after a benchmark run they were a small part of a full collection's work)."""

    url: str
    title: str
    snippet: str
    score: float
    rank: int


class WebSearch:
    """A web search API (``GET /v1/search?q=&count=``, Brave-style parameters, flat results).

    Results are public and the same for every tenant, so they are cached and coalesced by
    ``memo`` across tenants: a burst of identical searches costs the provider one call.
    """

    def __init__(self, client: DependencyClient, *, memo: Memo | None = None) -> None:
        self._client = client
        self._memo = memo

    async def search(self, query: str, *, count: int, tenant: str) -> tuple[WebHit, ...]:
        normalised = " ".join(query.lower().split())
        if self._memo is None:
            return await self._search(normalised, count, tenant)
        return await self._memo.get_or_load(
            ("search", normalised, count), self._search, normalised, count, tenant
        )

    async def _search(self, query: str, count: int, tenant: str) -> tuple[WebHit, ...]:
        response = await self._client.request(
            "GET", "/v1/search", params={"q": query, "count": count}, tenant=tenant
        )
        data = _json(response, self._client.name)
        hits: list[WebHit] = []
        try:
            for position, item in enumerate(data["results"], start=1):
                hits.append(
                    WebHit(
                        url=str(item["url"]),
                        title=str(item.get("title") or ""),
                        snippet=str(item.get("snippet") or item.get("description") or ""),
                        score=float(item.get("score") or 0.0),
                        rank=int(item.get("rank") or position),
                    )
                )
        except (KeyError, TypeError, ValueError):
            raise _bad_answer(self._client.name, "results are not [{url, title, snippet}]") from None
        return tuple(hits[:count])

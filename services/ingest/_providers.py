"""The two downstreams a job uses — an embedding API and a fetch API — behind small protocols.

The worker depends on :class:`Embedder` and :class:`Fetcher`; the real implementations call through
the toolkit's guarded dependencies (``deps["embed"]``, ``deps["fetch"]``: gate, rate limit, breaker,
timeouts, retries within a retry budget), so the provider is a base URL + key + model away: the
simulator, an OpenAI-compatible server, or a hosted API.
"""

from __future__ import annotations

import array
import base64
import binascii
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import floodgate

from ._errors import BadDocument, ProviderResponseError

__all__ = [
    "EMBEDDING_DIMENSIONS",
    "Embedder",
    "FetchedDocument",
    "Fetcher",
    "ToolkitEmbedder",
    "ToolkitFetcher",
]

EMBEDDING_DIMENSIONS = 384  # the chunks table's vector(384)


@dataclass(frozen=True)
class FetchedDocument:
    url: str
    title: str
    text: str


class Embedder(Protocol):
    async def embed(self, texts: Sequence[str], *, tenant: str) -> list[list[float]]: ...


class Fetcher(Protocol):
    async def fetch(self, url: str, *, tenant: str) -> FetchedDocument: ...


class ToolkitEmbedder:
    """``POST /v1/embeddings`` (OpenAI format) through the toolkit's ``embed`` dependency."""

    def __init__(self, dependency: floodgate.Dependency, *, model: str) -> None:
        self._dependency = dependency
        self._model = model

    async def embed(self, texts: Sequence[str], *, tenant: str) -> list[list[float]]:
        # base64 (little-endian float32, as OpenAI's own SDK asks for): a quarter of the bytes of JSON
        # floats, and decoded in C instead of by the JSON parser.
        response = await self._dependency.request(
            "POST",
            "/v1/embeddings",
            json={"model": self._model, "input": list(texts), "encoding_format": "base64"},
            tenant=tenant,
            idempotent=True,  # embedding the same text twice is harmless
        )
        try:
            data = sorted(response.json()["data"], key=lambda item: item["index"])
            vectors = [_decode(item["embedding"]) for item in data]
        except (ValueError, KeyError, TypeError, binascii.Error) as exc:
            raise ProviderResponseError(f"embeddings response is malformed: {exc!r}") from exc
        if len(vectors) != len(texts) or any(len(v) != EMBEDDING_DIMENSIONS for v in vectors):
            raise ProviderResponseError(
                f"embeddings response has {len(vectors)} vectors for {len(texts)} inputs "
                f"(each must have {EMBEDDING_DIMENSIONS} dimensions)"
            )
        return vectors


def _decode(embedding: object) -> list[float]:
    """A base64 float32 vector, or a plain JSON list (providers that ignore ``encoding_format``)."""
    if isinstance(embedding, list):
        return [float(x) for x in embedding]
    if not isinstance(embedding, str):
        raise TypeError(f"embedding is a {type(embedding).__name__}")
    values = array.array("f", base64.b64decode(embedding, validate=True))
    if sys.byteorder != "little":
        values.byteswap()
    return values.tolist()


class ToolkitFetcher:
    """``GET /v1/fetch?url=`` -> ``{url, title, text}`` through the toolkit's ``fetch`` dependency."""

    def __init__(self, dependency: floodgate.Dependency) -> None:
        self._dependency = dependency

    async def fetch(self, url: str, *, tenant: str) -> FetchedDocument:
        try:
            response = await self._dependency.request("GET", "/v1/fetch", params={"url": url}, tenant=tenant)
        except floodgate.DependencyError as exc:
            if exc.status in (400, 404, 410, 422):
                raise BadDocument(f"fetching {url} failed with HTTP {exc.status}") from exc
            raise
        try:
            body: Any = response.json()
            return FetchedDocument(
                url=str(body.get("url", url)), title=str(body.get("title", "")), text=str(body["text"])
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ProviderResponseError(f"fetch response is malformed: {exc!r}") from exc

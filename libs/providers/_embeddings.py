"""An OpenAI-compatible embeddings endpoint (``POST /v1/embeddings``): the one embeddings client.

The ingest worker embeds chunks in batches (`Embedder.embed`); the online service embeds one
question at a time, cached (`Embedder.embed_query`). Both ask for base64 (little-endian float32,
as OpenAI's own SDK does): a quarter of the bytes of JSON floats, decoded in C instead of by the
JSON parser, and already the float32 that pgvector stores.
"""

from __future__ import annotations

import binascii
from array import array
from collections.abc import Sequence

from ._client import DependencyClient, MalformedAnswer, Memo, json_body
from ._usage import UNKNOWN_ENDPOINT, TokenUsage, UsageSink, read_usage
from ._vectors import EMBEDDING_DIMENSIONS, decode_embedding

__all__ = ["Embedder"]


class Embedder:
    """Embeddings of ``dimensions`` numbers each, from ``model``.

    Query embeddings are cached and coalesced by ``memo`` (the same text has the same vector for
    every tenant: nothing of a tenant's data is in the key or the value). A vector is an
    ``array("f")``: one object instead of hundreds of floats, so a cache of thousands of them does
    not make every garbage collection walk them.

    Each answer's ``usage.prompt_tokens`` goes to ``usage`` (a `UsageSink`), labelled with the
    ``endpoint`` the caller names in the call; a cached query embedding made no call and uses none.
    """

    def __init__(
        self,
        client: DependencyClient,
        *,
        model: str,
        dimensions: int = EMBEDDING_DIMENSIONS,
        memo: Memo | None = None,
        usage: UsageSink | None = None,
    ) -> None:
        self._client = client
        self.model = model
        self.dimensions = dimensions
        self._memo = memo
        self._usage = usage

    async def embed(
        self, texts: Sequence[str], *, tenant: str, endpoint: str | None = None
    ) -> list[array[float]]:
        """One vector per text, in order; a `MalformedAnswer` unless there are exactly that many,
        each of ``dimensions`` numbers."""
        body = {
            "model": self.model,
            "input": list(texts),
            "encoding_format": "base64",
            "dimensions": self.dimensions,
        }
        # Embedding the same text twice is harmless: the call may be retried.
        response = await self._client.request(
            "POST", "/v1/embeddings", json=body, tenant=tenant, idempotent=True
        )
        data = json_body(response, self._client.name)
        if self._usage is not None and (tokens := read_usage(data, completion=False)) is not None:
            self._usage.record(
                TokenUsage(self._client.name, self.model, endpoint or UNKNOWN_ENDPOINT, tenant, *tokens)
            )
        try:
            items = sorted(data["data"], key=lambda item: item["index"])
            vectors = [decode_embedding(item["embedding"]) for item in items]
        except (KeyError, TypeError, ValueError, OverflowError, binascii.Error):
            raise MalformedAnswer("data is not [{index, embedding}]", dependency=self._client.name) from None
        if len(vectors) != len(texts) or any(len(v) != self.dimensions for v in vectors):
            raise MalformedAnswer(
                f"{len(vectors)} vectors for {len(texts)} inputs "
                f"(each must have {self.dimensions} dimensions)",
                dependency=self._client.name,
            )
        return vectors

    async def embed_query(self, text: str, *, tenant: str, endpoint: str | None = None) -> array[float]:
        """The vector of one text, through ``memo`` when there is one (callers that share one
        call in flight share its usage too: it is counted once, for the caller that made it)."""
        if self._memo is None:
            return await self._embed_one(text, tenant, endpoint)
        return await self._memo.get_or_load(
            ("embed", self.model, text), self._embed_one, text, tenant, endpoint
        )

    async def _embed_one(self, text: str, tenant: str, endpoint: str | None) -> array[float]:
        [vector] = await self.embed([text], tenant=tenant, endpoint=endpoint)
        return vector

"""A Cohere/Jina-style rerank endpoint (``POST /v1/rerank``)."""

from __future__ import annotations

from collections.abc import Sequence

from ._client import DependencyClient, MalformedAnswer, json_body

__all__ = ["Reranker"]


class Reranker:
    """Orders documents by relevance to a query, with ``model``."""

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
        data = json_body(response, self._client.name)
        ranked: list[tuple[int, float]] = []
        try:
            for item in data["results"]:
                index, score = item["index"], item["relevance_score"]
                if not isinstance(index, int) or not 0 <= index < len(documents):
                    raise MalformedAnswer(
                        f"result index {index!r} out of range", dependency=self._client.name
                    )
                ranked.append((index, float(score)))
        except (KeyError, TypeError, ValueError):
            raise MalformedAnswer(
                "results are not [{index, relevance_score}]", dependency=self._client.name
            ) from None
        return ranked[:top_n]

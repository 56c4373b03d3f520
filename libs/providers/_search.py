"""A web search API (``GET /v1/search?q=&count=``, Brave-style parameters, flat results)."""

from __future__ import annotations

from typing import NamedTuple

from ._client import DependencyClient, MalformedAnswer, Memo, json_body

__all__ = ["WebHit", "WebSearch"]


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
    """Web search results for a query.

    Results are public and the same for every tenant, so they are cached and coalesced by
    ``memo`` across tenants: a burst of identical searches costs the provider one call.
    """

    def __init__(self, client: DependencyClient, *, memo: Memo | None = None) -> None:
        self._client = client
        self._memo = memo

    async def search(self, query: str, *, count: int, tenant: str) -> tuple[WebHit, ...]:
        """At most ``count`` results, best first."""
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
        data = json_body(response, self._client.name)
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
        except (KeyError, TypeError, ValueError, AttributeError):
            raise MalformedAnswer(
                "results are not [{url, title, snippet}]", dependency=self._client.name
            ) from None
        return tuple(hits[:count])

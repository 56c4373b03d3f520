"""A document fetch API (``GET /v1/fetch?url=`` -> ``{url, title, text}``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ._client import DependencyClient, MalformedAnswer, json_body

__all__ = ["FetchedDocument", "Fetcher"]


@dataclass(frozen=True)
class FetchedDocument:
    url: str
    title: str
    text: str


class Fetcher:
    """The text of the document at a URL. A failed fetch is the dependency's
    `floodgate.DependencyError` with the provider's ``status`` (404: there is no such document)."""

    def __init__(self, client: DependencyClient) -> None:
        self._client = client

    async def fetch(self, url: str, *, tenant: str) -> FetchedDocument:
        response = await self._client.request("GET", "/v1/fetch", params={"url": url}, tenant=tenant)
        body: Any = json_body(response, self._client.name)
        try:
            return FetchedDocument(
                url=str(body.get("url", url)), title=str(body.get("title", "")), text=str(body["text"])
            )
        except (KeyError, TypeError, AttributeError):
            raise MalformedAnswer("body is not {url, title, text}", dependency=self._client.name) from None

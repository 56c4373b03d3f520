"""What every provider client needs and shares: the guarded HTTP call, a memo, and the one error
for an answer that does not parse."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable
from typing import Any, Protocol

import floodgate
import httpx

__all__ = ["DependencyClient", "MalformedAnswer", "Memo", "json_body"]


class DependencyClient(Protocol):
    """What the clients need of a dependency: floodgate's guarded HTTP request
    (``floodgate.Dependency.request``: gate, rate limit, breaker, deadline, attempts, retries)."""

    name: str

    async def request(
        self, method: str, url: str, *, tenant: str = ..., idempotent: bool | None = ..., **kwargs: Any
    ) -> httpx.Response: ...


class Memo(Protocol):
    """A cache that also coalesces identical calls in flight (``floodgate.TTLCache`` is one)."""

    async def get_or_load(
        self, key: Hashable, fn: Callable[..., Awaitable[Any]], *args: Any, ttl: float | None = None
    ) -> Any:
        """The value kept for ``key``, or ``await fn(*args)`` kept for ``ttl`` (None: the cache's)."""
        ...


class MalformedAnswer(floodgate.DependencyError):
    """A provider answered 2xx with a body that does not have the expected shape (not JSON, a
    field missing, the wrong number of vectors or dimensions).

    It is the provider's failure, like any other `floodgate.DependencyError` (502, ``status``
    None): the online service answers 502 or falls back, the ingest worker tries the job again.
    """

    def __init__(self, what: str, *, dependency: str) -> None:
        super().__init__(f"unexpected answer: {what}", dependency=dependency)


def json_body(response: httpx.Response, dependency: str) -> Any:
    """The response's JSON, or `MalformedAnswer`."""
    try:
        return response.json()
    except (ValueError, UnicodeDecodeError):
        raise MalformedAnswer("body is not JSON", dependency=dependency) from None

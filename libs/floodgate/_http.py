"""The HTTP edge of a dependency: one httpx client per dependency, and reading its answers.

Each dependency gets its own `httpx.AsyncClient` (isolation: a slow LLM cannot exhaust the
connections the search calls need) with connection limits equal to the dependency's gate
capacity, keep-alive on, and the connect/read/write timeouts from the budget. The per-attempt
total timeout and the request deadline are cancel scopes around the call, not httpx settings.

The client keeps no cookies. One client serves every tenant, so a cookie a provider set on one
tenant's call would ride along on the next tenant's — and provider APIs authenticate with keys,
not sessions. It also takes work off the hot path: httpx parses every response into its cookie
jar through urllib's machinery, a visible share of the online service's CPU in a profile.

`ConnectionWait` times how long an attempt waited for a connection (the client's pool, then the
connect), from httpcore's ``trace`` request extension.
"""

from __future__ import annotations

import email.utils
import math
import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx

from ._budget import DependencyPolicy

__all__ = [
    "IDEMPOTENT_METHODS",
    "ConnectionWait",
    "make_http_client",
    "parse_retry_after",
    "retry_after_from_headers",
]


class _NoCookies(httpx.Cookies):
    """A cookie jar that never stores what a response sets (and so never sends any)."""

    def extract_cookies(self, response: httpx.Response) -> None:
        pass


class _CookielessClient(httpx.AsyncClient):
    """`httpx.AsyncClient` whose jar is `_NoCookies` (``client.cookies`` reads and sets it, as
    httpx's own code does after each response)."""

    @property  # type: ignore[override]
    def cookies(self) -> httpx.Cookies:
        return self._cookies

    @cookies.setter
    def cookies(self, cookies: Any) -> None:
        self._cookies = _NoCookies(cookies)

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self._cookies = _NoCookies()


class ConnectionWait:
    """An httpx ``trace`` extension (``extensions={"trace": ConnectionWait(...)}``) that reports,
    once, the seconds from ``started`` until the request's headers are about to be sent.

    httpcore calls the trace for each step of a request (``connection.connect_tcp.started``,
    ``http11.send_request_headers.started``...); the first ``*.send_request_headers.started`` means
    a connection was had: taken from the pool's idle ones, or waited for and connected. What came
    before it is the wait the gate does not see: a pool with fewer connections than callers, or a
    slow connect. A transport that is not httpcore's (``httpx.MockTransport``) calls no trace, and
    nothing is reported, unless it calls the trace itself.
    """

    __slots__ = ("_clock", "_observe", "_started")

    def __init__(
        self, observe: Callable[[float], object], clock: Callable[[], float], started: float
    ) -> None:
        self._observe: Callable[[float], object] | None = observe
        self._clock = clock
        self._started = started

    async def __call__(self, event: str, info: Mapping[str, Any]) -> None:
        if self._observe is not None and event.endswith(".send_request_headers.started"):
            observe, self._observe = self._observe, None
            observe(self._clock() - self._started)
            # Nothing later interests us, and each traced step costs httpcore a coroutine call:
            # take the trace out of the extensions httpcore reads at each step (the request's own).
            request = info.get("request")
            if request is not None:
                request.extensions.pop("trace", None)

    def __repr__(self) -> str:
        return f"<ConnectionWait {'pending' if self._observe is not None else 'reported'}>"


IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date), or None."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when is None:
            return None
        wall_now = time.time() if now is None else now
        seconds = when.timestamp() - wall_now
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def retry_after_from_headers(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds a response asks the client to wait, or None when it names no time.

    ``retry-after-ms`` (milliseconds, as OpenAI's and Azure's APIs and the simulator send it) comes
    first: ``Retry-After`` has whole seconds only, so a provider that is ready again in 50 ms must
    round up to 1 s there. Then ``Retry-After`` (`parse_retry_after`). A malformed value counts as
    absent. ``headers`` is looked up by lower-case name (httpx's headers are case-insensitive).
    """
    millis = headers.get("retry-after-ms")
    if millis is not None:
        try:
            value = float(millis.strip())
        except ValueError:
            value = math.nan
        if math.isfinite(value):
            return max(0.0, value / 1000.0)
    return parse_retry_after(headers.get("retry-after"), now=now)


def make_http_client(
    policy: DependencyPolicy,
    *,
    base_url: str,
    capacity: int,
    api_key: str | None = None,
    headers: Mapping[str, str] | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> httpx.AsyncClient:
    """An `httpx.AsyncClient` for one dependency, sized and timed from its policy."""
    timeouts = policy.timeouts
    all_headers = dict(headers or {})
    if api_key:
        all_headers.setdefault("authorization", f"Bearer {api_key}")
    return _CookielessClient(
        base_url=base_url,
        headers=all_headers,
        timeout=httpx.Timeout(
            connect=timeouts.connect,
            read=timeouts.read,
            write=timeouts.write,
            # The gate admits at most `capacity` calls, so the pool never has to wait long.
            pool=max(timeouts.connect, 1.0),
        ),
        limits=httpx.Limits(
            max_connections=capacity,
            max_keepalive_connections=capacity,
            keepalive_expiry=30.0,
        ),
        transport=transport,
        follow_redirects=False,
    )

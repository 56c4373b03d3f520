"""The one exception tree of floodgate, and its mapping to HTTP.

Every decision the toolkit makes against a caller ends in one of these exceptions, named
by what happened rather than where::

    FloodgateError                       base; never raised itself
    ├── Overloaded              429      our own budget said no: gate full, waited too long,
    │   │                                client-side rate limit would make us wait too long
    │   ├── CoolingDown         429      the provider answered 429 a moment ago and the whole
    │   │                                dependency pauses for as long as it asked
    │   └── TenantShareExceeded 429      the caller's tenant holds its share of a gate or door
    │                                    (``tenant_share``): other tenants still get slots
    ├── CircuitOpen             503      the breaker for the dependency is open (or half-open
    │                                    with all probes already out)
    ├── DeadlineExceeded        504      the request deadline expired, an attempt timed out,
    │                                    or too little time was left to start a call
    ├── DependencyError         502      the downstream failed: an HTTP error status
    │   │                                (``.status``) or a transport error (``.status is None``)
    │   └── PoolUnavailable     502      a connection pool could not open (at start-up: the
    │                                    database does not answer); services exit with code 2
    └── RetryBudgetExhausted    503      a retry was needed but the dependency's retry budget
                                         is spent (retries must not multiply an outage)

Each carries ``http_status``, ``code``, ``dependency``, ``retry_after`` (seconds or None) and
``reason``. The HTTP mapping lives here and nowhere else: a service edge renders
``{"error": error_body(exc)}`` with status ``exc.http_status`` and, when
``exc.retry_after`` is set, a ``Retry-After`` header of `retry_after_header` (the chassis does
this for every service).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

__all__ = [
    "CircuitOpen",
    "CoolingDown",
    "DeadlineExceeded",
    "DependencyError",
    "FloodgateError",
    "Overloaded",
    "PoolUnavailable",
    "RetryBudgetExhausted",
    "TenantShareExceeded",
    "error_body",
    "retry_after_header",
    "retry_after_seconds",
]


class FloodgateError(Exception):
    """Base of every error floodgate raises on purpose.

    Args:
        reason: a short human sentence saying why (it becomes the message).
        dependency: the dependency (or gate) the decision was about, if any.
        retry_after: seconds after which trying again is reasonable, if known.
    """

    http_status: ClassVar[int] = 500
    code: ClassVar[str] = "floodgate_error"

    def __init__(self, reason: str, *, dependency: str | None = None, retry_after: float | None = None):
        super().__init__(reason)
        self.reason = reason
        self.dependency = dependency
        self.retry_after = retry_after

    def __str__(self) -> str:
        prefix = f"{self.dependency}: " if self.dependency else ""
        return f"{prefix}{self.reason}"

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.reason!r}, dependency={self.dependency!r}, "
            f"retry_after={self.retry_after!r})"
        )

    def details(self) -> dict[str, Any]:
        """The machine-readable details rendered in the error body."""
        return {"dependency": self.dependency, "reason": self.reason, "retry_after": self.retry_after}


class Overloaded(FloodgateError):
    """Our own budget rejected the call: no slot free and the wait would be too long or too
    many are already waiting, or the client-side rate limit would delay it too long.

    It is fast and explicit on purpose: the caller should shed load or retry later.
    """

    http_status = 429
    code = "overloaded"


class TenantShareExceeded(Overloaded):
    """The caller's tenant already holds its share of a gate's or door's slots (``tenant_share``
    in the budget, times the tenant's weight), while the rest is kept for other tenants. The
    refusal is about this tenant only: ``share`` is its cap, ``limit`` the gate's or door's
    slots; the message says whose share it is, never another tenant's use."""

    code = "tenant_share_exceeded"

    def __init__(
        self,
        reason: str,
        *,
        dependency: str | None = None,
        retry_after: float | None = None,
        share: int,
        limit: int,
    ):
        super().__init__(reason, dependency=dependency, retry_after=retry_after)
        self.share = share
        self.limit = limit

    def details(self) -> dict[str, Any]:
        return {**super().details(), "share": self.share, "limit": self.limit}


class CoolingDown(Overloaded):
    """The provider answered a call of this process 429, and the whole dependency pauses for as
    long as it asked (`floodgate.Cooldown`): this call could not wait that long, so it was refused
    without bothering the provider. ``retry_after`` is the time the pause still lasts.

    Its ``code`` is ``overloaded``, like its parent's: to a client it is the same answer (come back
    after ``Retry-After``); code that schedules its own retries (the ingest worker) tells it apart
    by type, because the time comes from the provider.
    """


class CircuitOpen(FloodgateError):
    """The circuit breaker of the dependency is open: recent calls failed or were too slow,
    so calls are refused without touching the dependency until ``retry_after`` has passed."""

    http_status = 503
    code = "circuit_open"


class DeadlineExceeded(FloodgateError):
    """Time ran out: the request deadline expired, an attempt hit its timeout, or so little
    time was left that starting the call would have been wasted work."""

    http_status = 504
    code = "deadline_exceeded"


class DependencyError(FloodgateError):
    """The dependency itself failed, after any retries the policy allowed.

    ``status`` is the downstream HTTP status, or None for transport errors (connection
    refused, reset, protocol errors). ``retry_after`` repeats the downstream's Retry-After.
    """

    http_status = 502
    code = "dependency_error"

    def __init__(
        self,
        reason: str,
        *,
        dependency: str | None = None,
        retry_after: float | None = None,
        status: int | None = None,
        response: Any = None,
    ):
        super().__init__(reason, dependency=dependency, retry_after=retry_after)
        self.status = status
        #: the last downstream response (an ``httpx.Response``) when there was one
        self.response = response

    def details(self) -> dict[str, Any]:
        return {**super().details(), "status": self.status}


class PoolUnavailable(DependencyError):
    """A connection pool could not open: its first connections failed or timed out.

    Raised by `open_pg_pool` (``dependency`` is the pool's name, ``location`` the server it
    tried, without credentials). It happens at start-up, before the service answers anything, so
    services do not render it: `chassis.run_service` reports it as one line and exit code 2. It is
    a `DependencyError`, so code that handles any downstream failure handles it too.
    """

    def __init__(
        self,
        reason: str,
        *,
        dependency: str | None = None,
        retry_after: float | None = None,
        location: str | None = None,
    ):
        super().__init__(reason, dependency=dependency, retry_after=retry_after)
        self.location = location

    def details(self) -> dict[str, Any]:
        return {**super().details(), "location": self.location}


class RetryBudgetExhausted(FloodgateError):
    """A retry was warranted but the dependency's retry budget (a share of recent calls) is
    spent. Raised instead of retrying, so that retries cannot multiply a provider outage."""

    http_status = 503
    code = "retry_budget_exhausted"


def error_body(exc: FloodgateError) -> dict[str, Any]:
    """The JSON error object for ``exc``: ``{"code", "message", "details"}``."""
    return {"code": exc.code, "message": str(exc), "details": exc.details()}


def retry_after_seconds(seconds: float) -> int:
    """``seconds`` as a ``Retry-After`` value: whole seconds rounded up, so a refused client never
    comes back too early, and at least 1, since ``Retry-After: 0`` tells it to retry at once.
    Every ``Retry-After`` the services and the gateway's rate-limit service send is this."""
    return max(1, math.ceil(seconds))


def retry_after_header(exc: FloodgateError) -> str | None:
    """The ``Retry-After`` header value for ``exc`` (`retry_after_seconds`), or None."""
    if exc.retry_after is None:
        return None
    return str(retry_after_seconds(exc.retry_after))

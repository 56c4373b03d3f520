"""Request deadlines as cancel scopes, and their propagation over HTTP headers.

The edge of a service sets the request deadline once (``with deadline_after(s):``); every
call below it reads `time_left` and takes ``min(its own timeout, time left)``. Outgoing calls
carry the remaining time in ``x-floodgate-deadline-ms``; an incoming request's deadline is
read from that header or from Envoy's ``x-envoy-expected-rq-timeout-ms``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from types import TracebackType

import anyio

from ._errors import DeadlineExceeded

__all__ = [
    "DEADLINE_HEADER",
    "ENVOY_TIMEOUT_HEADER",
    "deadline_after",
    "deadline_from_headers",
    "deadline_headers",
    "time_left",
]

DEADLINE_HEADER = "x-floodgate-deadline-ms"
ENVOY_TIMEOUT_HEADER = "x-envoy-expected-rq-timeout-ms"


class deadline_after:
    """Run the block with a deadline ``seconds`` from now; raise `DeadlineExceeded` if it expires.

    The shape of `anyio.fail_after`, but the error is floodgate's (504 at a service edge).
    An enclosing, earlier deadline still wins (cancel scopes nest); ``seconds=None`` sets no
    deadline of its own. The ``as`` target is the underlying `anyio.CancelScope`.
    """

    __slots__ = ("_scope", "reason", "seconds")

    def __init__(self, seconds: float | None, *, reason: str | None = None):
        self.seconds = seconds
        self.reason = reason
        self._scope: anyio.CancelScope | None = None

    def __enter__(self) -> anyio.CancelScope:
        deadline = math.inf if self.seconds is None else anyio.current_time() + self.seconds
        self._scope = anyio.CancelScope(deadline=deadline)
        return self._scope.__enter__()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        scope = self._scope
        assert scope is not None
        suppressed = scope.__exit__(exc_type, exc, tb)
        if scope.cancelled_caught and anyio.current_time() >= scope.deadline:
            raise DeadlineExceeded(self.reason or f"deadline of {self.seconds:g}s exceeded")
        return bool(suppressed)


def time_left() -> float:
    """Seconds left before the nearest deadline of the current task (``inf`` if none)."""
    deadline = anyio.current_effective_deadline()
    if deadline == math.inf:
        return math.inf
    return max(0.0, deadline - anyio.current_time())


def deadline_headers() -> dict[str, str]:
    """Headers that pass the time left to the next service; ``{}`` when there is no deadline."""
    left = time_left()
    if left == math.inf:
        return {}
    return {DEADLINE_HEADER: str(max(0, int(left * 1000)))}


def deadline_from_headers(headers: Mapping[str, str], default: float | None) -> float | None:
    """The request deadline in seconds from incoming headers, capped by ``default``.

    Reads ``x-floodgate-deadline-ms`` and ``x-envoy-expected-rq-timeout-ms`` and takes the
    smallest of them and ``default`` (the endpoint's own deadline: a caller may ask for less
    time, never for more). Malformed, zero or negative values are ignored. Returns ``default`` when
    no header is usable; None only when ``default`` is None and no header is present.
    """
    if isinstance(headers, dict):
        # A plain dict is case-sensitive; HTTP header names are not.
        headers = {key.lower(): value for key, value in headers.items()}
    best = default
    for name in (DEADLINE_HEADER, ENVOY_TIMEOUT_HEADER):
        raw = headers.get(name)
        if raw is None:
            continue
        try:
            millis = float(raw)
        except ValueError:
            continue
        if not math.isfinite(millis) or millis <= 0:  # Envoy sends 0 for "no timeout"
            continue
        seconds = millis / 1000.0
        best = seconds if best is None else min(best, seconds)
    return best

"""Retry policy pieces: the backoff schedule and the retry budget.

The retry *loop* lives in `_dependency.py` (``Dependency._attempts`` and ``_retry_delay``) and is
floodgate's own rather than stamina's or tenacity's. It spends from a retry budget shared by all
calls to the dependency, which neither library has; it stops when the request deadline (the
enclosing cancel scope) leaves too little time to start another attempt, where both stop on a
duration of their own read from ``time.monotonic``, blind to trio's clock; and it draws jitter
from an injectable random source, where stamina always uses the global ``random``. Both could
honour ``Retry-After`` through a hook. The loop shares the gate slot, breaker ticket and
classification of the call around it, so a library would wrap only part of it.
docs/decisions/0003-retry-loop.md has the comparison and the measurements.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from ._window import RollingCounts

__all__ = ["RetryBudget", "RetryBudgetStatistics", "backoff_ceiling", "backoff_delay", "retry_after_delay"]


def backoff_ceiling(n: int, *, base: float, cap: float) -> float:
    """The capped exponential of the ``n``-th consecutive failure (counted from 1):
    ``min(cap, base * 2 ** (n - 1))``, so ``base``, ``2 * base``, ``4 * base``... up to ``cap``.

    The one backoff formula: `backoff_delay` spreads a retry below it (full jitter); callers that
    want another jitter (or none, for a single process that nobody retries in step with) start
    from it too.
    """
    if n < 1:
        raise ValueError("failures are counted from 1")
    # The exponent is bounded so a long outage cannot overflow the float: 2**62 * base is past
    # any cap long before.
    return min(cap, base * 2.0 ** min(n - 1, 62))


def backoff_delay(retry: int, *, base: float, cap: float, rng: Callable[[], float] = random.random) -> float:
    """Delay before retry number ``retry`` (1 = first retry): exponential with full jitter.

    ``rng() * backoff_ceiling(retry, base=base, cap=cap)`` — uniformly spread between 0 and the
    capped exponential, so that clients that failed together do not retry together.
    """
    ceiling = backoff_ceiling(retry, base=base, cap=cap)
    return rng() * ceiling


def retry_after_delay(seconds: float, *, jitter: float, rng: Callable[[], float] = random.random) -> float:
    """How long to wait when the other side said "retry after ``seconds``": never less, and up to
    ``jitter`` (a fraction) more, uniformly — ``seconds * (1 + jitter * rng())``.

    Honoured exactly, a ``Retry-After: 1`` sent to many callers at once brings them all back at
    the same instant, a burst as sharp as the one that was refused. A small spread after the time
    asked (never before: the provider said when it is ready) breaks the burst up; a spread
    proportional to the wait keeps a 20 ms ``retry-after-ms`` short and a 10 s one spread over a
    second.
    """
    if seconds <= 0:
        return 0.0
    return seconds * (1.0 + jitter * rng())


@dataclass(frozen=True)
class RetryBudgetStatistics:
    """A snapshot of a `RetryBudget` over its window: ``allowed`` is how many retries the
    window's ``calls`` permit, ``denied_total`` how many retries it has refused in all."""

    calls: int
    retries: int
    allowed: float
    denied_total: int


class RetryBudget:
    """Retries may be at most ``ratio`` of the calls over the last ``window`` seconds, plus
    ``min_retries`` per window (so a dependency with little traffic can still retry).

    When a dependency fails for everyone, every call wants to retry; without a budget each
    caller multiplies the load on the failing provider by ``max_attempts``. With it the
    extra load is bounded by ``ratio``.
    """

    def __init__(self, *, ratio: float, window: float, min_retries: int = 0):
        if not 0 <= ratio <= 1:
            raise ValueError("ratio must be within [0, 1]")
        self.ratio = ratio
        self.min_retries = min_retries
        self._counts = RollingCounts(window, fields=2)  # calls, retries
        self._denied = 0

    def record_call(self, now: float) -> None:
        """Count one call (its first attempt)."""
        self._counts.add(now, 1, 0)

    def try_spend(self, now: float) -> bool:
        """Take one retry from the budget; False (and nothing taken) when it is spent."""
        calls, retries = self._counts.totals(now)
        if retries + 1 > self.min_retries + self.ratio * calls:
            self._denied += 1
            return False
        self._counts.add(now, 0, 1)
        return True

    def statistics(self, now: float) -> RetryBudgetStatistics:
        calls, retries = self._counts.totals(now)
        return RetryBudgetStatistics(calls, retries, self.min_retries + self.ratio * calls, self._denied)

    def __repr__(self) -> str:
        return f"<RetryBudget ratio={self.ratio} min_retries={self.min_retries} denied={self._denied}>"

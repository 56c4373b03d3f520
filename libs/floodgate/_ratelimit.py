"""A token bucket that keeps a client under a provider's requests-per-minute.

Synchronous and clock-free: callers pass ``now``. `TokenBucket.reserve` takes a token now or
reserves a future one (the balance goes negative) and says how long to wait for it, refusing
when that wait would exceed ``max_wait``. A waiter that is cancelled gives its token back.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["TokenBucket", "TokenBucketStatistics"]


@dataclass(frozen=True)
class TokenBucketStatistics:
    """A snapshot of a `TokenBucket`; ``tokens`` below zero are tokens reserved by waiters."""

    rate: float
    burst: int
    tokens: float
    granted_total: int
    refused_total: int


class TokenBucket:
    """``rate`` tokens per second, holding at most ``burst``; starts full.

    `try_take` is the fast path. `reserve` is for a caller that may wait: it returns how long
    to sleep before the reserved token may be used, or None (nothing taken) when that would
    exceed ``max_wait`` — the caller then refuses at once (`Dependency` raises `Overloaded`)
    instead of queueing behind the provider's limit. A reserver cancelled before its turn must
    `refund`, or the bucket would stay throttled below ``rate``.
    """

    __slots__ = ("_granted", "_last", "_refused", "_tokens", "burst", "rate")

    def __init__(self, *, rate: float, burst: int):
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._last: float | None = None
        self._granted = 0
        self._refused = 0

    def _refill(self, now: float) -> None:
        if self._last is not None and now > self._last:
            self._tokens = min(float(self.burst), self._tokens + (now - self._last) * self.rate)
        if self._last is None or now > self._last:
            self._last = now

    def try_take(self, now: float) -> bool:
        """Take one token if one is available now."""
        self._refill(now)
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            self._granted += 1
            return True
        return False

    def reserve(self, now: float, *, max_wait: float) -> float | None:
        """Reserve one token. Returns the seconds to wait before using it (0.0 if available
        now), or None — with nothing reserved — when the wait would exceed ``max_wait``."""
        self._refill(now)
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            self._granted += 1
            return 0.0
        wait = (1.0 - self._tokens) / self.rate
        if wait > max_wait + 1e-12:
            self._refused += 1
            return None
        self._tokens -= 1.0
        self._granted += 1
        return wait

    def wait_needed(self, now: float) -> float:
        """Seconds until a token would be free (0.0 when one is)."""
        self._refill(now)
        return max(0.0, (1.0 - self._tokens) / self.rate)

    def refund(self) -> None:
        """Give back a reserved token that will not be used (its holder was cancelled)."""
        self._tokens = min(float(self.burst), self._tokens + 1.0)
        self._granted -= 1

    def statistics(self, now: float) -> TokenBucketStatistics:
        self._refill(now)
        return TokenBucketStatistics(self.rate, self.burst, self._tokens, self._granted, self._refused)

    def __repr__(self) -> str:
        return f"<TokenBucket rate={self.rate:g}/s burst={self.burst} tokens={self._tokens:.2f}>"

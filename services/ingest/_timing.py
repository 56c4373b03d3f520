"""The worker's timing rules as small pure objects, tested on trio's virtual clock.

* :class:`RetryBackoff` — when a failed attempt runs again (exponential, capped, "equal jitter").
* :class:`LeaseClock` — when a running job's lease must be extended and when it must be given up.
* :class:`ClaimPacer` — how long the claim loop waits before the next claim.
* :class:`CallSpacer` — when the next of ``slots`` concurrent downstream calls may start, so that
  they spread over the call's duration instead of leaving in bursts.

None of them sleeps or reads a clock: callers pass ``now`` in and await the answer themselves.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

import floodgate

__all__ = ["CallSpacer", "CallSpacerStatistics", "ClaimPacer", "LeaseClock", "RetryBackoff"]


@dataclass(frozen=True)
class RetryBackoff:
    """Delay before attempt ``n + 1`` after attempt ``n`` failed with a retryable error.

    The ceiling doubles per attempt from ``base`` up to ``cap`` (``floodgate.backoff_ceiling``, the
    one backoff formula); the delay is uniform in ``[ceiling / 2, ceiling]`` ("equal jitter"):
    jitter spreads a burst of failures (a provider outage fails many jobs at once) without ever
    retrying immediately, which full jitter can do.

    When the failure was a provider's 429 (``provider_retry_after``: the seconds it asked for), the
    attempt is never scheduled earlier than that: the delay is the larger of the backoff and the
    provider's wait with a little jitter after it (``floodgate.retry_after_delay``), so jobs refused
    together do not all come back at the second the provider named.
    """

    base: float = 2.0
    cap: float = 300.0
    retry_after_jitter: float = 0.1

    def __post_init__(self) -> None:
        if not (0 < self.base <= self.cap):
            raise ValueError("RetryBackoff needs 0 < base <= cap")
        if not 0 <= self.retry_after_jitter <= 1:
            raise ValueError("RetryBackoff needs 0 <= retry_after_jitter <= 1")

    def ceiling(self, attempt: int) -> float:
        return floodgate.backoff_ceiling(attempt, base=self.base, cap=self.cap)

    def delay(
        self,
        attempt: int,
        *,
        provider_retry_after: float | None = None,
        rng: Callable[[], float] = random.random,
    ) -> float:
        ceiling = self.ceiling(attempt)
        backoff = ceiling / 2 + rng() * ceiling / 2
        if provider_retry_after is None:
            return backoff
        asked = floodgate.retry_after_delay(provider_retry_after, jitter=self.retry_after_jitter, rng=rng)
        return max(backoff, asked)


@dataclass
class LeaseClock:
    """What a worker knows about one job's lease, in its own clock.

    The database sets ``lease_expires_at = now() + duration`` when it grants or extends a lease; the
    worker counts from the moment it *sent* that statement, so its idea of the expiry is never later
    than the database's. It extends the lease every ``duration / 3`` (two heartbeats can fail before
    the lease is at risk) and gives the job up — stops writing — once its own expiry passes without a
    successful extension, before any other worker can have reclaimed it. Fencing tokens cover the rest.
    """

    duration: float
    expires_at: float
    extensions: int = 0
    retry_at: float | None = None  # set after a failed heartbeat

    @classmethod
    def granted(cls, *, duration: float, sent_at: float) -> LeaseClock:
        if duration <= 0:
            raise ValueError("lease duration must be positive")
        return cls(duration=duration, expires_at=sent_at + duration)

    @property
    def interval(self) -> float:
        return self.duration / 3

    def next_heartbeat_at(self) -> float:
        """Due one interval after the last grant (the lease then still has two intervals left), or
        sooner when the last heartbeat failed."""
        if self.retry_at is not None:
            return self.retry_at
        return self.expires_at - self.duration + self.interval

    def heartbeat_failed(self, now: float) -> None:
        """Try again a quarter interval later, but never past the expiry."""
        self.retry_at = min(now + self.interval / 4, self.expires_at)

    def extended(self, *, sent_at: float) -> None:
        self.expires_at = max(self.expires_at, sent_at + self.duration)
        self.extensions += 1
        self.retry_at = None

    def lost(self, now: float) -> bool:
        return now >= self.expires_at


@dataclass
class ClaimPacer:
    """Delay before the claim loop's next claim.

    * a full batch came back: there is likely more work — claim again at once;
    * a partial or empty batch: wait for a NOTIFY, at most ``poll_interval`` (the polling fallback for
      when notifications do not arrive, e.g. behind a transaction-mode pooler);
    * the database failed: back off exponentially up to ``max_error_delay`` (a restarting PostgreSQL
      is not hammered; ``floodgate.backoff_ceiling``, no jitter: one loop per process), reset by the
      next success.
    """

    poll_interval: float = 1.0
    error_base: float = 0.1
    max_error_delay: float = 5.0
    _errors: int = field(default=0, init=False)

    def after_claim(self, *, claimed: int, asked: int) -> float:
        self._errors = 0
        return 0.0 if asked > 0 and claimed >= asked else self.poll_interval

    def after_error(self) -> float:
        self._errors += 1
        return floodgate.backoff_ceiling(self._errors, base=self.error_base, cap=self.max_error_delay)

    @property
    def consecutive_errors(self) -> int:
        return self._errors


@dataclass(frozen=True)
class CallSpacerStatistics:
    mean_duration: float | None  # smoothed duration of a call; None before the first one
    gap: float  # the least time between two starts now
    delayed: int  # starts that had to wait for their turn


@dataclass
class CallSpacer:
    """Spreads the starts of up to ``slots`` concurrent calls evenly over the time a call takes.

    A limiter alone keeps ``slots`` calls in flight but lets them leave in bursts: the first ``slots``
    at once, and every later one the moment another returns, so they keep travelling as a train. A
    provider then serves the train one after another (its compute, its parsing, its own queue) and
    every call of the train waits for the ones ahead of it. Spaced at least ``fraction x
    duration / slots`` apart, the same number of calls per second arrive evenly and no call waits for
    another. The gap never lowers throughput: ``slots`` calls of that duration cannot start more often
    than ``slots / duration`` per second anyway, and ``fraction`` < 1 leaves room to catch up.
    (Against the simulator, spaced calls come back measurably sooner than trains: see
    ``bench/bench_ingest.py --no-embed-spacing`` and docs/benchmarks.md.)

    ``duration`` is the mean of the observed calls (exponentially weighted, ``smoothing`` per call);
    before the first observation there is no gap.
    """

    slots: int
    # 0.5: calls start at least half an even share apart: spread enough that a provider never serves
    # two at once, while the stagger costs at most half a call's duration at the start of a run.
    fraction: float = 0.5
    smoothing: float = 0.2
    _mean: float | None = field(default=None, init=False)
    _next_start: float = field(default=float("-inf"), init=False)
    _delayed: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if self.slots < 1 or not 0 < self.fraction <= 1 or not 0 < self.smoothing <= 1:
            raise ValueError("CallSpacer needs slots >= 1, 0 < fraction <= 1 and 0 < smoothing <= 1")

    @property
    def gap(self) -> float:
        return 0.0 if self._mean is None else self.fraction * self._mean / self.slots

    def reserve(self, now: float) -> float:
        """The time at which the caller may start its call (``now`` or later); the turn is taken."""
        start = max(now, self._next_start)
        if start > now:
            self._delayed += 1
        self._next_start = start + self.gap
        return start

    def observed(self, duration: float) -> None:
        """A call took ``duration`` seconds (successful calls only: a fast refusal says nothing)."""
        self._mean = duration if self._mean is None else self._mean + self.smoothing * (duration - self._mean)

    def statistics(self) -> CallSpacerStatistics:
        return CallSpacerStatistics(self._mean, self.gap, self._delayed)

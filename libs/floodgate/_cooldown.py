"""Cool-down: after a provider's 429, no call of this process goes to it until the time it named.

A 429 with ``Retry-After: 2`` is the provider's answer to the API key, not only to the one call that
got it: every other caller sharing the key would get the same answer for the next two seconds.
Without a cool-down each of them still sends its request, is refused, and retries on its own
schedule — a provider that asked for a pause sees the same load, now with retries on top. With one,
the first 429 pauses the whole dependency in this process: calls in flight finish, new attempts
wait for the end of the pause (or are refused at once, when they cannot wait that long), and they
come back spread a little after it (`retry_after_delay`), not in one burst.

The pause is sized by the provider's own answer — its ``retry-after-ms`` or ``Retry-After``, or
``without_retry_after`` when it named no time — and never longer than ``max_seconds`` (a provider's
mistaken ``Retry-After: 3600`` must not silence a service for an hour). A later 429 that asks for
longer extends it; one that asks for less changes nothing.

Pure bookkeeping: no clock, no I/O; the caller passes ``now`` (trio's clock in a service).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass

from ._retry import retry_after_delay

__all__ = ["Cooldown", "CooldownStatistics"]


@dataclass(frozen=True)
class CooldownStatistics:
    """A snapshot of a `Cooldown`: ``remaining`` seconds of the pause now (0 when none),
    ``started_total`` pauses begun, ``seconds_total`` the time paused in all."""

    remaining: float
    started_total: int
    extended_total: int
    seconds_total: float


class Cooldown:
    """The pause one dependency is in after a provider 429 (see the module's docstring).

    `pushback` records a 429; `wait` says how long a caller must wait before its attempt may go
    (0: go now); `remaining` how long the pause still lasts.
    """

    def __init__(self, *, without_retry_after: float, max_seconds: float, jitter: float) -> None:
        if without_retry_after < 0 or max_seconds <= 0 or not 0 <= jitter <= 1:
            raise ValueError("need without_retry_after >= 0, max_seconds > 0 and 0 <= jitter <= 1")
        self.without_retry_after = without_retry_after
        self.max_seconds = max_seconds
        self.jitter = jitter
        self._until = -math.inf
        self._started = 0
        self._extended = 0
        self._seconds = 0.0

    def pushback(self, now: float, retry_after: float | None) -> float:
        """The provider answered 429 at ``now``, asking for ``retry_after`` seconds (None: it did
        not say). Pause until then (capped). Returns the seconds this added to the pause: 0 when it
        fell within the pause already running; ``remaining(now)`` before the call says whether it
        began one."""
        length = min(self.without_retry_after if retry_after is None else retry_after, self.max_seconds)
        end = now + length
        if length <= 0 or end <= self._until:
            return 0.0
        added = end - max(now, self._until)
        if now >= self._until:
            self._started += 1
        else:
            self._extended += 1
        self._seconds += added
        self._until = end
        return added

    def remaining(self, now: float) -> float:
        """Seconds the pause still lasts (0 when there is none)."""
        return max(0.0, self._until - now)

    def wait(self, now: float, rng: Callable[[], float] = random.random) -> float:
        """Seconds a caller must wait before its attempt: 0 outside a pause, else the time left
        plus a small jitter (never less than the time left)."""
        left = self._until - now
        if left <= 0:
            return 0.0
        return retry_after_delay(left, jitter=self.jitter, rng=rng)

    def statistics(self, now: float) -> CooldownStatistics:
        return CooldownStatistics(self.remaining(now), self._started, self._extended, self._seconds)

    def __repr__(self) -> str:
        return (
            f"<Cooldown started={self._started} extended={self._extended} "
            f"paused={self._seconds:.3g}s max={self.max_seconds:g}s>"
        )

"""A dependency's concurrency limit learned from the provider's 429s: found, not guessed.

The budget says how many calls a process may have in flight to a provider (``global_concurrency``
x share / processes). When the provider's real limit is lower — an account tier nobody wrote
down, a key shared with another system — every call past it is answered 429, and a fixed limit
keeps sending them. `PushbackLimit` lowers the in-flight limit when the provider pushes back and
raises it slowly while it does not, never above the budget's value (``ceiling``) nor below
``floor``. It is additive increase, multiplicative decrease (TCP's rule), with one refinement:

* **Decrease**, on a 429 from an attempt sent while ``sent_with`` of our attempts were in flight
  (itself included). The provider refused with ``sent_with - 1`` of ours already inside, so its
  limit (for us) is at most that: the limit becomes ``max(sent_with - 1, floor(limit x decrease))``
  — no deeper than halving (with the default ``decrease = 0.5``), and no deeper than the evidence.
  A provider at 8 that sees a 9th call thus brings the limit from 9 to exactly 8, not to 4. One
  decrease per round trip: a 429 from an attempt sent before the last change (its ``generation``
  is older) reports on the old limit and changes nothing — a generation, not a time, because many
  attempts leave at the same clock reading. Nor does one sent with more of ours in flight than
  the limit (calls admitted before a lowering, still retrying): the excess explains it.
* **Increase**, by one, once ``increase_interval`` seconds have passed since the last change
  without a 429 and with the limit in use (an attempt was sent with all of it in flight): an idle
  dependency learns nothing about how much it could carry. Each increase is a probe — at a
  provider limit ``M`` the limit sits at ``M`` and tries ``M + 1`` once per interval, which costs
  one 429 (and the cool-down it brings, `Cooldown`), so the interval is long. Below the level
  that last drew a 429, less one, it climbs every ``recovery_interval`` instead (a tenth of the
  interval unless told): a decrease can overshoot — attempts sent together reach the provider
  in another order than ours, so ``sent_with`` is only an estimate — and the levels under a known
  bad one are worth trying soon.

`AdaptiveLimit` (the admission door's rule) follows latency instead; a provider's 429 is a
clearer signal than latency, and the only one a concurrency limit at the provider gives.

Pure bookkeeping: no clock, no I/O; the caller passes ``now`` (trio's clock in a service) and
applies `limit` to its gate (`Gate.resize`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["PushbackLimit", "PushbackLimitStatistics"]


@dataclass(frozen=True)
class PushbackLimitStatistics:
    limit: int
    ceiling: int
    floor: int
    decreases_total: int
    increases_total: int


class PushbackLimit:
    """An in-flight limit in ``[floor, ceiling]`` steered by the provider's 429s (see the module).

    Read `generation` when an attempt is sent; report its end: `pushback` for a 429, `success` for
    an answer; both take that ``generation`` and ``sent_with``, the attempts in flight when it was
    sent (itself included), and return True when `limit` changed. It starts at ``ceiling``.
    """

    def __init__(
        self,
        ceiling: int,
        *,
        floor: int = 1,
        decrease: float = 0.5,
        increase_interval: float = 30.0,
        recovery_interval: float | None = None,
    ) -> None:
        if not 1 <= floor <= ceiling:
            raise ValueError(f"need 1 <= floor <= ceiling, got floor={floor}, ceiling={ceiling}")
        if not 0 < decrease < 1:
            raise ValueError(f"decrease must be in (0, 1), got {decrease}")
        if increase_interval <= 0:
            raise ValueError(f"increase_interval must be > 0, got {increase_interval}")
        if recovery_interval is None:
            recovery_interval = increase_interval / 10
        if not 0 < recovery_interval <= increase_interval:
            raise ValueError(f"need 0 < recovery_interval <= increase_interval, got {recovery_interval}")
        self.ceiling = ceiling
        self._floor = floor
        self.decrease = decrease
        self.increase_interval = increase_interval
        self.recovery_interval = recovery_interval
        self._pushed_at: int | None = None  # the limit in force at the last decrease
        # What the provider's 429s taught, or None: no 429 since the limit was last at the ceiling
        # (the limit is then the ceiling, and follows it when the process's share changes).
        self._learned: int | None = None
        self.generation = 0  # one more at each change of the limit
        self._changed_at = -math.inf
        self._used = False  # an attempt went with the whole limit in flight since the last change
        self._decreases = 0
        self._increases = 0

    @property
    def limit(self) -> int:
        """The in-flight limit now: what was learned, never above the ceiling."""
        return self.ceiling if self._learned is None else max(self.floor, min(self._learned, self.ceiling))

    @property
    def floor(self) -> int:
        return min(self._floor, self.ceiling)

    def pushback(self, now: float, *, sent_with: int, generation: int) -> bool:
        """A 429 answered an attempt sent in ``generation`` with ``sent_with`` in flight."""
        if generation != self.generation:
            return False  # it reports on the limit before the last change
        limit = self.limit
        bound = sent_with - 1  # of ours inside when the provider refused: its limit is at most this
        if bound >= limit:
            # More of ours were inside than the limit (calls admitted before it was lowered, still
            # retrying): the excess explains the refusal, and the lower limit is taking effect.
            return False
        target = max(bound, math.floor(limit * self.decrease), self.floor)
        if target >= limit:
            return False  # at the floor already
        self._learned = target
        self._pushed_at = limit
        self._changed(now)
        self._decreases += 1
        return True

    def success(self, now: float, *, sent_with: int, generation: int) -> bool:
        """An answer (not a 429) came back for an attempt sent in ``generation`` with
        ``sent_with`` in flight."""
        limit = self.limit
        if sent_with >= limit and generation == self.generation:
            self._used = True
        below_known_bad = self._pushed_at is not None and limit + 1 < self._pushed_at
        interval = self.recovery_interval if below_known_bad else self.increase_interval
        if not self._used or limit >= self.ceiling or now - self._changed_at < interval:
            return False
        self._learned = None if limit + 1 >= self.ceiling else limit + 1
        self._changed(now)
        self._increases += 1
        return True

    def set_ceiling(self, ceiling: int, now: float) -> bool:
        """A new ceiling (the process's share changed). A limit the provider never pushed down
        follows it, up or down; a learned one stays as learned, under the ceiling. True when
        `limit` changed."""
        if ceiling < 1:
            raise ValueError(f"ceiling must be >= 1, got {ceiling}")
        before = self.limit
        self.ceiling = ceiling
        if self.limit == before:
            return False
        self._changed(now)
        return True

    def _changed(self, now: float) -> None:
        self._changed_at = now
        self._used = False
        self.generation += 1

    def statistics(self) -> PushbackLimitStatistics:
        return PushbackLimitStatistics(self.limit, self.ceiling, self.floor, self._decreases, self._increases)

    def __repr__(self) -> str:
        return (
            f"<PushbackLimit {self.limit} in [{self.floor}, {self.ceiling}] "
            f"decreases={self._decreases} increases={self._increases}>"
        )

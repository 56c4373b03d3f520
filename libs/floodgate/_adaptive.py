"""A concurrency limit steered by latency and queueing: lower when requests wait, back up when not.

A limit sized from the budget (Little's law: throughput x latency) is right when the process runs
as the budget assumes. When something the budget cannot see makes requests wait — a neighbour
taking the CPU, a slow event loop, a bottleneck that serves fewer than the door admits — the same
number of requests in flight no longer finishes at the same rate, and the difference is spent
waiting: latency grows while throughput does not. `AdaptiveLimit` watches the latency of
completed requests and lowers the limit when it rises above its recent best by more than
``tolerance``; it raises the limit again, never above ``ceiling``, when latency is back.

The rule is the gradient limit of Netflix's concurrency-limits (Gradient2), simplified. Every
``interval`` seconds in which at least ``min_samples`` requests completed::

    short    = mean latency of the requests completed in the interval
    baseline = the lowest `short` + 2 standard errors of the last `baseline_window` seconds
    target   = limit + sqrt(limit)                    if short <= tolerance x baseline
             = limit x max(0.5, tolerance x baseline / short)      otherwise
    limit    = limit + smoothing x (target - limit),  clamped to [floor, ceiling]

so latency settles near ``tolerance x baseline`` when the limit binds. The standard errors
(`BASELINE_ERRORS`, from each interval's spread) undo the bias of a minimum: the lowest of many
noisy means is lower than the latency the work has.

Latency alone is a blunt signal, and it can point the wrong way. Requests admitted beyond what the
bottleneck serves wait at its gate, adding their wait to every answer and nothing to the
throughput, and a mean latency within tolerance hides a p99 that is not. With ``queue_allowance``
set, the caller also reports how many wait at the bottleneck (`note_queue`, on each entry); when
the interval's mean ``q`` exceeds the allowance and the queue costs — its wait, by Little's law
``queue_cost x q / throughput`` (the interval's completions per second), is more than the latency
the tolerance allows above the baseline — the limit is ``q - allowance`` requests too high.
``queue_cost`` is what one waiter costs a request in the bottleneck's completion times: a request
that makes ``n`` calls to the bottleneck, ``k`` of them one after another, passes its gate ``n``
times for each completed request and waits ``k`` times, so ``queue_cost = k / n`` (1 for one call)::

    target   = min(target, limit - (q - allowance))     if q > allowance
                                                 and queue_cost x q / throughput > (tolerance - 1) x baseline

and a limit with such a queue does not grow. A small allowance keeps the bottleneck busy through
jitter; zero would leave it idle whenever arrivals bunch. A queue that waits less than the
tolerance is the bottleneck's buffer, not overload: shrinking on it (on any waiter) holds the
bottleneck just under full while the door refuses what it could have served, most where a slow
provider leaves the ceiling little room above what the bottleneck needs in flight. (Gradient2 always adds its queue
allowance, so it settles where the gradient cancels it, well above the baseline; adding it only
while latency is within tolerance keeps the settling point where ``tolerance`` says.)

With the queue reported, a latency rise lowers the limit only in an interval where something
waited (``q > 0``). A rise with nothing waiting is the work itself getting slower — a provider
answering in 400 ms instead of 0 — and at the same arrival rate slower answers need *more*
requests in flight (Little's law), not fewer: shrinking on it turns a slower provider into
refusals of traffic the budget carries. So such an interval becomes the new baseline at once (the
window's faster past is dropped) and the limit holds; a later queue is judged against the latency
the work has now. Without ``queue_allowance`` the caller has no evidence of waiting but latency,
and every rise counts.

The limit grows only when it was used (some moment of the interval had at least half of it in
flight): an idle door learns nothing about how much it could carry. It never grows *because*
requests got slower. A door that did (to keep the bottleneck busy while each request took longer)
fed on itself whenever the slowness came from the load — more admitted, more contention, slower
still (the overload benchmark showed it). The ceiling stays the budget's number, so this only ever
admits less than the static door would.

Known limits: a latency rise that lasts longer than ``baseline_window`` becomes the new baseline
(the window's best is then the slow state), and the limit drifts back up towards the ceiling.
That is the intended answer to a provider that became slower for good; for sustained overload it
means the door degrades to the static limit, not below it. And with the queue reported, waiting
that does not show in it (a lagging event loop while the bottleneck's gate has free slots) lowers
nothing: the ceiling bounds that.

Pure bookkeeping: no clock, no I/O. The caller passes ``now`` (any monotonic seconds — trio's
clock in a service, so tests run on `trio.testing.MockClock`).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

__all__ = ["BASELINE_ERRORS", "AdaptiveLimit", "AdaptiveLimitStatistics"]

#: how many standard errors above its mean an interval counts towards the baseline. The lowest of
#: a minute of noisy interval means lies about two standard errors under the true mean (the
#: expected minimum of some sixty normal draws), so a baseline of bare means sits low enough to
#: make a queue within the tolerance look like overload: the door refuses load while its
#: bottleneck idles (`make bench-budget` showed it). Constant latencies have no spread and keep
#: their exact mean.
BASELINE_ERRORS = 2.0


@dataclass(frozen=True)
class AdaptiveLimitStatistics:
    limit: int
    ceiling: int
    floor: int
    baseline: float  # s; nan before the first interval
    last_latency: float  # mean latency of the last interval, s; nan before the first
    last_queue: float  # mean bottleneck queue of the last interval; nan before the first
    updates: int


class AdaptiveLimit:
    """A limit between ``floor`` and ``ceiling`` that follows the latency of completed requests.

    Feed it with `observe` (each completed request's latency), `note_in_flight` (how many are
    inside when one enters) and, with ``queue_allowance``, `note_queue` (how many wait at the
    bottleneck when one enters: then only a latency rise with a queue lowers it); read `limit`.
    It starts at ``ceiling``.
    """

    def __init__(
        self,
        ceiling: int,
        *,
        floor: int = 1,
        tolerance: float = 1.2,
        smoothing: float = 0.2,
        interval: float = 1.0,
        min_samples: int = 10,
        baseline_window: float = 60.0,
        queue_allowance: float | None = None,
        queue_cost: float = 1.0,
    ) -> None:
        if not 1 <= floor <= ceiling:
            raise ValueError(f"need 1 <= floor <= ceiling, got floor={floor}, ceiling={ceiling}")
        if tolerance < 1.0:
            raise ValueError(f"tolerance must be >= 1 (latency may grow this much), got {tolerance}")
        if not 0 < smoothing <= 1:
            raise ValueError(f"smoothing must be in (0, 1], got {smoothing}")
        if interval <= 0 or baseline_window < interval or min_samples < 1:
            raise ValueError("need interval > 0, baseline_window >= interval and min_samples >= 1")
        if queue_allowance is not None and queue_allowance < 0:
            raise ValueError(f"queue_allowance must be >= 0, got {queue_allowance}")
        if queue_cost <= 0:
            raise ValueError(f"queue_cost must be > 0, got {queue_cost}")
        self.ceiling = ceiling
        self.floor = floor
        self.tolerance = tolerance
        self.smoothing = smoothing
        self.interval = interval
        self.min_samples = min_samples
        self.baseline_window = baseline_window
        self.queue_allowance = queue_allowance
        self.queue_cost = queue_cost
        self._estimate = float(ceiling)
        self.limit = ceiling
        # the interval being measured
        self._started: float | None = None
        self._mean = 0.0  # the interval's running mean and squared deviations (Welford: exact for
        self._deviations = 0.0  # equal latencies, where a sum of squares leaves rounding noise)
        self._count = 0
        self._peak = 0
        self._queued = 0  # sum of the bottleneck queue lengths reported in the interval
        self._queue_reports = 0
        # (end time, the interval's mean latency plus BASELINE_ERRORS standard errors) of past
        # intervals, kept for baseline_window seconds
        self._history: deque[tuple[float, float]] = deque()
        self._last = math.nan
        self._last_queue = math.nan
        self._updates = 0

    def resize(self, ceiling: int, *, floor: int) -> None:
        """Move the ceiling and the floor in place: what the budget allows this process changed
        (its share of the bottleneck, when the processes that divide it come and go).

        The limit keeps its place between them: one learned down to 60 % of the old ceiling is
        60 % of the new one, since the latencies it learned from (kept, with the baseline) do not
        depend on how many processes divide the provider. A ceiling of 0 — no share: admit
        nothing — needs a floor of 0; any other ceiling a floor of at least 1. After a ceiling of 0
        the limit starts again at the new ceiling.
        """
        if not 0 <= floor <= ceiling or (floor == 0 and ceiling > 0):
            raise ValueError(f"need 1 <= floor <= ceiling (or both 0), got floor={floor}, ceiling={ceiling}")
        place = self._estimate / self.ceiling if self.ceiling else 1.0
        self.ceiling = ceiling
        self.floor = floor
        self._settle(place * ceiling)

    def note_in_flight(self, in_flight: int) -> None:
        """Record how many requests are inside (call when one enters, or is refused)."""
        if in_flight > self._peak:
            self._peak = in_flight

    def note_queue(self, waiting: int) -> None:
        """Record how many requests wait at the bottleneck now (call when one enters)."""
        self._queued += waiting
        self._queue_reports += 1

    def observe(self, latency: float, now: float) -> bool:
        """Record one completed request; True when this closed an interval and the limit was updated."""
        if self._started is None:  # the first interval began when its first request entered
            self._started = now - latency
        self._count += 1
        delta = latency - self._mean
        self._mean += delta / self._count
        self._deviations += delta * (latency - self._mean)
        if now - self._started < self.interval or self._count < self.min_samples:
            return False
        queue = self._queued / self._queue_reports if self._queue_reports else 0.0
        mean, n = self._mean, self._count
        error = math.sqrt(self._deviations / (n - 1) / n) if n > 1 else 0.0
        self._update(mean, mean + BASELINE_ERRORS * error, queue, n / (now - self._started), now)
        self._started, self._count, self._peak = now, 0, 0
        self._mean, self._deviations = 0.0, 0.0
        self._queued, self._queue_reports = 0, 0
        return True

    def _update(self, short: float, bound: float, queue: float, throughput: float, now: float) -> None:
        history = self._history
        while history and history[0][0] <= now - self.baseline_window:
            history.popleft()
        if self.queue_allowance is not None and queue <= 0 and history:
            if short > self.tolerance * min(mean for _, mean in history):
                # Slower, and nothing waited: the work itself got slower (a provider's latency),
                # not the load. At the same arrival rate it needs more in flight (Little's law),
                # so this is the latency to compare with from now on, not a reason to admit less.
                history.clear()
        history.append((now, bound))
        baseline = min(mean for _, mean in history)
        allowed = self.tolerance * baseline
        estimate = self._estimate
        excess = queue - self.queue_allowance if self.queue_allowance is not None else 0.0
        if excess > 0 and self.queue_cost * queue / throughput <= allowed - baseline:
            excess = 0.0  # the queue's wait is within the tolerance: a buffer, not a cost
        if short > allowed or excess > 0:
            target = estimate * max(0.5, min(1.0, allowed / short))
            if excess > 0:
                target = min(target, max(estimate * 0.5, estimate - excess))
        elif self._peak * 2 >= self.limit:
            target = estimate + math.sqrt(estimate)
        else:
            target = estimate  # unused headroom proves nothing: hold
        self._settle(estimate + self.smoothing * (target - estimate))
        self._last = short
        self._last_queue = queue
        self._updates += 1

    def _settle(self, estimate: float) -> None:
        """Keep ``estimate`` clamped to [floor, ceiling] and the limit its whole part."""
        self._estimate = min(float(self.ceiling), max(float(self.floor), estimate))
        self.limit = max(self.floor, min(self.ceiling, math.floor(self._estimate)))

    @property
    def baseline(self) -> float:
        return min((mean for _, mean in self._history), default=math.nan)

    def statistics(self) -> AdaptiveLimitStatistics:
        return AdaptiveLimitStatistics(
            self.limit, self.ceiling, self.floor, self.baseline, self._last, self._last_queue, self._updates
        )

    def __repr__(self) -> str:
        return (
            f"<AdaptiveLimit {self.limit} in [{self.floor}, {self.ceiling}] "
            f"baseline={self.baseline * 1000:.0f}ms last={self._last * 1000:.0f}ms>"
        )

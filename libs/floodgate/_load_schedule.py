"""The open-loop arrival scheduler of ``floodgate loadtest``: requests start when the schedule says,
whatever the system under test does, and the run says whether it kept to the schedule.

Open model, as k6's ``constant-arrival-rate`` and ``ramping-arrival-rate`` executors: the arrival
times come from a rate (`constant_rate`, `ramping_rate`: pure objects that read no clock), not from
the answers. Free of coordinated omission: each request's latency counts from its *scheduled* start,
so a slow answer or a late start shows in the latency instead of thinning the load. The generator
records how late it started each request (its own lag: a busy loop or CPU) and drops, without
queueing, a request due while ``max_in_flight`` are already running (k6's dropped iterations); a run
whose lateness or drops exceed its `Validity` limits is not valid, and `LoadRun.reason` says why.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field

import anyio

__all__ = [
    "Arrival",
    "ArrivalSchedule",
    "LoadRun",
    "OpenLoop",
    "OpenLoopStatistics",
    "RequestRecord",
    "Stage",
    "Validity",
    "constant_rate",
    "nearest_rank",
    "ramping_rate",
]


# -- the schedule (pure) -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Stage:
    """Move the arrival rate linearly to ``target`` (requests/s) over ``duration`` seconds."""

    target: float
    duration: float

    def __post_init__(self) -> None:
        if self.target < 0 or not math.isfinite(self.target):
            raise ValueError(f"stage target must be a finite rate >= 0, got {self.target!r}")
        if self.duration <= 0 or not math.isfinite(self.duration):
            raise ValueError(f"stage duration must be > 0 seconds, got {self.duration!r}")


@dataclass(frozen=True)
class ArrivalSchedule:
    """Arrival times, as offsets in seconds from the run's start: piecewise-linear rate segments.

    Request ``i`` arrives when the expected count of arrivals so far, the integral of the rate,
    reaches ``i``: the first at offset 0 (when the rate there is above 0), then one per ``1/rate`` at a
    constant rate. Within a segment from rate ``r0`` to ``r1`` over ``D`` seconds, the count at ``t``
    is ``r0*t + (r1-r0)*t**2/(2*D)``; `offsets` solves it for each ``i`` in closed form, so times do
    not drift with the run's length."""

    start_rate: float
    stages: tuple[Stage, ...]

    @property
    def duration(self) -> float:
        return sum(stage.duration for stage in self.stages)

    @property
    def peak_rate(self) -> float:
        return max([self.start_rate, *(stage.target for stage in self.stages)])

    @property
    def expected_count(self) -> float:
        """The integral of the rate over the whole schedule (`offsets` yields about this many)."""
        total, rate = 0.0, self.start_rate
        for stage in self.stages:
            total += (rate + stage.target) / 2 * stage.duration
            rate = stage.target
        return total

    def offsets(self) -> Iterator[float]:
        """Each arrival's offset from the start, ascending, all below `duration`."""
        index = 0
        begin = 0.0  # the segment's start offset
        before = 0.0  # arrivals expected before the segment
        rate = self.start_rate
        for stage in self.stages:
            r0, r1, span = rate, stage.target, stage.duration
            while (t := _segment_time(index - before, r0, r1, span)) is not None:
                yield begin + t
                index += 1
            before += (r0 + r1) / 2 * span
            begin += span
            rate = r1

    def describe(self) -> str:
        if all(stage.target == self.start_rate for stage in self.stages):
            return f"constant {self.start_rate:g}/s for {self.duration:g}s"
        steps, rate = [], self.start_rate
        for stage in self.stages:
            steps.append(
                f"hold {stage.duration:g}s"
                if stage.target == rate
                else f"{stage.target:g}/s in {stage.duration:g}s"
            )
            rate = stage.target
        return f"ramping from {self.start_rate:g}/s: {', '.join(steps)}"


def _segment_time(n: float, r0: float, r1: float, span: float) -> float | None:
    """The offset within a segment at which ``n`` arrivals are expected, or None past its end."""
    if n < 0:  # an arrival counted in an earlier segment (cannot happen, kept for safety)
        return 0.0
    a = (r1 - r0) / (2 * span)
    disc = r0 * r0 + 4 * a * n
    if disc < 0:  # the rate falls to 0 before the count reaches n
        return None
    denominator = r0 + math.sqrt(disc)
    if denominator <= 0:  # rate 0 at the segment's start and n == 0: the first arrival waits
        return 0.0 if n == 0 and r1 > 0 else None
    # 2n / (r0 + sqrt(r0^2 + 4an)) is the quadratic's root without the cancellation of -r0 + sqrt(...)
    t = 2 * n / denominator
    return t if t < span else None


def constant_rate(rate: float, duration: float) -> ArrivalSchedule:
    """``rate`` requests/s for ``duration`` seconds (k6's ``constant-arrival-rate``)."""
    if rate <= 0 or not math.isfinite(rate):
        raise ValueError(f"rate must be a finite number of requests/s above 0, got {rate!r}")
    return ArrivalSchedule(rate, (Stage(rate, duration),))


def ramping_rate(start_rate: float, stages: Sequence[Stage]) -> ArrivalSchedule:
    """From ``start_rate`` through each stage's target in turn (k6's ``ramping-arrival-rate``)."""
    if start_rate < 0 or not math.isfinite(start_rate):
        raise ValueError(f"start_rate must be a finite rate >= 0, got {start_rate!r}")
    if not stages:
        raise ValueError("a ramping schedule needs at least one stage")
    return ArrivalSchedule(start_rate, tuple(stages))


# -- validity ----------------------------------------------------------------------------------------


def nearest_rank(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0 < q <= 100) by nearest rank, as bench/_rounds.py's ``percentile``:
    always a measured value; NaN when there are none."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


@dataclass(frozen=True)
class Validity:
    """When a run kept to its schedule. Lateness is how long after its scheduled time a request
    started; past these limits the figures describe the generator, not the system under test.

    ``max_late_p99`` bounds the 99th percentile of lateness, ``max_late`` every single request
    (None: no bound), ``max_dropped_fraction`` the share of scheduled requests dropped because
    ``max_in_flight`` were running (0: any drop invalidates the run)."""

    max_late_p99: float = 0.010
    max_late: float | None = 0.100
    max_dropped_fraction: float = 0.0

    def judge(self, lateness: Sequence[float], *, scheduled: int, dropped: int) -> str | None:
        """None when the run is valid, else the reason it is not."""
        reasons = []
        if lateness:
            p99 = nearest_rank(lateness, 99)
            if p99 > self.max_late_p99:
                reasons.append(
                    f"p99 lateness {p99 * 1000:.1f}ms > {self.max_late_p99 * 1000:g}ms "
                    "(the generator could not start requests on time)"
                )
            worst = max(lateness)
            if self.max_late is not None and worst > self.max_late:
                late = sum(1 for x in lateness if x > self.max_late)
                reasons.append(
                    f"{late} request(s) started more than {self.max_late * 1000:g}ms late "
                    f"(worst {worst * 1000:.1f}ms)"
                )
        if scheduled and dropped / scheduled > self.max_dropped_fraction:
            reasons.append(
                f"{dropped} of {scheduled} scheduled requests dropped ({dropped / scheduled:.1%} > "
                f"{self.max_dropped_fraction:.1%}): max_in_flight were all busy"
            )
        return "; ".join(reasons) or None


# -- the run -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Arrival:
    """What ``send`` is given: the request's number and its scheduled time (on the loop's clock)."""

    index: int
    scheduled: float


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One started request. ``latency`` counts from ``scheduled``, not from ``started``; it is None
    for a request cut off at the end of the run (``interrupted``). ``error`` names the exception
    ``send`` raised, else None, and ``result`` is what it returned."""

    index: int
    scheduled: float
    started: float
    finished: float | None
    error: str | None = None
    interrupted: bool = False
    result: object = None

    @property
    def lateness(self) -> float:
        return self.started - self.scheduled

    @property
    def latency(self) -> float | None:
        return None if self.finished is None else self.finished - self.scheduled


@dataclass(frozen=True)
class OpenLoopStatistics:
    scheduled: int
    started: int
    in_flight: int
    dropped: int
    completed: int
    failed: int
    interrupted: int


@dataclass(frozen=True)
class LoadRun:
    """The outcome of `OpenLoop.run`: every started request, the dropped ones' scheduled times, and
    the verdict on the generator (``valid``; ``reason`` says why not)."""

    start: float
    schedule: ArrivalSchedule
    records: tuple[RequestRecord, ...]
    dropped: tuple[float, ...]
    reason: str | None
    statistics: OpenLoopStatistics = field(repr=False)

    @property
    def valid(self) -> bool:
        return self.reason is None

    @property
    def lateness(self) -> list[float]:
        return [r.lateness for r in self.records]

    @property
    def latencies(self) -> list[float]:
        """Latencies of the requests that finished (successfully or with an error), from schedule."""
        return [r.latency for r in self.records if r.latency is not None]


class OpenLoop:
    """Start ``send(arrival)`` at each time of ``schedule``, each in its own task, at most
    ``max_in_flight`` at once (k6's maxVUs); return a `LoadRun` once the schedule has ended.

    A request due while ``max_in_flight`` are running is dropped, not queued: queueing it would
    start it late and hide the overload (coordinated omission by another name). A request whose
    time has already passed when the loop gets to it (the loop was held up) still starts, late, and
    its lateness is recorded. At the end of the schedule, requests still running get ``grace``
    seconds to finish (k6's gracefulStop), then are cancelled and recorded as interrupted.

    ``send`` may raise: its exception is recorded (``RequestRecord.error``), not propagated.
    Cancelling `run` cancels every request in flight."""

    def __init__(
        self,
        schedule: ArrivalSchedule,
        send: Callable[[Arrival], Awaitable[object]],
        *,
        max_in_flight: int,
        grace: float = 0.0,
        validity: Validity | None = None,
    ) -> None:
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, got {max_in_flight}")
        if grace < 0:
            raise ValueError(f"grace must be >= 0 seconds, got {grace}")
        self.schedule = schedule
        self.max_in_flight = max_in_flight
        self.grace = grace
        self.validity = validity or Validity()
        self._send = send
        self._records: list[RequestRecord] = []
        self._dropped: list[float] = []
        self._scheduled = 0
        self._in_flight = 0

    def statistics(self) -> OpenLoopStatistics:
        return OpenLoopStatistics(
            scheduled=self._scheduled,
            started=len(self._records) + self._in_flight,
            in_flight=self._in_flight,
            dropped=len(self._dropped),
            completed=sum(1 for r in self._records if r.error is None and not r.interrupted),
            failed=sum(1 for r in self._records if r.error is not None),
            interrupted=sum(1 for r in self._records if r.interrupted),
        )

    def __repr__(self) -> str:
        s = self.statistics()
        return (
            f"<OpenLoop {self.schedule.describe()} scheduled={s.scheduled} in_flight={s.in_flight}"
            f"/{self.max_in_flight} dropped={s.dropped}>"
        )

    async def run(self) -> LoadRun:
        start = anyio.current_time()
        end = start + self.schedule.duration
        async with anyio.create_task_group() as requests:
            for offset in self.schedule.offsets():
                scheduled = start + offset
                await anyio.sleep_until(scheduled)
                self._scheduled += 1
                if self._in_flight >= self.max_in_flight:
                    self._dropped.append(scheduled)
                    continue
                self._in_flight += 1
                requests.start_soon(self._one, Arrival(self._scheduled - 1, scheduled))
            await anyio.sleep_until(end)
            # Past the schedule: what still runs gets the grace period, then is cancelled.
            requests.cancel_scope.deadline = end + self.grace
        records = tuple(sorted(self._records, key=lambda r: r.index))
        reason = self.validity.judge(
            [r.lateness for r in records], scheduled=self._scheduled, dropped=len(self._dropped)
        )
        return LoadRun(start, self.schedule, records, tuple(self._dropped), reason, self.statistics())

    async def _one(self, arrival: Arrival) -> None:
        started = anyio.current_time()
        error: str | None = None
        result: object = None
        try:
            result = await self._send(arrival)
        except anyio.get_cancelled_exc_class():
            self._records.append(
                RequestRecord(arrival.index, arrival.scheduled, started, None, interrupted=True)
            )
            raise
        except Exception as exc:  # the request's failure is a figure of the run, not the run's failure
            error = type(exc).__name__
        finally:
            self._in_flight -= 1
        self._records.append(
            RequestRecord(
                arrival.index, arrival.scheduled, started, anyio.current_time(), error, result=result
            )
        )

"""Admission: how many requests of an endpoint one process takes at once — the endpoint's door.

The dependency gates bound calls; they cannot make overload *fast*. A dealBrain request refused
by the LLM gate has already spent 170 ms on embed and search, and one that waits for it makes
every answer slower. So each endpoint has a door, sized by Little's law from the budget — the
throughput its scarcest dependency (the *bottleneck*) carries, times the time a request takes:

    X  = min over dependencies d of  limit_d / (calls_d x typical_latency_d)
    N0 = ceil(X x T x HEADROOM)          T = the endpoint's critical path, typical request

(`SHAPES` describes the typical request of each endpoint). A request that finds ``N`` requests
inside is refused at once with 429, in front of the web framework (`_front_door`): no downstream
work, no wait, no body parsing: a few dictionary operations.

``N0`` is the door's ceiling. Below it the door follows latency (`floodgate.AdaptiveLimit`, on
by default: ``[endpoints.<name>.admission]`` in the budget): when completed requests take longer
than ``latency_tolerance`` times their recent best — the process is slower than the budget
assumes (CPU contention, a slow provider) — it admits fewer, down to ``min_fraction`` of N0, so
the extra load is refused at once instead of queueing inside. It never admits more than N0: a
door that grew when requests got slower (to keep the bottleneck busy) fed on itself when the
slowness came from the load, as the overload benchmark showed. The budget is the source of
truth for the ceiling: change ``typical_latency`` or the limits there.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import floodgate

__all__ = [
    "HEADROOM",
    "SHAPES",
    "Door",
    "DoorStatistics",
    "EndpointCapacity",
    "EndpointShape",
    "endpoint_capacity",
    "make_door",
    "make_doors",
]

#: Little's law on the budget's typical latencies leaves out the service's own time per request
#: (parsing, JSON, scheduling: a request at low load takes a little longer than its critical
#: path), so the ceiling admits 5 % more: 26 for dealBrain. More headroom only adds waiting (a
#: higher p99 under overload for no more goodput); less leaves the LLM idle. The overload
#: benchmark chose the value (docs/benchmarks.md).
HEADROOM = 1.05


@dataclass(frozen=True)
class EndpointShape:
    """A typical request: calls per dependency, and its critical path from typical latencies."""

    calls: Callable[[floodgate.EndpointPolicy], Mapping[str, int]]
    critical_path: Callable[[Mapping[str, float], floodgate.EndpointPolicy], float]


def _rounds(n: int, policy: floodgate.EndpointPolicy) -> int:
    return math.ceil(n / policy.fan_out)


# shadowHunter and nexusAssess vary with the request; their typical request uses the defaults of
# the request models (4 queries, 4 extractions) and a rubric of `fan_out` criteria.
SHAPES: dict[str, EndpointShape] = {
    "deal_brain": EndpointShape(
        calls=lambda p: {"embed": 1, "db": 1, "search": 1, "rerank": 1, "llm": 1},
        critical_path=lambda t, p: max(t["embed"] + t["db"], t["search"]) + t["rerank"] + t["llm"],
    ),
    "shadow_hunter": EndpointShape(
        calls=lambda p: {"llm": 1 + 4, "search": 4},
        critical_path=lambda t, p: t["llm"] + _rounds(4, p) * t["search"] + _rounds(4, p) * t["llm"],
    ),
    "nexus_assess": EndpointShape(
        calls=lambda p: {"llm": p.fan_out},
        critical_path=lambda t, p: _rounds(p.fan_out, p) * t["llm"],
    ),
}


@dataclass(frozen=True)
class EndpointCapacity:
    """What the budget implies for one endpoint in one process."""

    endpoint: str
    rps: float  # requests per second one process carries
    bottleneck: str  # the dependency that sets it
    latency: float  # typical time of one request (critical path), s
    bottleneck_latency: float  # typical time of the request's bottleneck steps, s
    in_flight: int  # N0: requests admitted at once at the typical latencies

    def describe(self) -> str:
        return (
            f"{self.endpoint} carries {self.rps:.3g} requests/s per process (set by the {self.bottleneck} "
            f"budget) at {self.latency * 1000:.0f} ms each: {self.in_flight} in flight"
        )


def endpoint_capacity(
    budget: floodgate.Budget, endpoint: str, *, service: str = "online"
) -> EndpointCapacity:
    """What the budget implies for ``endpoint`` in one process of ``service``."""
    policy = budget.endpoint(endpoint)
    shape = SHAPES[endpoint]
    calls = shape.calls(policy)
    latencies = {name: budget.dependency(name).typical_latency for name in calls}
    rates = {
        name: budget.process_limit(service, name) / (n * latencies[name]) for name, n in calls.items() if n
    }
    bottleneck = min(rates, key=rates.__getitem__)
    rps = rates[bottleneck]
    latency = shape.critical_path(latencies, policy)
    only_bottleneck = {name: (t if name == bottleneck else 0.0) for name, t in latencies.items()}
    bottleneck_latency = shape.critical_path(only_bottleneck, policy)
    in_flight = max(1, math.ceil(rps * latency * HEADROOM))
    return EndpointCapacity(endpoint, rps, bottleneck, latency, bottleneck_latency, in_flight)


@dataclass(frozen=True)
class DoorStatistics:
    endpoint: str
    in_flight: int
    limit: int
    admitted_total: int
    refused_total: int


class Door:
    """At most `limit` requests of one endpoint inside; the rest refused at once.

    ``door.enter()`` raises `floodgate.Overloaded` (429, ``Retry-After: 1``, naming the
    bottleneck dependency) when full; pair every successful ``enter`` with one ``leave``. Both
    are synchronous: nothing here waits. `try_enter` is the non-raising twin.

    The limit is ``capacity.in_flight`` or, with ``adaptive``, an `floodgate.AdaptiveLimit`
    under that ceiling fed by `observe` (the latency of each completed request) and by
    ``bottleneck_waiting`` (how many wait at the bottleneck's gate, read on each entry).
    """

    def __init__(
        self,
        capacity: EndpointCapacity,
        *,
        metrics: floodgate.FloodgateMetrics | None = None,
        adaptive: floodgate.AdaptiveLimit | None = None,
        bottleneck_waiting: Callable[[], int] | None = None,
    ):
        if adaptive is not None and adaptive.ceiling != capacity.in_flight:
            raise ValueError("the adaptive limit's ceiling must be the capacity's in_flight")
        self.capacity = capacity
        self.name = f"admission_{capacity.endpoint}"
        self.adaptive = adaptive
        self._bottleneck_waiting = bottleneck_waiting if adaptive is not None else None
        self._in_flight = 0
        self._admitted = 0
        self._refused = 0
        self._metrics = metrics
        if metrics is not None:
            self._m_in_use = metrics.gate_in_use.labels(self.name)
            self._m_refused = metrics.rejections.labels(self.name, "admission")
            self._m_capacity = metrics.gate_capacity.labels(self.name)
            self._m_capacity.set(self.limit)

    @property
    def limit(self) -> int:
        """Requests admitted at once now (the adaptive limit, or the budget's number)."""
        adaptive = self.adaptive
        return self.capacity.in_flight if adaptive is None else adaptive.limit

    def try_enter(self) -> bool:
        """Take a place if one is free; False (counted as a refusal) when the door is full.

        The twin of `enter` for callers that answer the refusal themselves (the ASGI front door,
        `services.online._front_door`): no exception is built on the hot path of overload.
        """
        adaptive = self.adaptive
        if adaptive is not None:
            adaptive.note_in_flight(self._in_flight + 1)
            if self._bottleneck_waiting is not None:
                adaptive.note_queue(self._bottleneck_waiting())
        if self._in_flight >= self.limit:
            self._refused += 1
            if self._metrics is not None:
                self._m_refused.inc()
            return False
        self._in_flight += 1
        self._admitted += 1
        if self._metrics is not None:
            self._m_in_use.set(self._in_flight)
        return True

    def enter(self) -> None:
        """Take a place, or raise `floodgate.Overloaded` naming the bottleneck's budget."""
        if not self.try_enter():
            raise self.refusal()

    def refusal(self) -> floodgate.Overloaded:
        """The error a refused request gets: 429, ``Retry-After: 1``, the bottleneck named."""
        return floodgate.Overloaded(
            f"{self.capacity.endpoint} is at its limit of {self.limit} requests in flight "
            f"(the {self.capacity.bottleneck} budget carries {self.capacity.rps:.3g} requests/s)",
            dependency=self.capacity.bottleneck,
            retry_after=1.0,
        )

    def leave(self) -> None:
        if self._in_flight <= 0:
            raise RuntimeError(f"{self.name}: leave() without enter()")
        self._in_flight -= 1
        if self._metrics is not None:
            self._m_in_use.set(self._in_flight)

    def observe(self, latency: float, now: float) -> None:
        """Feed the adaptive limit one completed request's latency (no-op for a static door).

        Only requests whose time says something about capacity: answers and server-side failures
        (5xx, including deadline 504s), not client errors that end before any downstream work.
        """
        adaptive = self.adaptive
        if adaptive is not None and adaptive.observe(latency, now) and self._metrics is not None:
            self._m_capacity.set(adaptive.limit)

    def statistics(self) -> DoorStatistics:
        return DoorStatistics(
            self.capacity.endpoint, self._in_flight, self.limit, self._admitted, self._refused
        )

    def __repr__(self) -> str:
        return (
            f"<Door {self.capacity.endpoint!r} in_flight={self._in_flight}/{self.limit} "
            f"admitted={self._admitted} refused={self._refused}>"
        )


def make_doors(
    budget: floodgate.Budget,
    metrics: floodgate.FloodgateMetrics | None = None,
    gates: Mapping[str, floodgate.Gate] | None = None,
) -> dict[str, Door]:
    return {name: make_door(budget, name, metrics, gates) for name in SHAPES}


def make_door(
    budget: floodgate.Budget,
    endpoint: str,
    metrics: floodgate.FloodgateMetrics | None = None,
    gates: Mapping[str, floodgate.Gate] | None = None,
) -> Door:
    """The endpoint's door as the budget describes it (static or adaptive, with its ceiling);
    ``gates`` (dependency -> its gate) lets an adaptive door watch its bottleneck's queue."""
    capacity = endpoint_capacity(budget, endpoint)
    policy = budget.endpoint(endpoint).admission
    if not policy.adaptive:
        return Door(capacity, metrics=metrics)
    gate = (gates or {}).get(capacity.bottleneck)
    adaptive = floodgate.AdaptiveLimit(
        capacity.in_flight,
        floor=max(1, math.ceil(capacity.in_flight * policy.min_fraction)),
        tolerance=policy.latency_tolerance,
        baseline_window=policy.baseline_window,
        queue_allowance=policy.bottleneck_queue if gate is not None else None,
    )
    waiting = (lambda: gate.waiting) if gate is not None else None
    return Door(capacity, metrics=metrics, adaptive=adaptive, bottleneck_waiting=waiting)

"""Admission: how many requests of an endpoint one process takes at once, derived from the budget.

The dependency gates bound calls; they cannot make overload *fast*. A dealBrain request that is
refused by the LLM gate has already spent 170 ms on embed and search, and one that waits for it
makes every answer slower. So each endpoint has one more gate, at its door, sized by Little's law
from the budget — the throughput its scarcest dependency carries, times the time a request takes:

    throughput X = min over dependencies d of  limit_d / (calls_d x latency_d)
    in flight  N = ceil(X x T x headroom)        T = the endpoint's critical path

with ``limit_d`` the per-process limit, ``latency_d`` the budget's ``typical_latency`` and
``calls_d``/``T`` from the endpoint's *typical request* (`SHAPES`). A request that finds the door
full waits at most ``ADMISSION_MAX_WAIT`` and is then refused with 429 — in milliseconds, before
any downstream work. The same numbers tell the overload benchmark what "1x capacity" is.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import floodgate

__all__ = [
    "ADMISSION_MAX_WAIT",
    "HEADROOM",
    "SHAPES",
    "Admission",
    "EndpointCapacity",
    "EndpointShape",
    "endpoint_capacity",
    "make_admission",
]

#: Admit a little more than Little's law says, so jitter does not leave the scarcest budget idle;
#: the excess waits briefly at that dependency's gate.
HEADROOM = 1.1
#: A request waits this long at most for a free place at the door, then gets its 429.
ADMISSION_MAX_WAIT = 0.02


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
        critical_path=lambda t, p: t["llm"],
    ),
}


@dataclass(frozen=True)
class EndpointCapacity:
    endpoint: str
    rps: float  # requests per second one process carries
    bottleneck: str  # the dependency that sets it
    latency: float  # typical time of one request (critical path)
    in_flight: int  # requests admitted at once

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
    in_flight = max(1, math.ceil(rps * latency * HEADROOM))
    return EndpointCapacity(endpoint, rps, bottleneck, latency, in_flight)


class Admission:
    """The door of one endpoint: a `floodgate.Gate` of ``capacity.in_flight`` places, fair
    between tenants, whose refusal names the dependency whose budget sets the limit."""

    def __init__(self, capacity: EndpointCapacity, *, metrics: floodgate.FloodgateMetrics | None = None):
        self.capacity = capacity
        self.gate = floodgate.Gate(
            f"admission_{capacity.endpoint}",
            capacity.in_flight,
            max_waiters=max(1, math.ceil(capacity.rps * ADMISSION_MAX_WAIT)),
            max_wait=ADMISSION_MAX_WAIT,
            retry_after=1.0,
            metrics=metrics,
        )

    async def acquire(self, tenant: str) -> None:
        try:
            await self.gate.acquire(tenant)
        except floodgate.Overloaded as exc:
            raise floodgate.Overloaded(
                f"{self.capacity.endpoint} is at its limit of {self.capacity.in_flight} requests in flight "
                f"(the {self.capacity.bottleneck} budget carries {self.capacity.rps:.3g} requests/s)",
                dependency=self.capacity.bottleneck,
                retry_after=exc.retry_after,
            ) from None

    def release(self, tenant: str) -> None:
        self.gate.release(tenant)

    def __repr__(self) -> str:
        return f"<Admission {self.gate!r}>"


def make_admission(
    budget: floodgate.Budget, metrics: floodgate.FloodgateMetrics | None = None
) -> dict[str, Admission]:
    return {name: Admission(endpoint_capacity(budget, name), metrics=metrics) for name in SHAPES}

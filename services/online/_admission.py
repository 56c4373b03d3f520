"""Admission: how many requests of an endpoint one process takes at once — the endpoint's door.

The dependency gates bound calls; they cannot make overload *fast*. A dealBrain request refused
by the LLM gate has already spent 170 ms on embed and search, and one that waits for it makes
every answer slower. So each endpoint has a door (a `floodgate.Door`, configured here), sized
from the budget — the throughput its scarcest dependency (the *bottleneck*) carries, times the
time a request takes, is the load it must hold (Little's law):

    X  = min over dependencies d of  limit_d / (calls_d x typical_latency_d)
    R  = X x T x HEADROOM                T = the endpoint's critical path, typical request
    N0 = the fewest places with ErlangB(N0, R) <= DOOR_LOSS    (`floodgate._plan.door_ceiling`)

A door refuses when full, so for random arrivals it is a loss system: with only ``R`` places it
would refuse much of the load the bottleneck could still take. Sized for a small loss at ``X``,
it sheds only the load beyond the bottleneck.

(`Endpoint.shape` describes the typical request of each endpoint). A request that finds ``N`` requests
inside is refused at once with 429, in front of the web framework (`_front_door`): no downstream
work, no wait, no body parsing: a few dictionary operations.

``N0`` is the door's ceiling. Below it the door follows the bottleneck's queue and the latency
(`floodgate.AdaptiveLimit`, on by default: ``[endpoints.<name>.admission]`` in the budget): while
requests wait at the bottleneck's gate, and completed requests take longer than
``latency_tolerance`` times their recent best, it admits fewer, down to ``min_fraction`` of N0, so
the extra load is refused at once instead of queueing inside. Slower answers with nothing waiting
(a provider slower than before) are not a reason: at the same rate they need more in flight. It never admits more than N0: a
door that grew when requests got slower (to keep the bottleneck busy) fed on itself when the
slowness came from the load, as the overload benchmark showed. The budget is the source of
truth for the ceiling: change ``typical_latency`` or the limits there.

The limits are this process's share: the planned one, or with membership the live one — when the
live processes divide a provider anew, `resize_doors` sizes every door again from the shares they
hold now, so the doors of all processes together admit what the global limits carry.

With ``tenant_share`` in ``[endpoints.<name>.admission]`` (or a tenant's ``share`` override in
``[tenants]``) one tenant holds at most its share of the door's limit now; a tenant at its share
gets 429 ``tenant_share_exceeded`` while the others still get in (docs/tenants.md).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import floodgate
from floodgate._plan import ADMISSION_HEADROOM, bottleneck_rate, door_ceiling
from prometheus_client import CollectorRegistry

from ._endpoints import ENDPOINTS, EndpointShape

__all__ = [
    "HEADROOM",
    "SHAPES",
    "EndpointCapacity",
    "EndpointShape",
    "endpoint_capacity",
    "make_door",
    "make_doors",
    "record_problems",
    "resize_doors",
]

#: the ceiling's headroom over Little's law (one home: `floodgate._plan`, which counts the door
#: in the plan's capacity with the same `door_ceiling`)
HEADROOM = ADMISSION_HEADROOM


#: endpoint name -> its typical request (`Endpoint.shape`, from the endpoint records).
SHAPES: dict[str, EndpointShape] = {endpoint.name: endpoint.shape for endpoint in ENDPOINTS}


@dataclass(frozen=True)
class EndpointCapacity:
    """What the budget implies for one endpoint in one process."""

    endpoint: str
    rps: float  # requests per second one process carries
    bottleneck: str  # the dependency that sets it
    latency: float  # typical time of one request (critical path), s
    bottleneck_latency: float  # typical time of the request's bottleneck steps, s
    in_flight: int  # N0: requests admitted at once at the typical latencies
    bottleneck_calls: float = 1.0  # calls a request makes to the bottleneck
    bottleneck_call_latency: float = 0.0  # typical time of one of them, s

    @property
    def queue_cost(self) -> float:
        """What one waiter at the bottleneck's gate costs a request, in the gate's completion
        times (`floodgate.AdaptiveLimit`'s ``queue_cost``): the calls it waits for one after
        another (its critical path through the bottleneck) over the calls it makes there. A
        rubric's four criteria at once pass the gate four times and wait once."""
        if not self.bottleneck_call_latency:
            return 1.0
        return self.bottleneck_latency / self.bottleneck_call_latency / self.bottleneck_calls

    def describe(self) -> str:
        return (
            f"{self.endpoint} carries {self.rps:.3g} requests/s per process (set by the {self.bottleneck} "
            f"budget) at {self.latency * 1000:.0f} ms each: {self.in_flight} in flight"
        )


def endpoint_capacity(
    budget: floodgate.Budget,
    endpoint: str,
    *,
    service: str = "online",
    limits: Mapping[str, int] | None = None,
) -> EndpointCapacity:
    """What the budget implies for ``endpoint`` in one process of ``service``: at the planned
    per-process limits, or at ``limits`` (dependency -> this process's limit now, its live share;
    a dependency it does not name keeps the planned one). A process that holds nothing of a
    dependency the endpoint needs carries nothing: 0 in flight."""
    policy = budget.endpoint(endpoint)
    shape = SHAPES[endpoint]
    calls = shape.calls(policy)
    latencies = {name: budget.dependency(name).typical_latency for name in calls}
    bottleneck, rps = bottleneck_rate(budget, service, calls, limits)
    latency = shape.critical_path(latencies, policy)
    only_bottleneck = {name: (t if name == bottleneck else 0.0) for name, t in latencies.items()}
    bottleneck_latency = shape.critical_path(only_bottleneck, policy)
    in_flight = door_ceiling(rps, latency)
    return EndpointCapacity(
        endpoint,
        rps,
        bottleneck,
        latency,
        bottleneck_latency,
        in_flight,
        bottleneck_calls=calls[bottleneck],
        bottleneck_call_latency=latencies[bottleneck],
    )


def record_problems(budget: floodgate.Budget) -> list[str]:
    """Where the budget's ``calls`` and ``critical_path`` of an endpoint disagree with its record here
    (`Endpoint.shape`): `floodgate plan` predicts from the budget's, the door from the record's, so
    the service refuses to start unless they are the same. A budget that states neither is not
    checked (its plan has no capacity for the endpoint)."""
    problems = []
    for name, shape in SHAPES.items():
        policy = budget.endpoint(name)
        if not policy.calls:
            continue
        calls = {dep: n for dep, n in shape.calls(policy).items() if n}
        if dict(policy.calls) != calls:
            wanted = ", ".join(f"{dep} = {n}" for dep, n in calls.items())
            problems.append(f"endpoints.{name}.calls: the endpoint makes {{ {wanted} }}")
        latencies = {dep: budget.dependency(dep).typical_latency for dep in calls}
        record, stated = shape.critical_path(latencies, policy), policy.path_latency(latencies)
        if not math.isclose(record, stated, rel_tol=1e-9):
            problems.append(
                f"endpoints.{name}.critical_path: takes {stated * 1000:g} ms at the typical latencies, "
                f"the endpoint's {record * 1000:g} ms"
            )
    return problems


def make_doors(
    budget: floodgate.Budget,
    registry: CollectorRegistry | None = None,
    gates: Mapping[str, floodgate.Gate] | None = None,
) -> dict[str, floodgate.Door]:
    return {e.name: make_door(budget, e.name, registry, gates) for e in ENDPOINTS}


def make_door(
    budget: floodgate.Budget,
    endpoint: str,
    registry: CollectorRegistry | None = None,
    gates: Mapping[str, floodgate.Gate] | None = None,
) -> floodgate.Door:
    """The endpoint's `floodgate.Door` as the budget describes it: its ceiling from
    `endpoint_capacity`, static or adaptive (``[endpoints.<name>.admission]``), refusals naming the
    bottleneck (429, ``Retry-After: 1``), each tenant capped at its share (the budget's tenant
    table); ``gates`` (dependency -> its gate) lets an adaptive door watch its bottleneck's queue."""
    capacity = endpoint_capacity(budget, endpoint)
    policy = budget.endpoint(endpoint).admission
    adaptive = waiting = None
    if policy.adaptive:
        gate = (gates or {}).get(capacity.bottleneck)
        adaptive = floodgate.AdaptiveLimit(
            capacity.in_flight,
            floor=_floor(capacity.in_flight, policy),
            tolerance=policy.latency_tolerance,
            baseline_window=policy.baseline_window,
            queue_allowance=policy.bottleneck_queue if gate is not None else None,
            queue_cost=capacity.queue_cost,
        )
        if gate is not None:
            # callers waiting for capacity only: a tenant queueing behind its own share (tenant_share)
            # is not a full bottleneck, and must not shrink the door for every tenant
            waiting = lambda: gate.waiting_for_capacity  # noqa: E731
    return floodgate.Door(
        endpoint,
        capacity.in_flight,
        adaptive=adaptive,
        waiting=waiting,
        dependency=capacity.bottleneck,
        retry_after=1.0,
        detail=_detail(capacity),
        tenants=budget.tenants,
        registry=registry,
    )


def resize_doors(
    budget: floodgate.Budget, doors: Mapping[str, floodgate.Door], limits: Mapping[str, int]
) -> None:
    """Size each endpoint's door for this process's share of each dependency now (``limits``:
    dependency -> its limit; membership changes them as processes join and leave): the ceiling
    `endpoint_capacity` gives at those limits, so the doors of the live processes together admit
    what the global limits carry, as one process's door does at the planned share. An adaptive
    door keeps its learned place under the ceiling and its floor is ``min_fraction`` of it again;
    requests inside stay (`Door.resize`). It keeps watching the queue of the gate it was made
    with, the planned bottleneck; only a share far from the planned one moves the bottleneck."""
    for name, door in doors.items():
        capacity = endpoint_capacity(budget, name, limits=limits)
        if capacity.in_flight == door.ceiling:
            continue
        policy = budget.endpoint(name).admission
        floor = _floor(capacity.in_flight, policy) if door.adaptive is not None else None
        door.resize(capacity.in_flight, floor=floor)
        door.dependency = capacity.bottleneck
        door.detail = _detail(capacity)


def _floor(in_flight: int, policy: floodgate.AdmissionPolicy) -> int:
    """The adaptive door's floor: ``min_fraction`` of its ceiling, at least 1 (0 with no room)."""
    return max(1, math.ceil(in_flight * policy.min_fraction)) if in_flight else 0


def _detail(capacity: EndpointCapacity) -> str:
    """What sets the door's limit, for its refusals."""
    return f"the {capacity.bottleneck} budget carries {capacity.rps:.3g} requests/s"

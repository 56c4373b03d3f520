"""The online service's app factory: shadowHunter, nexusAssess and dealBrain behind one chassis app.

The routes, their doors and the OpenAPI document are derived from the endpoint records
(`_endpoints.ENDPOINTS`). Each route does the same edge work, in this order, before any downstream
is touched:

1. the tenant from the gateway's header (401/400),
2. admission: a place among the requests the endpoint may have in flight (`_admission`: derived
   from the budget by Little's law), or a 429 at once — checked in front of Quart by
   `_front_door.FrontDoor`, so a refused request costs no framework work at all,
3. the body: size against the endpoint's ``max_body_bytes`` (413), JSON (400), fields (422),
   limits from the budget file such as ``max_items`` (422),
4. the request deadline: the endpoint's, or a shorter one from ``x-envoy-expected-rq-timeout-ms``,
   as a cancel scope around the endpoint's logic (504 when it passes).

Toolkit errors propagate to the chassis, which renders them (429/503/504/502 + ``Retry-After``).
Every response of an endpoint carries ``Server-Timing``; the chassis adds ``x-request-id``. A
response whose request used LLM tokens or priced calls carries them (`providers.USAGE_TOKENS_HEADER`,
`providers.USAGE_COST_HEADER`) for the gateway's token and cost budgets, which removes them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import chassis
import floodgate
import providers
from prometheus_client import CollectorRegistry, Counter
from pydantic import BaseModel
from quart import Response, g, jsonify, request
from quart_trio import QuartTrio

from ._admission import make_doors, record_problems
from ._context import Downstreams, RequestContext
from ._endpoints import ENDPOINTS, Endpoint
from ._front_door import DoorRoute, FrontDoor
from ._openapi import build_openapi
from ._timing import ServerTiming
from .settings import OnlineSettings

__all__ = ["OnlineState", "create_app", "online_state"]

M = TypeVar("M", bound=BaseModel)

#: A degradable step is cut this share of the deadline (at most MAX_RESERVE s) before it, so the
#: request can still answer with the fallback rather than a 504.
RESERVE_SHARE = 0.1
MAX_RESERVE = 0.5


@dataclass(frozen=True)
class OnlineState:
    """App-lifetime objects of the online service (``app.extensions["online"]``)."""

    budget: floodgate.Budget
    downstreams: Downstreams
    registry: CollectorRegistry
    assessments: floodgate.TTLCache | None
    doors: Mapping[str, floodgate.Door]
    openapi: dict[str, Any]
    #: answers served with at least one step fallen back, by route (the degraded share per endpoint)
    degraded_responses: Counter


def online_state(app: QuartTrio) -> OnlineState:
    return app.extensions["online"]


def create_app(
    settings: OnlineSettings,
    *,
    budget: floodgate.Budget,
    downstreams: Downstreams,
    registry: CollectorRegistry | None = None,
    readiness: Mapping[str, chassis.ReadinessCheck] | None = None,
    doors: Mapping[str, floodgate.Door] | None = None,
) -> QuartTrio:
    """The app, with its providers already opened (see `services.online._wiring`); ``doors``
    (endpoint -> its door, `Wired.doors`: watching their bottleneck's queue, following this
    process's share) default to doors made here from the planned share, watching nothing.
    Raises `chassis.StartupError` when an endpoint's failure policy in the budget (``required`` and
    ``degradable``) does not name exactly the dependencies it calls."""
    registry = registry if registry is not None else CollectorRegistry()
    policies = [budget.endpoint(endpoint.name) for endpoint in ENDPOINTS]
    problems = [
        problem
        for endpoint, policy in zip(ENDPOINTS, policies, strict=True)
        for problem in budget.failure_policy_problems(endpoint.name, endpoint.shape.calls(policy))
    ]
    problems += record_problems(budget)  # the plan's calls and critical paths are the endpoints'
    if problems:
        raise chassis.StartupError(str(floodgate.BudgetError(problems)))
    app = chassis.create_app(
        "online",
        registry=registry,
        readiness=readiness,
        # The app-wide ceiling; each endpoint checks its own, smaller limit from the budget.
        max_body_bytes=max([settings.max_body_bytes, *(p.max_body_bytes for p in policies)]),
    )
    app.json.sort_keys = False  # responses keep the field order of their models
    nexus = budget.endpoint("nexus_assess")
    assessments = (
        floodgate.TTLCache(nexus.cache_ttl, max_entries=10_000, name="nexus_assess", registry=registry)
        if nexus.cache_ttl
        else None
    )
    if doors is None:
        doors = make_doors(budget, registry)
    degraded_responses = Counter(
        "online_degraded_responses",
        "Answers served with at least one step fallen back, by route",
        ["route"],
        registry=registry,
    )
    state = OnlineState(
        budget, downstreams, registry, assessments, doors, build_openapi(budget), degraded_responses
    )
    app.extensions["online"] = state
    _install_routes(app, state)
    app.asgi_app = FrontDoor(  # type: ignore[method-assign]
        app.asgi_app,
        [
            DoorRoute(endpoint.path, doors[endpoint.name], policy.max_body_bytes, endpoint.method)
            for endpoint, policy in zip(ENDPOINTS, policies, strict=True)
        ],
        chassis_state=chassis.chassis_state(app),
    )
    return app


# -- the edge work every endpoint shares --------------------------------------------------------------


async def _read_body(model: type[M], limit: int) -> M:
    declared = request.content_length
    if declared is not None and declared > limit:
        raise _too_large(limit)
    raw = await request.get_data(cache=True)
    if len(raw) > limit:  # chunked bodies declare no length
        raise _too_large(limit)
    return await chassis.parse_body(model)


def _too_large(limit: int) -> chassis.ApiError:
    return chassis.ApiError(
        413,
        "body_too_large",
        f"request body is larger than the limit of {limit} bytes",
        details={"limit_bytes": limit},
    )


async def _handle(endpoint: Endpoint, state: OnlineState) -> Response:
    timing = ServerTiming()
    g.server_timing = timing
    tenant = chassis.require_tenant()
    # Admitted already: `FrontDoor` holds this request's place at the endpoint's door.
    policy = state.budget.endpoint(endpoint.name)
    body = await _read_body(endpoint.request, policy.max_body_bytes)
    endpoint.check(body, policy)
    seconds = floodgate.deadline_from_headers(request.headers, policy.deadline)
    assert seconds is not None  # the endpoint's own deadline is never None
    ctx = RequestContext(
        tenant=tenant,
        endpoint=endpoint.name,
        policy=policy,
        timing=timing,
        degradations=floodgate.Degradations(registry=state.registry),
        reserve=min(MAX_RESERVE, RESERVE_SHARE * seconds),
    )
    # What the request's calls use is reported to the gateway in response headers (after_request
    # below), on errors too: tokens a request spent count against the tenant's budget either way.
    try:
        with floodgate.deadline_after(seconds), providers.metering_request() as g.usage:
            result = await endpoint.handler(body, ctx, state)
    except floodgate.DeadlineExceeded as exc:
        if exc.dependency is not None:
            raise
        raise _deadline_error(endpoint.name, seconds, timing) from None
    if ctx.degradations.steps:
        state.degraded_responses.labels(endpoint.path).inc()
    # pydantic serialises in Rust, in the models' field order: a fraction of the CPU of
    # model_dump() followed by the json module.
    return Response(result.model_dump_json(), content_type="application/json")


def _deadline_error(endpoint: str, seconds: float, timing: ServerTiming) -> floodgate.DeadlineExceeded:
    """Name what the request was waiting for when its deadline passed."""
    cut = timing.cancelled_steps()
    waiting = sorted({s.name for s in cut})
    dependencies = sorted({s.dependency for s in cut if s.dependency})
    reason = f"{endpoint} deadline of {seconds:g}s passed"
    if waiting:
        reason += f" while waiting for {', '.join(waiting)}"
    return floodgate.DeadlineExceeded(reason, dependency=dependencies[0] if len(dependencies) == 1 else None)


def _install_routes(app: QuartTrio, state: OnlineState) -> None:
    @app.after_request
    async def _server_timing(response: Response) -> Response:
        timing = getattr(g, "server_timing", None)
        if timing is not None:
            response.headers["Server-Timing"] = timing.header()
        usage = getattr(g, "usage", None)
        if usage is not None:
            response.headers.update(usage.headers())
        return response

    for endpoint in ENDPOINTS:
        app.add_url_rule(endpoint.path, endpoint.name, _view(endpoint, state), methods=[endpoint.method])

    @app.get("/openapi.json")
    async def openapi() -> Response:
        return jsonify(state.openapi)


def _view(endpoint: Endpoint, state: OnlineState) -> Callable[[], Awaitable[Response]]:
    async def view() -> Response:
        return await _handle(endpoint, state)

    view.__name__ = endpoint.name
    return view

"""The online service's app factory: shadowHunter, nexusAssess and dealBrain behind one chassis app.

Each route does the same edge work, in this order, before any downstream is touched:

1. the tenant from the gateway's header (401/400),
2. admission: a place among the requests the endpoint may have in flight (`_admission`: derived
   from the budget by Little's law), or a 429 at once — checked in front of Quart by
   `_front_door.FrontDoor`, so a refused request costs no framework work at all,
3. the body: size against the endpoint's ``max_body_bytes`` (413), JSON (400), fields (422),
   limits from the budget file such as ``max_items`` (422),
4. the request deadline: the endpoint's, or a shorter one from ``x-envoy-expected-rq-timeout-ms``,
   as a cancel scope around the endpoint's logic (504 when it passes).

Toolkit errors propagate to the chassis, which renders them (429/503/504/502 + ``Retry-After``).
Every response of an endpoint carries ``Server-Timing``; the chassis adds ``x-request-id``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import chassis
import floodgate
from prometheus_client import CollectorRegistry
from pydantic import BaseModel
from quart import Response, g, jsonify, request
from quart_trio import QuartTrio

from ._admission import SHAPES, make_doors
from ._context import Downstreams, RequestContext
from ._deal_brain import answer_question
from ._front_door import DoorRoute, FrontDoor
from ._models import DealBrainRequest, NexusAssessRequest, ShadowHunterRequest
from ._nexus_assess import assess
from ._openapi import build_openapi
from ._shadow_hunter import hunt
from ._timing import ServerTiming
from .settings import OnlineSettings

__all__ = ["PATHS", "OnlineState", "create_app", "online_state"]

#: The route of each endpoint.
PATHS = {
    "deal_brain": "/v1/deal-brain/answers",
    "shadow_hunter": "/v1/shadow-hunter/hunts",
    "nexus_assess": "/v1/nexus-assess/assessments",
}

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


def online_state(app: QuartTrio) -> OnlineState:
    return app.extensions["online"]


def create_app(
    settings: OnlineSettings,
    *,
    budget: floodgate.Budget,
    downstreams: Downstreams,
    registry: CollectorRegistry | None = None,
    readiness: Mapping[str, chassis.ReadinessCheck] | None = None,
    gates: Mapping[str, floodgate.Gate] | None = None,
) -> QuartTrio:
    """The app, with its providers already opened (see `services.online._wiring`); ``gates``
    (dependency -> gate, `Wired.gates`) lets the endpoint doors watch their bottleneck's queue.
    Raises `chassis.StartupError` when an endpoint's failure policy in the budget (``required`` and
    ``degradable``) does not name exactly the dependencies it calls."""
    registry = registry if registry is not None else CollectorRegistry()
    policies = [budget.endpoint(name) for name in ("deal_brain", "shadow_hunter", "nexus_assess")]
    problems = [
        problem
        for name, shape in SHAPES.items()
        for problem in budget.failure_policy_problems(name, shape.calls(budget.endpoint(name)))
    ]
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
    doors = make_doors(budget, registry, gates)
    state = OnlineState(budget, downstreams, registry, assessments, doors, build_openapi(budget))
    app.extensions["online"] = state
    _install_routes(app, state)
    app.asgi_app = FrontDoor(  # type: ignore[method-assign]
        app.asgi_app,
        [DoorRoute(PATHS[name], door, budget.endpoint(name).max_body_bytes) for name, door in doors.items()],
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


def _too_many(field: str, count: int, limit: int) -> chassis.ApiError:
    message = f"at most {limit} allowed by the budget (max_items), got {count}"
    return chassis.ApiError(
        422,
        "invalid_request",
        f"invalid field(s): {field}",
        details=[{"field": field, "message": message, "type": "too_long"}],
    )


async def _handle(
    endpoint: str,
    model: type[M],
    check: Callable[[M, floodgate.EndpointPolicy], None],
    run: Callable[[M, RequestContext], Awaitable[BaseModel]],
    state: OnlineState,
) -> Response:
    timing = ServerTiming()
    g.server_timing = timing
    tenant = chassis.require_tenant()
    # Admitted already: `FrontDoor` holds this request's place at the endpoint's door.
    policy = state.budget.endpoint(endpoint)
    body = await _read_body(model, policy.max_body_bytes)
    check(body, policy)
    seconds = floodgate.deadline_from_headers(request.headers, policy.deadline)
    assert seconds is not None  # the endpoint's own deadline is never None
    ctx = RequestContext(
        tenant=tenant,
        policy=policy,
        timing=timing,
        degradations=floodgate.Degradations(registry=state.registry),
        reserve=min(MAX_RESERVE, RESERVE_SHARE * seconds),
    )
    try:
        with floodgate.deadline_after(seconds):
            result = await run(body, ctx)
    except floodgate.DeadlineExceeded as exc:
        if exc.dependency is not None:
            raise
        raise _deadline_error(endpoint, seconds, timing) from None
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


def _check_deal_brain(body: DealBrainRequest, policy: floodgate.EndpointPolicy) -> None:
    if policy.max_items is not None and body.top_k > policy.max_items:
        raise _too_many("top_k", body.top_k, policy.max_items)


def _check_shadow_hunter(body: ShadowHunterRequest, policy: floodgate.EndpointPolicy) -> None:
    if policy.max_items is None:
        return
    if body.queries is not None and len(body.queries) > policy.max_items:
        raise _too_many("queries", len(body.queries), policy.max_items)
    if body.query_count > policy.max_items:
        raise _too_many("query_count", body.query_count, policy.max_items)
    if body.extract_top > policy.max_items:
        raise _too_many("extract_top", body.extract_top, policy.max_items)


def _check_nexus_assess(body: NexusAssessRequest, policy: floodgate.EndpointPolicy) -> None:
    if policy.max_items is not None and len(body.rubric) > policy.max_items:
        raise _too_many("rubric", len(body.rubric), policy.max_items)


def _install_routes(app: QuartTrio, state: OnlineState) -> None:
    down = state.downstreams

    @app.after_request
    async def _server_timing(response: Response) -> Response:
        timing = getattr(g, "server_timing", None)
        if timing is not None:
            response.headers["Server-Timing"] = timing.header()
        return response

    @app.post(PATHS["deal_brain"])
    async def deal_brain() -> Response:
        return await _handle(
            "deal_brain",
            DealBrainRequest,
            _check_deal_brain,
            lambda body, ctx: answer_question(body, ctx, down),
            state,
        )

    @app.post(PATHS["shadow_hunter"])
    async def shadow_hunter() -> Response:
        return await _handle(
            "shadow_hunter",
            ShadowHunterRequest,
            _check_shadow_hunter,
            lambda body, ctx: hunt(body, ctx, down),
            state,
        )

    @app.post(PATHS["nexus_assess"])
    async def nexus_assess() -> Response:
        return await _handle(
            "nexus_assess",
            NexusAssessRequest,
            _check_nexus_assess,
            lambda body, ctx: assess(body, ctx, down, state.assessments),
            state,
        )

    @app.get("/openapi.json")
    async def openapi() -> Response:
        return jsonify(state.openapi)

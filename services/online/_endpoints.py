"""The online endpoints, one record each: the one place an endpoint is declared.

Everything that lists the endpoints is derived from `ENDPOINTS`: the Quart routes and the checks
they run (`app`), the admission doors and their sizes (`_admission`: `Endpoint.shape`), the
ASGI front door (`_front_door`), the OpenAPI document (`_openapi`), the gateway's clusters
(``cluster/envoy.py``, which also refuses a ``gateway/envoy.yaml`` that lacks an endpoint's route or
cluster) and the benchmarks' paths. Adding an endpoint is one record here, plus its policy in
``config/budget.toml`` (``[endpoints.<name>]``), its per-tenant limit in ``config/ratelimit.yaml``
and its route and cluster in ``gateway/envoy.yaml``, each of which names it by `Endpoint.name`.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import chassis
import floodgate
from pydantic import BaseModel

from ._context import RequestContext
from ._deal_brain import answer_question
from ._models import (
    DealBrainRequest,
    DealBrainResponse,
    NexusAssessRequest,
    NexusAssessResponse,
    ShadowHunterRequest,
    ShadowHunterResponse,
)
from ._nexus_assess import assess
from ._shadow_hunter import hunt

if TYPE_CHECKING:
    from .app import OnlineState

__all__ = ["ENDPOINTS", "Endpoint", "EndpointShape"]


@dataclass(frozen=True)
class EndpointShape:
    """A typical request: calls per dependency, and its critical path from typical latencies
    (`_admission.endpoint_capacity` sizes the endpoint's door from it)."""

    calls: Callable[[floodgate.EndpointPolicy], Mapping[str, int]]
    critical_path: Callable[[Mapping[str, float], floodgate.EndpointPolicy], float]


@dataclass(frozen=True)
class Endpoint:
    """One online endpoint: where it lives, what it takes and returns, what it runs and calls.

    ``name`` is also its key everywhere else: the budget's ``[endpoints.<name>]``, the door
    (``admission_<name>``), the gateway's route and rate-limit descriptor (``route=<name>``).
    ``check`` enforces the budget's limits on a parsed body (422); ``handler`` answers it.
    """

    name: str
    path: str
    request: type[BaseModel]
    response: type[BaseModel]
    handler: Callable[[Any, RequestContext, OnlineState], Awaitable[BaseModel]]
    check: Callable[[Any, floodgate.EndpointPolicy], None]
    shape: EndpointShape
    operation_id: str
    summary: str
    description: str
    method: str = "POST"

    @property
    def cluster(self) -> str:
        """The gateway's Envoy cluster for this endpoint (its own circuit breakers)."""
        return f"online_{self.name}"

    def __repr__(self) -> str:
        return f"<Endpoint {self.name!r} {self.method} {self.path}>"


def _too_many(field: str, count: int, limit: int) -> chassis.ApiError:
    message = f"at most {limit} allowed by the budget (max_items), got {count}"
    return chassis.ApiError(
        422,
        "invalid_request",
        f"invalid field(s): {field}",
        details=[{"field": field, "message": message, "type": "too_long"}],
    )


def _rounds(n: int, policy: floodgate.EndpointPolicy) -> int:
    return math.ceil(n / policy.fan_out)


# -- dealBrain --------------------------------------------------------------------------------------


def _check_deal_brain(body: DealBrainRequest, policy: floodgate.EndpointPolicy) -> None:
    if policy.max_items is not None and body.top_k > policy.max_items:
        raise _too_many("top_k", body.top_k, policy.max_items)


async def _deal_brain(body: DealBrainRequest, ctx: RequestContext, state: OnlineState) -> DealBrainResponse:
    return await answer_question(body, ctx, state.downstreams)


DEAL_BRAIN = Endpoint(
    name="deal_brain",
    path="/v1/deal-brain/answers",
    request=DealBrainRequest,
    response=DealBrainResponse,
    handler=_deal_brain,
    check=_check_deal_brain,
    shape=EndpointShape(
        calls=lambda p: {"embed": 1, "db": 1, "search": 1, "rerank": 1, "llm": 1},
        critical_path=lambda t, p: max(t["embed"] + t["db"], t["search"]) + t["rerank"] + t["llm"],
    ),
    operation_id="createDealBrainAnswer",
    summary="dealBrain: answer a question from the tenant's documents and the web",
    description=(
        "Embeds the question; in parallel searches the tenant's chunks (pgvector) and the web "
        "(cached, coalesced); fuses the lists (reciprocal rank fusion); reranks; asks the LLM "
        "for an answer citing passages as [n] (the tenant's answer to the same question over the "
        "same passages is reused within the cache TTL). Steps the budget file lists as degradable fall "
        "back instead of failing and are listed in `degraded` (default: rerank -> fused score, "
        "llm -> passages only, answer null)."
    ),
)

# -- shadowHunter -----------------------------------------------------------------------------------


def _check_shadow_hunter(body: ShadowHunterRequest, policy: floodgate.EndpointPolicy) -> None:
    if policy.max_items is None:
        return
    if body.queries is not None and len(body.queries) > policy.max_items:
        raise _too_many("queries", len(body.queries), policy.max_items)
    if body.query_count > policy.max_items:
        raise _too_many("query_count", body.query_count, policy.max_items)
    if body.extract_top > policy.max_items:
        raise _too_many("extract_top", body.extract_top, policy.max_items)


async def _shadow_hunter(
    body: ShadowHunterRequest, ctx: RequestContext, state: OnlineState
) -> ShadowHunterResponse:
    return await hunt(body, ctx, state.downstreams)


# shadowHunter and nexusAssess vary with the request; their typical request (the `shape`) uses the
# defaults of the request models (4 queries, 4 extractions) and a rubric of `fan_out` criteria.
SHADOW_HUNTER = Endpoint(
    name="shadow_hunter",
    path="/v1/shadow-hunter/hunts",
    request=ShadowHunterRequest,
    response=ShadowHunterResponse,
    handler=_shadow_hunter,
    check=_check_shadow_hunter,
    shape=EndpointShape(
        calls=lambda p: {"llm": 1 + 4, "search": 4},
        critical_path=lambda t, p: t["llm"] + _rounds(4, p) * t["search"] + _rounds(4, p) * t["llm"],
    ),
    operation_id="createShadowHunterHunt",
    summary="shadowHunter: hunt a subject across many web searches",
    description=(
        "Expands the subject into queries with the LLM (or takes the caller's), searches them in "
        "parallel (bounded per request by fan_out and globally by the search budget), "
        "deduplicates results by URL and extracts findings from the top results with the LLM "
        "(the tenant's expansions and extractions are reused within the cache TTL). "
        "Partial results are a 200 with `complete: false` and `counts`; the request fails only "
        "when no search succeeded (with that search's error status)."
    ),
)

# -- nexusAssess ------------------------------------------------------------------------------------


def _check_nexus_assess(body: NexusAssessRequest, policy: floodgate.EndpointPolicy) -> None:
    if policy.max_items is not None and len(body.rubric) > policy.max_items:
        raise _too_many("rubric", len(body.rubric), policy.max_items)


async def _nexus_assess(
    body: NexusAssessRequest, ctx: RequestContext, state: OnlineState
) -> NexusAssessResponse:
    return await assess(body, ctx, state.downstreams, state.assessments)


NEXUS_ASSESS = Endpoint(
    name="nexus_assess",
    path="/v1/nexus-assess/assessments",
    request=NexusAssessRequest,
    response=NexusAssessResponse,
    handler=_nexus_assess,
    check=_check_nexus_assess,
    shape=EndpointShape(
        calls=lambda p: {"llm": p.fan_out},
        critical_path=lambda t, p: _rounds(p.fan_out, p) * t["llm"],
    ),
    operation_id="createNexusAssessment",
    summary="nexusAssess: score a subject against a rubric, strictly",
    description=(
        "One LLM call per criterion, in parallel under fan_out; the total is the weighted mean. "
        "Strict: if any criterion fails or the deadline passes, the whole request fails "
        "(429/503/504/502) — a partial score is never returned. Identical requests of a tenant "
        "within the cache TTL are served from the cache (`cached: true`)."
    ),
)

#: The online endpoints, in the order the OpenAPI document and the gateway list them.
ENDPOINTS: tuple[Endpoint, ...] = (DEAL_BRAIN, SHADOW_HUNTER, NEXUS_ASSESS)

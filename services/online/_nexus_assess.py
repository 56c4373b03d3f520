"""nexusAssess: score a subject against a rubric — every criterion, or a clear failure.

One LLM call per criterion, in parallel under the endpoint's ``fan_out``. This endpoint is
strict: the first criterion that fails (overload, open breaker, deadline, bad answer) cancels
the others and fails the request with its status (429/503/504/502). A partial score is never
returned as if complete. Successful assessments are cached per tenant for the endpoint's
``cache_ttl``, and identical requests in flight share one computation (see `_cache`).
"""

from __future__ import annotations

import hashlib
import json

import floodgate

from ._context import Downstreams, RequestContext
from ._fanout import gather_strict
from ._models import Criterion, CriterionScore, NexusAssessRequest, NexusAssessResponse

__all__ = ["assess", "cache_key", "score_rubric"]

_SCORE_INSTRUCTIONS = (
    "Score the subject against the criterion from 0 (not at all) to 10 (fully), using only the "
    'evidence given. Answer JSON: {"score": integer 0..10, "rationale": string}.'
)


def cache_key(tenant: str, req: NexusAssessRequest) -> tuple[str, str]:
    """Tenant plus a digest of the canonical request: identical requests of one tenant share it,
    and no tenant is ever served another tenant's assessment."""
    canonical = json.dumps(req.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return ("nexus_assess", tenant + ":" + hashlib.blake2b(canonical.encode(), digest_size=20).hexdigest())


async def score_rubric(
    req: NexusAssessRequest, ctx: RequestContext, down: Downstreams
) -> NexusAssessResponse:
    """Score every criterion (uncached). Raises the first criterion's failure."""
    evidence = f"Evidence:\n{req.evidence}\n\n" if req.evidence else ""

    def score(criterion: Criterion):
        async def call() -> CriterionScore:
            data = await down.llm.json_task(
                "score_criterion",
                instructions=_SCORE_INSTRUCTIONS,
                prompt=f"Subject: {req.subject}\n\n{evidence}Criterion: {criterion.description}",
                tenant=ctx.tenant,
                endpoint=ctx.endpoint,
            )
            value, rationale = data.get("score"), data.get("rationale")
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 10:
                raise floodgate.DependencyError(
                    f"score_criterion returned score {value!r} for {criterion.id!r}, not an integer 0..10",
                    dependency="llm",
                )
            if not isinstance(rationale, str):
                raise floodgate.DependencyError(
                    f"score_criterion returned no rationale for {criterion.id!r}", dependency="llm"
                )
            return CriterionScore(id=criterion.id, score=value, weight=criterion.weight, rationale=rationale)

        return call

    with ctx.timing.step("score", dependency="llm"):
        scores = await gather_strict([score(c) for c in req.rubric], limit=ctx.policy.fan_out)
    weight = sum(s.weight for s in scores)
    total = sum(s.score * s.weight for s in scores) / weight
    return NexusAssessResponse(subject=req.subject, total=round(total, 4), scores=scores, cached=False)


async def assess(
    req: NexusAssessRequest, ctx: RequestContext, down: Downstreams, cache: floodgate.TTLCache | None
) -> NexusAssessResponse:
    """`score_rubric` behind the response cache (``cache=None``: no caching).

    A hit is marked ``cached: true``. Identical requests that arrive while one is being scored
    wait for it (singleflight) and share its result, or its failure; failures are never cached.
    """
    if cache is None:
        return await score_rubric(req, ctx, down)
    key = cache_key(ctx.tenant, req)
    hit = cache.get_nowait(key)
    if hit is not floodgate.MISSING:
        return hit.model_copy(update={"cached": True})
    computed_here = False

    async def compute() -> NexusAssessResponse:
        nonlocal computed_here
        computed_here = True
        return await score_rubric(req, ctx, down)

    response = await cache.get_or_load(key, compute)
    return response if computed_here else response.model_copy(update={"cached": True})

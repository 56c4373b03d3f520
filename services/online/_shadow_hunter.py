"""shadowHunter: hunt a subject across many web searches; partial results are a result.

::

    queries (caller's, or LLM-expanded) ─> search x N (bounded) ─> dedupe by URL ─> extract x M (bounded)

Search and extraction fan out under the endpoint's ``fan_out`` per request and the dependency's
gate globally. A search or an extraction that fails is counted, not fatal: the response says how
many succeeded (``counts``, ``complete``). The request fails only when no search succeeded, with
the error of the first failed search (429, 503, 504 or 502).

The expansion and each extraction are the tenant's cached LLM answers for ``cache_ttl`` when asked
again with the same subject and source (the LLM client's memo): hunting a subject twice pays once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import floodgate
from providers import WebHit

from ._context import Downstreams, RequestContext
from ._degrade import degradable, degradations_of
from ._fanout import Settled, gather_settled
from ._models import (
    Finding,
    HuntCounts,
    HuntQuery,
    HuntResult,
    QueryError,
    ShadowHunterRequest,
    ShadowHunterResponse,
)

__all__ = ["hunt"]

_EXPAND_INSTRUCTIONS = (
    'Expand the subject into distinct web search queries. Answer JSON: {"queries": [string, ...]}.'
)
_EXTRACT_INSTRUCTIONS = (
    "Extract the findings about the subject stated in the numbered source. Answer JSON: "
    '{"findings": [{"claim": string, "sources": [int], "confidence": number 0..1}]}.'
)


@dataclass
class _Merged:
    hit: WebHit
    queries: list[int] = field(default_factory=list)


def _unique(queries: list[str], limit: int) -> list[str]:
    seen: set[str] = set()
    out: list[str] = []
    for query in queries:
        key = " ".join(query.lower().split())
        if key and key not in seen:
            seen.add(key)
            out.append(query.strip())
    return out[:limit]


async def _queries(req: ShadowHunterRequest, ctx: RequestContext, down: Downstreams) -> list[str]:
    if req.queries is not None:
        return _unique(list(req.queries), len(req.queries))

    async def expand() -> list[str]:
        with ctx.timing.step("expand", dependency="llm"):
            data = await down.llm.json_task(
                "expand_queries",
                instructions=_EXPAND_INSTRUCTIONS,
                prompt=f"Write {req.query_count} search queries.\nSubject: {req.subject}",
                tenant=ctx.tenant,
                endpoint=ctx.endpoint,
                cache_ttl=ctx.policy.cache_ttl,
            )
        raw = data.get("queries")
        if not isinstance(raw, list) or not all(isinstance(q, str) for q in raw):
            raise floodgate.DependencyError(
                "expand_queries did not return a list of strings", dependency="llm"
            )
        queries = _unique([q[:300] for q in raw], req.query_count)
        if not queries:
            raise floodgate.DependencyError("expand_queries returned no query", dependency="llm")
        return queries

    return await degradable(
        "expand",
        expand,
        dependency="llm",
        policy=ctx.policy,
        fallback=lambda: [req.subject[:300]],
        degradations=ctx.degradations,
        reserve=ctx.reserve,
    )


def _error(exc: floodgate.FloodgateError) -> QueryError:
    return QueryError(code=exc.code, message=str(exc), dependency=exc.dependency)


async def hunt(req: ShadowHunterRequest, ctx: RequestContext, down: Downstreams) -> ShadowHunterResponse:
    queries = await _queries(req, ctx, down)

    def search(query: str):
        return lambda: down.web.search(query, count=req.results_per_query, tenant=ctx.tenant)

    with ctx.timing.step("search", dependency="search"):
        searched: list[Settled[tuple[WebHit, ...]]] = await gather_settled(
            [search(q) for q in queries], limit=ctx.policy.fan_out
        )
    succeeded = [s for s in searched if s.ok]
    if not succeeded:
        first = next(s.error for s in searched if s.error is not None)
        raise first

    merged: dict[str, _Merged] = {}
    for index, outcome in enumerate(searched):
        for hit in outcome.value or []:
            entry = merged.get(hit.url)
            if entry is None:
                merged[hit.url] = _Merged(hit, [index])
            else:
                entry.queries.append(index)
                if hit.score > entry.hit.score:
                    entry.hit = hit
    # Found by more searches first, then by the best score: agreement between searches is signal.
    ranked = sorted(merged.values(), key=lambda m: (-len(m.queries), -m.hit.score, m.hit.url))
    results = [
        HuntResult(
            url=m.hit.url, title=m.hit.title, snippet=m.hit.snippet, score=m.hit.score, queries=m.queries
        )
        for m in ranked
    ]

    to_extract = results[: req.extract_top]

    def extract(result: HuntResult):
        async def call() -> list[Finding]:
            data = await down.llm.json_task(
                "extract_findings",
                instructions=_EXTRACT_INSTRUCTIONS,
                prompt=f"[1] {result.title}: {result.snippet}\n\nSubject: {req.subject}",
                tenant=ctx.tenant,
                endpoint=ctx.endpoint,
                cache_ttl=ctx.policy.cache_ttl,
            )
            return _findings(data, result.url)

        return call

    extracted: list[Settled[list[Finding]]] = []
    if to_extract:
        with ctx.timing.step("extract", dependency="llm"):
            extracted = await gather_settled([extract(r) for r in to_extract], limit=ctx.policy.fan_out)
    findings = [f for outcome in extracted for f in (outcome.value or [])]
    findings.sort(key=lambda f: -f.confidence)

    failed_extractions = [o.error for o in extracted if o.error is not None]
    if failed_extractions:
        # Extraction is best-effort by design: fewer findings, said so, never a failed hunt.
        first = failed_extractions[0]
        ctx.degradations.record("extract", dependency=first.dependency or "llm", reason=first.code)
    counts = HuntCounts(
        queries=len(queries),
        queries_succeeded=len(succeeded),
        extractions=len(extracted),
        extractions_succeeded=len(extracted) - len(failed_extractions),
    )
    return ShadowHunterResponse(
        subject=req.subject,
        complete=counts.queries == counts.queries_succeeded
        and counts.extractions == counts.extractions_succeeded,
        counts=counts,
        queries=[
            HuntQuery(
                query=q,
                status="ok" if s.ok else "failed",
                results=len(s.value or []),
                error=None if s.error is None else _error(s.error),
            )
            for q, s in zip(queries, searched, strict=True)
        ],
        results=results,
        findings=findings,
        degraded=degradations_of(ctx.degradations, ctx.policy, extra={"extract": "fewer_findings"}),
    )


def _findings(data: dict, url: str) -> list[Finding]:
    raw = data.get("findings")
    if not isinstance(raw, list):
        raise floodgate.DependencyError("extract_findings did not return a findings list", dependency="llm")
    findings: list[Finding] = []
    for item in raw:
        if not isinstance(item, dict) or not isinstance(item.get("claim"), str) or not item["claim"].strip():
            raise floodgate.DependencyError(
                "extract_findings returned a finding without a claim", dependency="llm"
            )
        confidence = item.get("confidence", 0.5)
        if isinstance(confidence, bool) or not isinstance(confidence, int | float):
            confidence = 0.5
        findings.append(
            Finding(claim=item["claim"].strip(), url=url, confidence=max(0.0, min(1.0, float(confidence))))
        )
    return findings

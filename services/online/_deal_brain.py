"""dealBrain: answer a question from the tenant's documents and the web, with citations.

::

    embed query ──> vector search (db) ──┐
                                         ├─> fuse (RRF) ─> rerank ─> LLM answer citing [n]
    web search (cached, coalesced) ──────┘

The two retrieval branches run in parallel in one nursery. The answer to the same question over
the same passages is the tenant's cached one for ``cache_ttl`` (the LLM client's memo). Which steps
may fall back is the budget file's decision (``endpoints.deal_brain.degradable``): by default rerank falls back to the
fused score and the LLM to "passages only"; embed, db and search fail the request.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from providers import WebHit

from ._chunks import ChunkHit
from ._context import Downstreams, RequestContext
from ._degrade import degradable, degradations_of
from ._fanout import gather_strict
from ._models import Citation, DealBrainRequest, DealBrainResponse, Passage

__all__ = ["RRF_K", "answer_question", "fuse"]

#: Reciprocal rank fusion constant (Cormack et al.): 60 keeps one list's top rank from dominating.
RRF_K = 60
_CITATION_RE = re.compile(r"\[(\d{1,3})\]")
_MAX_PASSAGE_CHARS = 1200

_ANSWER_INSTRUCTIONS = (
    "Answer the question using only the numbered passages. Cite every claim with the passage "
    "number in square brackets, like [2]. If the passages do not answer it, say so."
)


@dataclass(frozen=True)
class Candidate:
    source: str  # "document" | "web"
    text: str
    fused: float
    doc_id: str | None = None
    chunk_no: int | None = None
    url: str | None = None
    title: str | None = None


def fuse(documents: Sequence[ChunkHit], web: Sequence[WebHit], *, limit: int) -> list[Candidate]:
    """Merge the two ranked lists by reciprocal rank fusion; web hits deduplicated by URL.

    RRF needs only ranks, so cosine similarities and BM25 scores, which live on different
    scales, need no calibration against each other.
    """
    candidates: list[Candidate] = []
    for rank, hit in enumerate(documents, start=1):
        candidates.append(
            Candidate(
                "document",
                hit.content,
                1.0 / (RRF_K + rank),
                doc_id=hit.doc_id,
                chunk_no=hit.chunk_no,
                title=hit.title,
            )
        )
    seen: set[str] = set()
    rank = 0
    for hit in web:
        if hit.url in seen:
            continue
        seen.add(hit.url)
        rank += 1
        text = hit.snippet or hit.title
        candidates.append(Candidate("web", text, 1.0 / (RRF_K + rank), url=hit.url, title=hit.title))
    # Stable sort: on equal fused scores, documents (listed first) come before the web.
    candidates.sort(key=lambda c: -c.fused)
    return candidates[:limit]


def _passage_text(candidate: Candidate) -> str:
    text = candidate.text[:_MAX_PASSAGE_CHARS]
    return f"{candidate.title}: {text}" if candidate.title else text


async def answer_question(req: DealBrainRequest, ctx: RequestContext, down: Downstreams) -> DealBrainResponse:
    policy = ctx.policy
    pool_size = policy.max_items or 20  # candidates per source and handed to rerank
    documents: list[ChunkHit] = []
    web: Sequence[WebHit] = ()

    async def search_documents() -> None:
        nonlocal documents

        async def embed() -> Sequence[float] | None:
            with ctx.timing.step("embed", dependency="embed"):
                return await down.embedder.embed_query(req.question, tenant=ctx.tenant, endpoint=ctx.endpoint)

        vector = await degradable(
            "embed",
            embed,
            dependency="embed",
            policy=policy,
            fallback=lambda: None,
            degradations=ctx.degradations,
            reserve=ctx.reserve,
        )
        if vector is None:
            return

        async def vector_search() -> list[ChunkHit]:
            with ctx.timing.step("vector_search", dependency="db"):
                return await down.chunks.nearest(ctx.tenant, vector, limit=pool_size)

        documents = await degradable(
            "vector_search",
            vector_search,
            dependency="db",
            policy=policy,
            fallback=list,
            degradations=ctx.degradations,
            reserve=ctx.reserve,
        )

    async def search_web() -> None:
        nonlocal web

        async def call() -> Sequence[WebHit]:
            with ctx.timing.step("search", dependency="search"):
                return await down.web.search(req.question, count=min(pool_size, 20), tenant=ctx.tenant)

        web = await degradable(
            "search",
            call,
            dependency="search",
            policy=policy,
            fallback=list,
            degradations=ctx.degradations,
            reserve=ctx.reserve,
        )

    branches = [search_documents, search_web] if req.web else [search_documents]
    await gather_strict(branches, limit=policy.fan_out)

    candidates = fuse(documents, web, limit=pool_size)
    ranked = await _rerank(req, ctx, down, candidates)
    passages = [
        Passage(
            id=i,
            source=c.source,
            text=c.text,
            score=round(score, 6),
            doc_id=c.doc_id,
            chunk_no=c.chunk_no,
            url=c.url,
            title=c.title,
        )
        for i, (c, score) in enumerate(ranked, start=1)
    ]
    answer = await _answer(req, ctx, down, ranked)
    citations = _citations(answer, passages)
    return DealBrainResponse(
        answer=answer,
        citations=citations,
        passages=passages,
        degraded=degradations_of(ctx.degradations, ctx.policy),
    )


async def _rerank(
    req: DealBrainRequest, ctx: RequestContext, down: Downstreams, candidates: list[Candidate]
) -> list[tuple[Candidate, float]]:
    fused = [(c, c.fused) for c in candidates[: req.top_k]]
    if len(candidates) <= 1:
        return fused

    async def call() -> list[tuple[Candidate, float]]:
        with ctx.timing.step("rerank", dependency="rerank"):
            order = await down.reranker.rerank(
                req.question, [_passage_text(c) for c in candidates], top_n=req.top_k, tenant=ctx.tenant
            )
        return [(candidates[index], score) for index, score in order]

    return await degradable(
        "rerank",
        call,
        dependency="rerank",
        policy=ctx.policy,
        fallback=lambda: fused,
        degradations=ctx.degradations,
        reserve=ctx.reserve,
    )


async def _answer(
    req: DealBrainRequest, ctx: RequestContext, down: Downstreams, ranked: list[tuple[Candidate, float]]
) -> str | None:
    if not ranked:
        return None  # nothing to ground an answer on: no LLM call, no invented answer
    numbered = "\n".join(f"[{i}] {_passage_text(c)}" for i, (c, _) in enumerate(ranked, start=1))
    prompt = f"Passages:\n{numbered}\n\nQuestion: {req.question}"

    async def call() -> str | None:
        with ctx.timing.step("answer", dependency="llm"):
            # the same question over the same passages: the tenant's answer within cache_ttl
            return await down.llm.text(
                instructions=_ANSWER_INSTRUCTIONS,
                prompt=prompt,
                tenant=ctx.tenant,
                endpoint=ctx.endpoint,
                cache_ttl=ctx.policy.cache_ttl,
            )

    return await degradable(
        "answer",
        call,
        dependency="llm",
        policy=ctx.policy,
        fallback=lambda: None,
        degradations=ctx.degradations,
        reserve=ctx.reserve,
    )


def _citations(answer: str | None, passages: list[Passage]) -> list[Citation]:
    if not answer:
        return []
    by_id = {p.id: p for p in passages}
    cited: list[Citation] = []
    for match in _CITATION_RE.finditer(answer):
        passage = by_id.get(int(match.group(1)))
        if passage is not None and all(c.passage != passage.id for c in cited):
            cited.append(
                Citation(passage=passage.id, source=passage.source, doc_id=passage.doc_id, url=passage.url)
            )
    return cited

"""The wire format of the online endpoints: pydantic models for every request and response body.

Requests are strict (``extra="forbid"``, no type coercion: ``"5"`` is not an integer) so that a
client's mistake is named at the edge (422 with the field) before anything reaches a downstream.
Limits that depend on the budget file (how many queries or criteria) are checked by
`check_item_limit` against the endpoint's policy, with the same error shape. The same models
generate the OpenAPI document (`services.online._openapi`).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

__all__ = [
    "Citation",
    "Criterion",
    "CriterionScore",
    "DealBrainRequest",
    "DealBrainResponse",
    "DegradationNote",
    "ErrorBody",
    "ErrorResponse",
    "Finding",
    "HuntCounts",
    "HuntQuery",
    "HuntResult",
    "NexusAssessRequest",
    "NexusAssessResponse",
    "Passage",
    "QueryError",
    "ShadowHunterRequest",
    "ShadowHunterResponse",
]

#: Hard ceilings, whatever the budget file says: they keep one request's cost bounded even when an
#: operator raises ``max_items`` by mistake. The budget's ``max_items`` is the effective limit.
MAX_QUESTION_CHARS = 2_000
MAX_SUBJECT_CHARS = 1_000
MAX_QUERY_CHARS = 300
MAX_EVIDENCE_CHARS = 20_000
MAX_DESCRIPTION_CHARS = 1_000
HARD_MAX_ITEMS = 50

Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]


class _Request(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


class _Response(BaseModel):
    model_config = ConfigDict(frozen=True)


# -- shared ------------------------------------------------------------------------------------------


class DegradationNote(_Response):
    """A step that fell back instead of failing the request, and why: what the response says of
    a ``floodgate.Degradation`` (the toolkit's record of it)."""

    step: str = Field(description="the step that fell back, e.g. `rerank` or `answer`")
    dependency: str = Field(description="the dependency whose failure caused it, e.g. `rerank` or `llm`")
    reason: str = Field(
        description="error code of the failure: overloaded, circuit_open, deadline_exceeded "
        "(also when the step was cut to leave time for the answer), dependency_error or "
        "retry_budget_exhausted"
    )
    fallback: str = Field(description="what was used instead, as named in the budget file")


class QueryError(_Response):
    code: str
    message: str
    dependency: str | None = None


# -- dealBrain ---------------------------------------------------------------------------------------


class DealBrainRequest(_Request):
    """Answer ``question`` from the tenant's ingested documents and the web."""

    question: Annotated[Text, StringConstraints(max_length=MAX_QUESTION_CHARS)] = Field(
        description="the question; 1 to 2000 characters"
    )
    top_k: int = Field(
        default=5, ge=1, le=HARD_MAX_ITEMS, description="passages to return (at most the budget's max_items)"
    )
    web: bool = Field(default=True, description="also search the web (false: the tenant's documents only)")


class Passage(_Response):
    id: int = Field(description="1-based number; the answer cites it as [id]")
    source: Literal["document", "web"]
    text: str
    score: float = Field(description="rerank relevance, or the fused vector/search score when degraded")
    doc_id: str | None = None
    chunk_no: int | None = None
    url: str | None = None
    title: str | None = None


class Citation(_Response):
    passage: int = Field(description="the `id` of the cited passage")
    source: Literal["document", "web"]
    doc_id: str | None = None
    url: str | None = None


class DealBrainResponse(_Response):
    answer: str | None = Field(description="the LLM's answer citing passages as [n]; null when degraded")
    citations: list[Citation]
    passages: list[Passage]
    degraded: list[DegradationNote] = Field(description="steps that fell back, and why; empty when none did")


# -- shadowHunter ------------------------------------------------------------------------------------


class ShadowHunterRequest(_Request):
    """Hunt ``subject`` across many web searches and extract findings from the best results."""

    subject: Annotated[Text, StringConstraints(max_length=MAX_SUBJECT_CHARS)]
    queries: list[Annotated[Text, StringConstraints(max_length=MAX_QUERY_CHARS)]] | None = Field(
        default=None,
        min_length=1,
        max_length=HARD_MAX_ITEMS,
        description="the searches to run; omitted: the LLM expands the subject into `query_count` queries",
    )
    query_count: int = Field(
        default=4,
        ge=1,
        le=HARD_MAX_ITEMS,
        description="queries to expand to (at most the budget's max_items)",
    )
    results_per_query: int = Field(default=5, ge=1, le=20)
    extract_top: int = Field(
        default=4,
        ge=0,
        le=20,
        description="top deduplicated results the LLM extracts findings from (at most the budget's max_items)",
    )


class HuntQuery(_Response):
    query: str
    status: Literal["ok", "failed"]
    results: int
    error: QueryError | None = None


class HuntResult(_Response):
    url: str
    title: str
    snippet: str
    score: float = Field(description="best search score across the queries that found it")
    queries: list[int] = Field(description="indexes (in `queries`) of the searches that found it")


class Finding(_Response):
    claim: str
    url: str
    confidence: float


class HuntCounts(_Response):
    queries: int
    queries_succeeded: int
    extractions: int
    extractions_succeeded: int


class ShadowHunterResponse(_Response):
    subject: str
    complete: bool = Field(description="true when every search and every extraction succeeded")
    counts: HuntCounts
    queries: list[HuntQuery]
    results: list[HuntResult]
    findings: list[Finding]
    degraded: list[DegradationNote]


# -- nexusAssess -------------------------------------------------------------------------------------


class Criterion(_Request):
    id: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
    description: Annotated[Text, StringConstraints(max_length=MAX_DESCRIPTION_CHARS)]
    weight: float = Field(default=1.0, gt=0, le=1000)


class NexusAssessRequest(_Request):
    """Score ``subject`` against every criterion of ``rubric``; all criteria or nothing."""

    subject: Annotated[Text, StringConstraints(max_length=MAX_SUBJECT_CHARS)]
    evidence: Annotated[str, StringConstraints(max_length=MAX_EVIDENCE_CHARS)] | None = Field(
        default=None, description="text the scores should rest on"
    )
    rubric: list[Criterion] = Field(
        min_length=1, max_length=HARD_MAX_ITEMS, description="criteria (at most the budget's max_items)"
    )

    @field_validator("rubric")
    @classmethod
    def _unique_ids(cls, rubric: list[Criterion]) -> list[Criterion]:
        seen: set[str] = set()
        for criterion in rubric:
            if criterion.id in seen:
                raise ValueError(f"criterion id {criterion.id!r} appears more than once")
            seen.add(criterion.id)
        return rubric


class CriterionScore(_Response):
    id: str
    score: int = Field(ge=0, le=10)
    weight: float
    rationale: str


class NexusAssessResponse(_Response):
    subject: str
    total: float = Field(description="weighted mean of the scores, 0 to 10")
    scale_max: int = 10
    scores: list[CriterionScore]
    cached: bool = Field(description="served from the response cache")


# -- errors ------------------------------------------------------------------------------------------


class ErrorBody(_Response):
    code: str = Field(
        description="stable machine-readable code: invalid_json, invalid_request, body_too_large, "
        "missing_tenant, invalid_tenant, overloaded, circuit_open, deadline_exceeded, "
        "dependency_error, retry_budget_exhausted, internal_error"
    )
    message: str
    details: object | None = Field(
        default=None,
        description="422: a list of {field, message, type}; toolkit errors: "
        "{dependency, reason, retry_after[, status]}; 413: {limit_bytes}",
    )


class ErrorResponse(_Response):
    error: ErrorBody

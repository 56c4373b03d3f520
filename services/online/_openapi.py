"""The OpenAPI 3.1 document of the online service, served at ``/openapi.json``.

Schemas are generated from the pydantic models that validate the requests and shape the
responses (so the document cannot drift from the code); the error contract — every status an
endpoint can return, its ``code`` values and its headers — is written out once in
``components.responses`` (the chassis' `ErrorSpec`, as every service does) and referenced by each
operation. Limits that come from the budget
file (deadline, max items, body size) are written into the descriptions at start-up.
"""

from __future__ import annotations

from typing import Any

import chassis
import floodgate
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from ._models import (
    DealBrainRequest,
    DealBrainResponse,
    NexusAssessRequest,
    NexusAssessResponse,
    ShadowHunterRequest,
    ShadowHunterResponse,
)

__all__ = ["ENDPOINTS", "ERROR_CONTRACT", "EndpointSpec", "build_openapi"]


class EndpointSpec:
    """One public operation: where it lives, its budget entry, its models and its prose."""

    def __init__(
        self,
        *,
        path: str,
        budget_key: str,
        operation_id: str,
        summary: str,
        description: str,
        request: type[BaseModel],
        response: type[BaseModel],
        statuses: tuple[int, ...],
    ):
        self.path = path
        self.budget_key = budget_key
        self.operation_id = operation_id
        self.summary = summary
        self.description = description
        self.request = request
        self.response = response
        self.statuses = statuses


_E = chassis.ErrorSpec
#: status -> the error it answers with: component name, code values, when, Retry-After?
ERROR_CONTRACT: dict[int, chassis.ErrorSpec] = {
    spec.status: spec
    for spec in (
        _E(
            400,
            "BadRequest",
            ("invalid_json", "invalid_tenant"),
            "the body is not a JSON object, or the tenant header is malformed",
        ),
        _E(401, "MissingTenant", ("missing_tenant",), f"the gateway did not set {chassis.TENANT_HEADER}"),
        _E(
            413,
            "PayloadTooLarge",
            ("body_too_large",),
            "the body is larger than the endpoint's max_body_bytes",
        ),
        _E(
            422,
            "ValidationFailed",
            ("invalid_request",),
            "a field is missing, of the wrong type or out of range; `details` lists each {field, message, type}",
        ),
        _E(
            429,
            "Overloaded",
            ("overloaded",),
            "the endpoint is at its limit of requests in flight (derived from the budget; refused at once, "
            "before any work), or a non-degradable dependency's gate is full (queue full or max_wait passed) "
            "or its client-side rate limit would wait too long; `details.dependency` names the budget",
            retry_after=True,
        ),
        _E(500, "InternalError", ("internal_error",), "a bug; `details.request_id` identifies the request"),
        _E(
            502,
            "DependencyFailed",
            ("dependency_error",),
            "a non-degradable dependency failed (error status, transport error, or an answer that "
            "does not parse) after the retries its policy allows",
        ),
        _E(
            503,
            "Unavailable",
            ("circuit_open", "retry_budget_exhausted"),
            "the breaker of a non-degradable dependency is open, or its retry budget is spent",
            retry_after=True,
        ),
        _E(
            504,
            "DeadlineExceeded",
            ("deadline_exceeded",),
            "the request deadline (the endpoint's, or a shorter one the caller or the gateway asked for) "
            "passed, or a required call timed out; `details.dependency` names what it waited for",
        ),
    )
}

_COMMON = (400, 401, 413, 422, 429, 500, 502, 503, 504)

ENDPOINTS: tuple[EndpointSpec, ...] = (
    EndpointSpec(
        path="/v1/deal-brain/answers",
        budget_key="deal_brain",
        operation_id="createDealBrainAnswer",
        summary="dealBrain: answer a question from the tenant's documents and the web",
        description=(
            "Embeds the question; in parallel searches the tenant's chunks (pgvector) and the web "
            "(cached, coalesced); fuses the lists (reciprocal rank fusion); reranks; asks the LLM "
            "for an answer citing passages as [n]. Steps the budget file lists as degradable fall "
            "back instead of failing and are listed in `degraded` (default: rerank -> fused score, "
            "llm -> passages only, answer null)."
        ),
        request=DealBrainRequest,
        response=DealBrainResponse,
        statuses=_COMMON,
    ),
    EndpointSpec(
        path="/v1/shadow-hunter/hunts",
        budget_key="shadow_hunter",
        operation_id="createShadowHunterHunt",
        summary="shadowHunter: hunt a subject across many web searches",
        description=(
            "Expands the subject into queries with the LLM (or takes the caller's), searches them in "
            "parallel (bounded per request by fan_out and globally by the search budget), "
            "deduplicates results by URL and extracts findings from the top results with the LLM. "
            "Partial results are a 200 with `complete: false` and `counts`; the request fails only "
            "when no search succeeded (with that search's error status)."
        ),
        request=ShadowHunterRequest,
        response=ShadowHunterResponse,
        statuses=_COMMON,
    ),
    EndpointSpec(
        path="/v1/nexus-assess/assessments",
        budget_key="nexus_assess",
        operation_id="createNexusAssessment",
        summary="nexusAssess: score a subject against a rubric, strictly",
        description=(
            "One LLM call per criterion, in parallel under fan_out; the total is the weighted mean. "
            "Strict: if any criterion fails or the deadline passes, the whole request fails "
            "(429/503/504/502) — a partial score is never returned. Identical requests of a tenant "
            "within the cache TTL are served from the cache (`cached: true`)."
        ),
        request=NexusAssessRequest,
        response=NexusAssessResponse,
        statuses=_COMMON,
    ),
)


def build_openapi(budget: floodgate.Budget, *, version: str = "1.0.0") -> dict[str, Any]:
    """The whole document, with the budget's limits written into each operation."""
    models: list[tuple[type[BaseModel], Any]] = [(chassis.ErrorResponse, "serialization")]
    for spec in ENDPOINTS:
        models += [(spec.request, "validation"), (spec.response, "serialization")]
    _, top = models_json_schema(models, ref_template="#/components/schemas/{model}")
    schemas = top.get("$defs", {})

    paths: dict[str, Any] = {}
    for spec in ENDPOINTS:
        policy = budget.endpoint(spec.budget_key)
        limits = (
            f"\n\nBudget (`endpoints.{spec.budget_key}`): deadline {policy.deadline:g}s, fan-out "
            f"{policy.fan_out} per request, at most {policy.max_items} items, body at most "
            f"{policy.max_body_bytes} bytes; SLO p95 {policy.slo_p95_ms:g} ms, p99 {policy.slo_p99_ms:g} ms."
        )
        responses: dict[str, Any] = {
            "200": {
                "description": "the result",
                "headers": {
                    "x-request-id": {"$ref": "#/components/headers/RequestId"},
                    "Server-Timing": {"$ref": "#/components/headers/ServerTiming"},
                },
                "content": {
                    "application/json": {"schema": {"$ref": f"#/components/schemas/{spec.response.__name__}"}}
                },
            }
        }
        for status in spec.statuses:
            responses[str(status)] = {"$ref": f"#/components/responses/{ERROR_CONTRACT[status].name}"}
        paths[spec.path] = {
            "post": {
                "operationId": spec.operation_id,
                "summary": spec.summary,
                "description": spec.description + limits,
                "parameters": [
                    {"$ref": "#/components/parameters/Tenant"},
                    {"$ref": "#/components/parameters/RequestIdIn"},
                    {"$ref": "#/components/parameters/Deadline"},
                    {"$ref": "#/components/parameters/ExpectedTimeout"},
                ],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {"$ref": f"#/components/schemas/{spec.request.__name__}"}
                        }
                    },
                },
                "responses": responses,
            }
        }
    paths.update(chassis.probe_paths(ready_when="its database answers"))
    paths["/openapi.json"] = {
        "get": {
            "operationId": "openapi",
            "summary": "this document",
            "responses": {
                "200": {"description": "OpenAPI 3.1 document", "content": {"application/json": {}}}
            },
        }
    }

    shared = chassis.openapi_components()
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Floodgate online service",
            "version": version,
            "description": (
                "shadowHunter, nexusAssess and dealBrain. Every error is JSON "
                '`{"error": {"code", "message", "details"}}`; overload is a fast 429/503 with '
                "`Retry-After`; each response carries `x-request-id` and (on the endpoints) "
                "`Server-Timing` with the time per step. The tenant comes from the gateway's "
                "`x-floodgate-tenant` header, never from the body."
            ),
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "responses": chassis.error_responses(ERROR_CONTRACT.values()),
            "parameters": shared["parameters"],
            "headers": {
                **shared["headers"],
                "ServerTiming": {
                    "description": "time per step, e.g. `embed;dur=20.1, search;dur=150.3, total;dur=612.0`",
                    "schema": {"type": "string"},
                },
            },
        },
    }

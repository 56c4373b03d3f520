"""The OpenAPI 3.1 document of the online service, served at ``/openapi.json``.

The operations are the endpoint records (`_endpoints.ENDPOINTS`: path, method, prose) and their
schemas are generated from the records' pydantic models that validate the requests and shape the
responses (so the document cannot drift from the code); the error contract — every status an
endpoint can return, its ``code`` values and its headers — is written out once in
``components.responses`` (the chassis' `ErrorSpec`, as every service does) and referenced by each
operation. Limits that come from the budget file (deadline, max items, body size) are written into
the descriptions at start-up.
"""

from __future__ import annotations

from typing import Any

import chassis
import floodgate
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from ._endpoints import ENDPOINTS

__all__ = ["ERROR_CONTRACT", "build_openapi"]


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
        chassis.INTERNAL_ERROR,
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

#: The error statuses every endpoint's operation lists.
_COMMON = (400, 401, 413, 422, 429, 500, 502, 503, 504)


def build_openapi(budget: floodgate.Budget, *, version: str = "1.0.0") -> dict[str, Any]:
    """The whole document, with the budget's limits written into each operation."""
    models: list[tuple[type[BaseModel], Any]] = [(chassis.ErrorResponse, "serialization")]
    for spec in ENDPOINTS:
        models += [(spec.request, "validation"), (spec.response, "serialization")]
    _, top = models_json_schema(models, ref_template="#/components/schemas/{model}")
    schemas = top.get("$defs", {})

    paths: dict[str, Any] = {}
    for spec in ENDPOINTS:
        policy = budget.endpoint(spec.name)
        limits = (
            f"\n\nBudget (`endpoints.{spec.name}`): deadline {policy.deadline:g}s, fan-out "
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
        for status in _COMMON:
            responses[str(status)] = {"$ref": f"#/components/responses/{ERROR_CONTRACT[status].name}"}
        paths[spec.path] = {
            spec.method.lower(): {
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
    return chassis.service_document(
        title="Floodgate online service",
        version=version,
        description=(
            "shadowHunter, nexusAssess and dealBrain. Every error is JSON "
            '`{"error": {"code", "message", "details"}}`; overload is a fast 429/503 with '
            "`Retry-After`; each response carries `x-request-id` and (on the endpoints) "
            "`Server-Timing` with the time per step. The tenant comes from the gateway's "
            "`x-floodgate-tenant` header, never from the body."
        ),
        paths=paths,
        schemas=schemas,
        errors=ERROR_CONTRACT.values(),
        ready_when="its database answers",
        headers={
            "ServerTiming": {
                "description": "time per step, e.g. `embed;dur=20.1, search;dur=150.3, total;dur=612.0`",
                "schema": {"type": "string"},
            }
        },
    )

"""The OpenAPI document of the rate-limit service's HTTP side: ``GET /v1/usage`` and the probes.

Served at ``/openapi.json`` on its HTTP port; ``cluster.gateway_openapi`` merges its ``/v1/usage``
into the gateway's document (the route ``usage`` of gateway/envoy.yaml leads there).
"""

from __future__ import annotations

from typing import Any

import chassis

from ._budgets import BUDGET_WINDOWS
from ._usage import USAGE_PATH

__all__ = ["USAGE_ERRORS", "build_openapi"]

_E = chassis.ErrorSpec
USAGE_ERRORS = (
    _E(400, "InvalidTenant", ("invalid_tenant",), "the tenant header is malformed"),
    _E(401, "MissingTenant", ("missing_tenant",), f"the gateway did not set {chassis.TENANT_HEADER}"),
    _E(
        503,
        "Unavailable",
        ("unavailable",),
        "the usage counters (Redis) cannot be read now",
        retry_after=True,
    ),
)

_WINDOW = {
    "type": "object",
    "required": ["unit", "limit", "used", "remaining", "resets_in_seconds", "endpoints"],
    "properties": {
        "unit": {"type": "string", "enum": ["tokens", "usd"], "description": "LLM tokens, or US dollars"},
        "limit": {"type": "number", "description": "the tenant's budget for this window"},
        "used": {"type": "number", "description": "used in the current window (estimated, for cost)"},
        "remaining": {"type": "number", "description": "limit - used, at least 0"},
        "resets_in_seconds": {"type": "number", "description": "until the window ends (fixed windows, UTC)"},
        "endpoints": {
            "type": "object",
            "additionalProperties": {"type": "number"},
            "description": "what each endpoint used of it",
        },
    },
}


def build_openapi() -> dict[str, Any]:
    windows = ", ".join(f"`{w.name}`" for w in BUDGET_WINDOWS)
    usage = {
        "get": {
            "operationId": "usage",
            "summary": "the caller's own token and cost usage in the current windows",
            "description": (
                f"Per budget window ({windows}; those the tenant has): its limit, what was used in all and "
                "per endpoint, what is left and when the window resets. The tenant is the caller's: the "
                "one its API key belongs to; no parameter can name another."
            ),
            "parameters": [{"$ref": "#/components/parameters/Tenant"}],
            "responses": {
                "200": {
                    "description": "the usage",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Usage"}}},
                },
                **{
                    str(spec.status): {"$ref": f"#/components/responses/{spec.name}"} for spec in USAGE_ERRORS
                },
            },
        }
    }
    schemas = {
        "UsageWindow": _WINDOW,
        "Usage": {
            "type": "object",
            "required": ["tenant", "windows", "requests_in_flight"],
            "properties": {
                "tenant": {"type": "string"},
                "windows": {
                    "type": "object",
                    "additionalProperties": {"$ref": "#/components/schemas/UsageWindow"},
                    "description": "by window name",
                },
                "requests_in_flight": {
                    "type": "integer",
                    "minimum": 0,
                    "description": "LLM requests started and not yet ended; the next request is refused "
                    "when what was used plus these (and it) at the mean a request used would pass a budget",
                },
            },
        },
    }
    return chassis.service_document(
        title="Floodgate rate-limit service (HTTP side)",
        version="1.0.0",
        description="A tenant's token and cost usage; the probes.",
        paths={USAGE_PATH: usage},
        schemas=schemas,
        errors=USAGE_ERRORS,
        ready_when="the counter store answers",
    )

"""The OpenAPI pieces every chassis service documents the same way.

The error shape, the error responses built from one table per service, the probes and the
headers the chassis adds are written here once; each service's ``_openapi.py`` adds its own
operations and ``cluster.gateway_openapi`` merges the services' documents for the gateway.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import floodgate
from pydantic import BaseModel, ConfigDict, Field

from ._app import REQUEST_ID_HEADER, TENANT_HEADER
from ._request import TENANT_PATTERN

__all__ = [
    "INTERNAL_ERROR",
    "ErrorBody",
    "ErrorResponse",
    "ErrorSpec",
    "error_responses",
    "probe_paths",
    "service_document",
]


class ErrorBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: str = Field(description="stable machine-readable code; each response lists the ones it can carry")
    message: str = Field(description="for humans; may change")
    details: Any = Field(
        default=None,
        description="what the code needs: the offending fields ({field, message[, type]}) of a "
        "400/422/413, {dependency, reason, retry_after[, status]} of a toolkit refusal, "
        "{allowed} of a 405, {request_id} of a 500; null otherwise",
    )


class ErrorResponse(BaseModel):
    """Every error of every Floodgate service (and of the gateway): ``{"error": {...}}``."""

    model_config = ConfigDict(extra="forbid")

    error: ErrorBody


@dataclass(frozen=True)
class ErrorSpec:
    """One documented error status of a service: the component name, the ``error.code`` values it
    can carry, when it happens, and whether it carries ``Retry-After``."""

    status: int
    name: str
    codes: tuple[str, ...]
    when: str
    retry_after: bool = False

    def response(self) -> dict[str, Any]:
        """The OpenAPI response object."""
        headers: dict[str, Any] = {REQUEST_ID_HEADER: {"$ref": "#/components/headers/RequestId"}}
        if self.retry_after:
            headers["Retry-After"] = {"$ref": "#/components/headers/RetryAfter"}
        return {
            "description": f"{self.status}: {self.when}. `error.code`: {', '.join(self.codes)}.",
            "headers": headers,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}},
        }


#: The 500 every chassis service may answer (the error handler's catch-all), documented once.
INTERNAL_ERROR = ErrorSpec(
    500, "InternalError", ("internal_error",), "a bug; `details.request_id` identifies the request"
)


def error_responses(specs: Iterable[ErrorSpec]) -> dict[str, Any]:
    """``components.responses`` for ``specs``, by name."""
    return {spec.name: spec.response() for spec in specs}


def probe_paths(*, ready_when: str) -> dict[str, Any]:
    """The chassis' own routes (``/healthz``, ``/readyz``, ``/metrics``); ``ready_when`` says what
    the service's readiness checks."""
    health = {
        "type": "object",
        "required": ["status", "service"],
        "properties": {"status": {"type": "string"}, "service": {"type": "string"}},
    }
    not_ready = ErrorSpec(
        503, "NotReady", ("not_ready",), "a dependency does not answer; `details.checks` says which"
    )
    return {
        "/healthz": {
            "get": {
                "operationId": "healthz",
                "summary": "the process is alive",
                "responses": {
                    "200": {
                        "description": "alive",
                        "content": {"application/json": {"schema": health}},
                    }
                },
            }
        },
        "/readyz": {
            "get": {
                "operationId": "readyz",
                "summary": f"ready: {ready_when}",
                "responses": {
                    "200": {"description": "ready", "content": {"application/json": {"schema": health}}},
                    "503": not_ready.response(),
                },
            }
        },
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "summary": "Prometheus metrics",
                "responses": {
                    "200": {"description": "Prometheus text format", "content": {"text/plain": {}}}
                },
            }
        },
    }


def openapi_components() -> dict[str, Any]:
    """The parameters and headers every service's document refers to by these names."""
    return {
        "parameters": {
            "Tenant": {
                "name": TENANT_HEADER,
                "in": "header",
                "required": True,
                "description": "set by the gateway from the caller's API key; a client never sends it",
                "schema": {"type": "string", "pattern": TENANT_PATTERN},
            },
            "Deadline": {
                "name": floodgate.DEADLINE_HEADER,
                "in": "header",
                "required": False,
                "description": "milliseconds the caller will wait: a shorter deadline than the operation's "
                "(never a longer one)",
                "schema": {"type": "integer", "minimum": 1},
            },
            "ExpectedTimeout": {
                "name": floodgate.ENVOY_TIMEOUT_HEADER,
                "in": "header",
                "required": False,
                "description": "the gateway's route deadline in milliseconds (set by Envoy); a shorter "
                "deadline than the operation's, never a longer one",
                "schema": {"type": "integer", "minimum": 1},
            },
            "RequestIdIn": {
                "name": REQUEST_ID_HEADER,
                "in": "header",
                "required": False,
                "description": "echoed back; generated when absent",
                "schema": {"type": "string"},
            },
        },
        "headers": {
            "RequestId": {"description": "the request id", "schema": {"type": "string"}},
            "RetryAfter": {
                "description": "whole seconds after which a retry is reasonable",
                "schema": {"type": "integer", "minimum": 0},
            },
        },
    }


def service_document(
    *,
    title: str,
    version: str,
    description: str,
    paths: dict[str, Any],
    schemas: dict[str, Any],
    errors: Iterable[ErrorSpec],
    ready_when: str,
    parameters: dict[str, Any] | None = None,
    headers: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A service's whole OpenAPI 3.1 document: its own ``paths`` and ``schemas``, plus what every
    chassis service serves and shares (the probes, ``/openapi.json`` itself, the error responses
    of ``errors``, the common parameters and headers, to which ``parameters`` and ``headers`` add)."""
    shared = openapi_components()
    all_paths = {**paths, **probe_paths(ready_when=ready_when)}
    all_paths["/openapi.json"] = {
        "get": {
            "operationId": "openapi",
            "summary": "this document",
            "responses": {
                "200": {"description": "OpenAPI 3.1 document", "content": {"application/json": {}}}
            },
        }
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version, "description": description},
        "paths": all_paths,
        "components": {
            "schemas": schemas,
            "responses": error_responses(errors),
            "parameters": {**shared["parameters"], **(parameters or {})},
            "headers": {**shared["headers"], **(headers or {})},
        },
    }

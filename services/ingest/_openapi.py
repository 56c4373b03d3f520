"""The OpenAPI 3.1 document of the ingest API (submit, status, list, cancel, requeue), at ``/openapi.json``.

The request schema is the model `_api.SubmitJobBody` validates with; the responses are described by
the models below (the tests check the API's real answers against them). The error contract — each
status an operation can answer, its ``error.code`` values, ``Retry-After`` — is the table
``ERROR_CONTRACT``; limits from the settings are written into the descriptions at start-up.
"""

from __future__ import annotations

from typing import Any, Literal

import chassis
import floodgate
from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import models_json_schema

from ._api import IDEMPOTENCY_HEADER, JOBS_PATH, SubmitJobBody
from ._states import JobState
from .settings import IngestApiSettings

__all__ = ["ERROR_CONTRACT", "OPERATIONS", "build_openapi"]

JobStateName = Literal[tuple(s.value for s in JobState)]  # type: ignore[valid-type]


class _Response(BaseModel):
    model_config = ConfigDict(extra="forbid")


class JobAccepted(_Response):
    job_id: int
    state: JobStateName = Field(description="`queued` for a new job; an existing job's state otherwise")
    status_url: str
    created: bool = Field(description="false: the same job was submitted before (Idempotency-Key or content)")


class JobProgress(_Response):
    chunks_total: int | None = Field(description="null until the worker has chunked the document")
    chunks_done: int
    percent: float


class JobTimestamps(_Response):
    queued: str = Field(json_schema_extra={"format": "date-time"})
    started: str | None = Field(json_schema_extra={"format": "date-time"})
    finished: str | None = Field(json_schema_extra={"format": "date-time"})
    next_run: str | None = Field(
        json_schema_extra={"format": "date-time"}, description="when a queued job may run next"
    )


class JobError(_Response):
    kind: str | None
    message: str


class Job(_Response):
    job_id: int
    doc_id: str
    source: Literal["text", "url"]
    state: JobStateName
    priority: int
    attempts: int
    max_attempts: int
    cancel_requested: bool
    progress: JobProgress
    timestamps: JobTimestamps
    last_error: JobError | None


class JobList(_Response):
    jobs: list[Job] = Field(description="newest first")
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null on the last")


class CancelAccepted(_Response):
    job_id: int
    state: JobStateName
    cancel_requested: bool
    status_url: str


class RequeueAccepted(_Response):
    job_id: int
    state: Literal["queued"]
    status_url: str


_E = chassis.ErrorSpec
ERROR_CONTRACT: dict[int, chassis.ErrorSpec] = {
    spec.status: spec
    for spec in (
        _E(
            400,
            "BadRequest",
            (
                "invalid_json",
                "invalid_tenant",
                "invalid_idempotency_key",
                "invalid_job_id",
                "invalid_state",
                "invalid_limit",
                "invalid_cursor",
            ),
            "the body is not a JSON object, or a header, path or query parameter is malformed; "
            "`details` names the field",
        ),
        _E(401, "MissingTenant", ("missing_tenant",), f"the gateway did not set {chassis.TENANT_HEADER}"),
        _E(
            404,
            "JobNotFound",
            ("job_not_found",),
            "no such job for this tenant (another tenant's job is indistinguishable from none)",
        ),
        _E(
            409,
            "TransitionRefused",
            ("job_finished", "not_requeueable"),
            "the job's state does not allow it: cancel of a job that already ended, requeue of a job "
            "that is not failed or dead; `details.state` is the job's state",
        ),
        _E(
            413,
            "PayloadTooLarge",
            ("body_too_large", "text_too_large", "metadata_too_large"),
            "the body, `text` or `metadata` is larger than its limit; `details` names the field",
        ),
        _E(
            422,
            "ValidationFailed",
            ("invalid_request", "idempotency_key_reused"),
            "a field is missing, of the wrong type or out of range (`details` lists each {field, message}), "
            "or the Idempotency-Key was used for a different document",
        ),
        _E(
            429,
            "Overloaded",
            ("queue_quota_exceeded", "overloaded"),
            "the tenant has as many queued jobs as its quota allows (`details`: {queued, limit}), or the "
            "API's database gate is full",
            retry_after=True,
        ),
        chassis.INTERNAL_ERROR,
        _E(
            503,
            "Unavailable",
            ("database_unavailable", "circuit_open", "retry_budget_exhausted"),
            "the job store is briefly away (a retry with the same Idempotency-Key is safe)",
            retry_after=True,
        ),
        _E(
            504,
            "DeadlineExceeded",
            ("deadline_exceeded",),
            "the request's deadline passed (a submission's: the budget's omnirag_submit, or a shorter one "
            "the caller or the gateway asked for)",
        ),
    )
}

_ANY = (400, 401, 413, 429, 500, 503, 504)  # the tenant, the body limit, the database: every operation


class Operation:
    """One public operation of the API: method, path, prose, models and the statuses it answers."""

    def __init__(
        self,
        *,
        method: str,
        path: str,
        operation_id: str,
        summary: str,
        description: str,
        success: dict[int, str],
        response: type[BaseModel],
        errors: tuple[int, ...],
        parameters: tuple[str, ...] = (),
        request: type[BaseModel] | None = None,
    ) -> None:
        self.method = method
        self.path = path
        self.operation_id = operation_id
        self.summary = summary
        self.description = description
        self.success = success
        self.response = response
        self.errors = tuple(sorted(set(errors)))
        self.parameters = parameters
        self.request = request


_JOB = f"{JOBS_PATH}/{{job_id}}"
OPERATIONS: tuple[Operation, ...] = (
    Operation(
        method="post",
        path=JOBS_PATH,
        operation_id="submitJob",
        summary="submit a document (text or url) for ingestion",
        description=(
            "Queues one job; workers chunk, embed and store the document. A resubmission of the same "
            "document (same content, or the same Idempotency-Key) returns the existing job with 200."
        ),
        success={202: "a new job, queued", 200: "the job this document was submitted as before"},
        response=JobAccepted,
        errors=(*_ANY, 422),
        parameters=("Idempotency", "Deadline", "ExpectedTimeout"),
        request=SubmitJobBody,
    ),
    Operation(
        method="get",
        path=JOBS_PATH,
        operation_id="listJobs",
        summary="the tenant's jobs, newest first, a page at a time",
        description="Filter by `state`; follow `next_cursor` for the next page.",
        success={200: "a page of jobs"},
        response=JobList,
        errors=_ANY,
        parameters=("State", "Limit", "Cursor"),
    ),
    Operation(
        method="get",
        path=_JOB,
        operation_id="getJob",
        summary="a job's state, progress and last error",
        description="Poll it: `state` ends as succeeded, failed, dead or cancelled.",
        success={200: "the job"},
        response=Job,
        errors=(*_ANY, 404),
        parameters=("JobId",),
    ),
    Operation(
        method="post",
        path=f"{_JOB}/cancel",
        operation_id="cancelJob",
        summary="cancel a job",
        description=(
            "A queued job is cancelled at once (200); a running one is asked to stop (202: poll "
            "`status_url` until `cancelled`). Cancelling a cancelled job is a 200; one that ended "
            "otherwise is a 409."
        ),
        success={200: "cancelled", 202: "the running job was asked to stop"},
        response=CancelAccepted,
        errors=(*_ANY, 404, 409),
        parameters=("JobId",),
    ),
    Operation(
        method="post",
        path=f"{_JOB}/requeue",
        operation_id="requeueJob",
        summary="run a failed or dead job again",
        description="The job is queued again with its attempts reset; other states are a 409.",
        success={202: "queued again"},
        response=RequeueAccepted,
        errors=(*_ANY, 404, 409),
        parameters=("JobId",),
    ),
)


def _parameters() -> dict[str, Any]:
    return {
        "JobId": {
            "name": "job_id",
            "in": "path",
            "required": True,
            "schema": {"type": "integer", "minimum": 1, "maximum": 999_999_999_999_999_999},
        },
        "Idempotency": {
            "name": IDEMPOTENCY_HEADER,
            "in": "header",
            "required": False,
            "description": "a resubmission with the same key returns the same job (422 if the document differs)",
            "schema": {"type": "string", "minLength": 1, "maxLength": 255},
        },
        "State": {
            "name": "state",
            "in": "query",
            "required": False,
            "schema": {"type": "string", "enum": [s.value for s in JobState]},
        },
        "Limit": {
            "name": "limit",
            "in": "query",
            "required": False,
            "schema": {"type": "integer", "minimum": 1, "maximum": 200, "default": 50},
        },
        "Cursor": {
            "name": "cursor",
            "in": "query",
            "required": False,
            "description": "`next_cursor` of the previous page (400 invalid_cursor for any other value)",
            "schema": {"type": "string"},
        },
    }


def _operation(op: Operation, limits: str) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    for status, text in sorted(op.success.items()):
        headers: dict[str, Any] = {chassis.REQUEST_ID_HEADER: {"$ref": "#/components/headers/RequestId"}}
        if op.operation_id == "submitJob":
            headers["Location"] = {"description": "the job's status URL", "schema": {"type": "string"}}
        responses[str(status)] = {
            "description": text,
            "headers": headers,
            "content": {
                "application/json": {"schema": {"$ref": f"#/components/schemas/{op.response.__name__}"}}
            },
        }
    for status in op.errors:
        responses[str(status)] = {"$ref": f"#/components/responses/{ERROR_CONTRACT[status].name}"}
    operation: dict[str, Any] = {
        "operationId": op.operation_id,
        "summary": op.summary,
        "description": op.description + (limits if op.request is not None else ""),
        "parameters": [
            {"$ref": "#/components/parameters/Tenant"},
            {"$ref": "#/components/parameters/RequestIdIn"},
            *({"$ref": f"#/components/parameters/{name}"} for name in op.parameters),
        ],
        "responses": responses,
    }
    if op.request is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": f"#/components/schemas/{op.request.__name__}"}}
            },
        }
    return operation


def build_openapi(settings: IngestApiSettings, *, version: str = "1.0.0") -> dict[str, Any]:
    """The whole document, with the limits of ``settings`` written into the submit operation."""
    models: list[tuple[type[BaseModel], Any]] = [(chassis.ErrorResponse, "serialization")]
    for op in OPERATIONS:
        if op.request is not None:
            models.append((op.request, "validation"))
        models.append((op.response, "serialization"))
    _, top = models_json_schema(models, ref_template="#/components/schemas/{model}")
    schemas = top.get("$defs", {})
    # what `_validate_submission` checks beyond the model: exactly one of text and url
    schemas[SubmitJobBody.__name__]["oneOf"] = [{"required": ["text"]}, {"required": ["url"]}]
    limits = (
        f"\n\nLimits: body at most {settings.max_body_bytes} bytes, `text` at most "
        f"{settings.max_text_bytes} bytes, `metadata` at most {settings.max_metadata_bytes} bytes (JSON); "
        "at most the tenant's quota of queued jobs (`queued_jobs` in the budget's [tenants]; 429 queue_quota_exceeded, "
        f"Retry-After {floodgate.retry_after_seconds(settings.quota_retry_after)} s); "
        f"{settings.max_attempts} attempts per job."
    )
    paths: dict[str, Any] = {}
    for op in OPERATIONS:
        paths.setdefault(op.path, {})[op.method] = _operation(op, limits)
    return chassis.service_document(
        title="Floodgate ingest API (omniRAG jobs)",
        version=version,
        description=(
            "Submit documents for ingestion and follow their jobs. Every error is JSON "
            '`{"error": {"code", "message", "details"}}`; each response carries `x-request-id`. '
            f"The tenant comes from the gateway's `{chassis.TENANT_HEADER}` header, never from the body."
        ),
        paths=paths,
        schemas=schemas,
        errors=ERROR_CONTRACT.values(),
        ready_when="its database answers",
        parameters=_parameters(),
    )

"""The omniRAG jobs API: submit, status, list, cancel, requeue — all scoped to the gateway's tenant.

A submission is one statement (``_queue.submit_job``); the work happens in the workers. Errors are the
chassis' JSON shape and name the offending field: 422 bad fields, 413 oversize text, 404 unknown job
(or another tenant's: indistinguishable), 409 a transition the job's state does not allow, 429 with
``Retry-After`` over the tenant's queued-job quota, 503 with ``Retry-After`` when the database is away,
504 when a submission passes its deadline (the budget's ``omnirag_submit``, or less if the caller's
``x-floodgate-deadline-ms`` / ``x-envoy-expected-rq-timeout-ms`` asks for less).
The contract is OpenAPI 3.1 at ``/openapi.json`` (`_openapi`).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

import chassis
import floodgate
from pydantic import BaseModel, ConfigDict, Field
from quart import Response, jsonify, request
from quart_trio import QuartTrio

from . import _queue as q
from ._db import Database
from ._metrics import IngestApiMetrics
from ._quotas import queued_quota
from ._states import JobState
from .settings import IngestApiSettings

__all__ = ["IngestApi", "SubmitJobBody", "install_routes"]

T = TypeVar("T")
JOBS_PATH = "/v1/omnirag/jobs"
IDEMPOTENCY_HEADER = "Idempotency-Key"
#: The budget file's endpoint for submissions (its deadline and body limit apply to them).
SUBMIT_ENDPOINT = "omnirag_submit"


class SubmitJobBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    doc_id: str = Field(min_length=1, max_length=256, pattern=r"^[^\x00-\x1f\x7f]+$")
    text: str | None = None
    url: str | None = Field(default=None, min_length=1, max_length=2048)
    metadata: dict[str, Any] = Field(default_factory=dict)
    priority: int = Field(default=100, ge=0, le=1000, description="lower runs sooner")


@dataclass
class IngestApi:
    """App-lifetime objects of the API, stored on the app (``app.extensions["ingest"]``)."""

    settings: IngestApiSettings
    db: Database
    metrics: IngestApiMetrics
    budget: floodgate.Budget


def _field_error(
    status: int, code: str, field: str, message: str, headers: dict[str, str] | None = None
) -> chassis.ApiError:
    return chassis.ApiError(
        status, code, message, details=[{"field": field, "message": message}], headers=headers
    )


def _state(app: QuartTrio) -> IngestApi:
    return app.extensions["ingest"]


async def _db_call(api: IngestApi, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
    """A database that cannot be reached is a 503 with Retry-After: the job store is briefly away
    (a restart, a failover), and the client's retry with the same Idempotency-Key is safe. A full
    gate (Overloaded) and a timeout (DeadlineExceeded) keep the toolkit's own mapping."""
    try:
        return await api.db.run(fn, *args)
    except (floodgate.Overloaded, floodgate.DeadlineExceeded):
        raise
    except Exception as exc:
        if isinstance(exc, floodgate.DependencyError) or floodgate.is_transient_pg_error(exc):
            raise chassis.ApiError(
                503,
                "database_unavailable",
                "the job store is unavailable; retry shortly",
                headers={"Retry-After": "2"},
            ) from exc
        raise


async def _submit_db_call(api: IngestApi, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
    """`_db_call` within the submission's deadline, the way the online service bounds its endpoints."""
    seconds = floodgate.deadline_from_headers(request.headers, api.budget.endpoint(SUBMIT_ENDPOINT).deadline)
    try:
        with floodgate.deadline_after(seconds):
            return await _db_call(api, fn, *args)
    except floodgate.DeadlineExceeded as exc:
        if exc.dependency is not None:
            raise
        raise floodgate.DeadlineExceeded(
            f"{SUBMIT_ENDPOINT} deadline of {seconds:g}s passed while waiting for the job store",
            dependency="db",
        ) from None


def _parse_job_id(raw: str) -> int:
    if not raw.isdigit() or len(raw) > 18 or int(raw) == 0:
        raise _field_error(
            400, "invalid_job_id", "job_id", f"job_id must be a positive integer, got {raw[:40]!r}"
        )
    return int(raw)


def _job_url(job_id: int) -> str:
    return f"{JOBS_PATH}/{job_id}"


def _encode_cursor(job_id: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"before": job_id}).encode()).decode().rstrip("=")


def _decode_cursor(raw: str) -> int:
    try:
        data = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
        before = int(data["before"])
        if before <= 0:
            raise ValueError
        return before
    except (ValueError, KeyError, TypeError, json.JSONDecodeError):
        raise _field_error(400, "invalid_cursor", "cursor", "cursor is not one this API returned") from None


def _validate_submission(body: SubmitJobBody, settings: IngestApiSettings) -> tuple[str, str]:
    """-> (source, content_hash). Exactly one of text/url; sizes; an http(s) url."""
    if (body.text is None) == (body.url is None):
        raise chassis.ApiError(
            422,
            "invalid_request",
            "give exactly one of text or url",
            details=[
                {"field": "text", "message": "exactly one of text or url is required"},
                {"field": "url", "message": "exactly one of text or url is required"},
            ],
        )
    metadata_json = json.dumps(body.metadata)
    if "\\u0000" in metadata_json:
        raise _field_error(422, "invalid_request", "metadata", "metadata must not contain NUL characters")
    metadata_size = len(metadata_json.encode())
    if metadata_size > settings.max_metadata_bytes:
        raise _field_error(
            413,
            "metadata_too_large",
            "metadata",
            f"metadata is {metadata_size} bytes; the limit is {settings.max_metadata_bytes}",
        )
    if body.text is not None:
        size = len(body.text.encode())
        if size > settings.max_text_bytes:
            raise _field_error(
                413, "text_too_large", "text", f"text is {size} bytes; the limit is {settings.max_text_bytes}"
            )
        if not body.text.strip():
            raise _field_error(422, "invalid_request", "text", "text is empty")
        if "\x00" in body.text:  # PostgreSQL text cannot hold NUL
            raise _field_error(422, "invalid_request", "text", "text must not contain NUL characters")
        return "text", hashlib.sha256(body.text.encode()).hexdigest()
    assert body.url is not None
    parts = urlsplit(body.url)
    if parts.scheme not in ("http", "https") or not parts.netloc or "\x00" in body.url:
        raise _field_error(422, "invalid_request", "url", "url must be an absolute http(s) URL")
    return "url", hashlib.sha256(f"url:{body.url}".encode()).hexdigest()


def install_routes(app: QuartTrio) -> None:
    @app.post(JOBS_PATH)
    async def submit() -> Response:
        api = _state(app)
        tenant = chassis.require_tenant()
        key = request.headers.get(IDEMPOTENCY_HEADER)
        if key is not None and not (1 <= len(key) <= 255):
            raise _field_error(
                400, "invalid_idempotency_key", IDEMPOTENCY_HEADER, "Idempotency-Key must be 1-255 characters"
            )
        body = await chassis.parse_body(SubmitJobBody)
        source, content_hash = _validate_submission(body, api.settings)
        try:
            result = await _submit_db_call(
                api,
                functools.partial(
                    q.submit_job,
                    tenant=tenant,
                    doc_id=body.doc_id,
                    content_hash=content_hash,
                    source=source,
                    text=body.text,
                    url=body.url,
                    metadata=body.metadata,
                    priority=body.priority,
                    max_attempts=api.settings.max_attempts,
                    idempotency_key=key,
                    max_queued=queued_quota(api.budget, tenant),
                ),
            )
        except q.QuotaExceeded as exc:
            api.metrics.submissions.labels("quota_exceeded").inc()
            raise chassis.ApiError(
                429,
                "queue_quota_exceeded",
                f"tenant has {exc.queued} queued jobs (limit {exc.limit}); retry later",
                details={"queued": exc.queued, "limit": exc.limit},
                headers={"Retry-After": str(floodgate.retry_after_seconds(api.settings.quota_retry_after))},
            ) from None
        except q.IdempotencyKeyReused as exc:
            api.metrics.submissions.labels("key_reused").inc()
            raise _field_error(422, "idempotency_key_reused", IDEMPOTENCY_HEADER, str(exc)) from None
        api.metrics.submissions.labels("created" if result.created else "existing").inc()
        payload = {
            "job_id": result.job_id,
            "state": str(result.state),
            "status_url": _job_url(result.job_id),
            "created": result.created,
        }
        response = jsonify(payload)
        response.status_code = 202 if result.created else 200
        response.headers["Location"] = _job_url(result.job_id)
        return response

    @app.get(f"{JOBS_PATH}/<job_id>")
    async def status(job_id: str) -> Response:
        api = _state(app)
        tenant = chassis.require_tenant()
        record = await _db_call(api, q.get_job, tenant, _parse_job_id(job_id))
        if record is None:
            raise _field_error(404, "job_not_found", "job_id", f"no job {job_id} for this tenant")
        return jsonify(record.to_json())

    @app.get(JOBS_PATH)
    async def list_jobs() -> Response:
        api = _state(app)
        tenant = chassis.require_tenant()
        raw_state = request.args.get("state")
        state = None
        if raw_state:
            try:
                state = JobState(raw_state)
            except ValueError:
                raise _field_error(
                    400, "invalid_state", "state", f"state must be one of {[s.value for s in JobState]}"
                ) from None
        raw_limit = request.args.get("limit", "50")
        if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= 200:
            raise _field_error(400, "invalid_limit", "limit", "limit must be an integer from 1 to 200")
        limit = int(raw_limit)
        cursor = request.args.get("cursor")
        before = _decode_cursor(cursor) if cursor else None
        records = await _db_call(
            api, functools.partial(q.list_jobs, state=state, limit=limit + 1, before_id=before), tenant
        )
        page = records[:limit]
        next_cursor = _encode_cursor(page[-1].job_id) if len(records) > limit else None
        return jsonify({"jobs": [r.to_json() for r in page], "next_cursor": next_cursor})

    @app.post(f"{JOBS_PATH}/<job_id>/cancel")
    async def cancel(job_id: str) -> Response:
        api = _state(app)
        tenant = chassis.require_tenant()
        jid = _parse_job_id(job_id)
        outcome = await _db_call(api, q.cancel_job, tenant, jid)
        if outcome is None:
            raise _field_error(404, "job_not_found", "job_id", f"no job {job_id} for this tenant")
        api.metrics.cancels.labels(str(outcome.state)).inc()
        if outcome.latency is not None:
            api.metrics.job_latency.labels(str(outcome.state)).observe(outcome.latency)
        if not outcome.changed and outcome.state != JobState.CANCELLED:
            raise chassis.ApiError(
                409,
                "job_finished",
                f"job {jid} already ended as {outcome.state}",
                details={"state": str(outcome.state)},
            )
        running = outcome.state == JobState.RUNNING
        response = jsonify(
            {
                "job_id": jid,
                "state": str(outcome.state),
                "cancel_requested": True,
                "status_url": _job_url(jid),
            }
        )
        # Running: accepted, the worker stops within seconds; poll status_url for "cancelled".
        response.status_code = 202 if running else 200
        return response

    @app.post(f"{JOBS_PATH}/<job_id>/requeue")
    async def requeue(job_id: str) -> Response:
        api = _state(app)
        tenant = chassis.require_tenant()
        jid = _parse_job_id(job_id)
        if not await _db_call(api, q.requeue_job, tenant, jid):
            record = await _db_call(api, q.get_job, tenant, jid)
            if record is None:
                raise _field_error(404, "job_not_found", "job_id", f"no job {job_id} for this tenant")
            raise chassis.ApiError(
                409,
                "not_requeueable",
                f"only failed or dead jobs can be requeued (job is {record.state})",
                details={"state": str(record.state)},
            )
        response = jsonify({"job_id": jid, "state": "queued", "status_url": _job_url(jid)})
        response.status_code = 202
        return response

    # Imported here: the document is generated from this module's models and paths.
    from ._openapi import build_openapi

    document = build_openapi(_state(app).settings)

    @app.get("/openapi.json")
    async def openapi() -> Response:
        return jsonify(document)

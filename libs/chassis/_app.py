"""The app factory every Floodgate service starts from.

``create_app`` returns a QuartTrio app that already has what a service behind a gateway needs:
``/healthz`` (alive), ``/readyz`` (its dependencies answer), ``/metrics`` (Prometheus text: requests by
route and status class, and what the process costs), request ids,
an access-log event per request, and one JSON error shape for every failure — including toolkit
overload errors (429/503/504/502 with ``Retry-After``) and unexpected exceptions (a 500 that names the
request id and never carries a stack trace).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import floodgate
import structlog
import trio
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from quart import Quart, Response, g, jsonify, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from ._errors import ApiError, error_payload
from ._process import register_process_metrics

__all__ = [
    "REQUEST_ID_HEADER",
    "TENANT_HEADER",
    "ChassisState",
    "ReadinessCheck",
    "chassis_state",
    "create_app",
]

REQUEST_ID_HEADER = "x-request-id"
TENANT_HEADER = "x-floodgate-tenant"
READINESS_TIMEOUT = 2.0

ReadinessCheck = Callable[[], Awaitable[object]]

log = structlog.get_logger("chassis")

#: Request-latency buckets. The SLO burn-rate alerts (`floodgate alerts`) read the share of requests
#: slower than each SLO latency of the budget from the bucket at exactly that bound, so each
#: ``slo_p95_ms``/``slo_p99_ms`` must be one (`floodgate.slo_bucket_bounds` lists them;
#: tests/cluster/test_prometheus_config.py fails naming a missing one).
_REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.3, 0.5, 1, 1.5, 2.5, 3, 5, 6, 10, 30)

# What handlers raise on purpose; anything else reaching the edge is a bug (a 500).
_EXPECTED_ERRORS = (ApiError, HTTPException, floodgate.FloodgateError)


@dataclass
class ChassisState:
    """App-lifetime objects the chassis owns; stored on the app, never in module globals.

    ``readiness`` maps a name to an async check that ``/readyz`` runs (each within
    ``READINESS_TIMEOUT`` seconds); a service adds its own once its pools are open.
    """

    service: str
    registry: CollectorRegistry
    requests: Counter
    latency: Histogram
    readiness: dict[str, ReadinessCheck] = field(default_factory=dict)


def chassis_state(app: QuartTrio) -> ChassisState:
    """The chassis' state of ``app`` (made by `create_app`)."""
    return app.extensions["chassis"]


class _ChassisApp(QuartTrio):
    """QuartTrio, except for a nursery's exception group that holds an unexpected error.

    quart-trio answers a group with the handler of its first leaf that has one, so a bug raised
    next to an ``Overloaded`` became a 429 and the bug was never logged. A group holding anything
    but the errors handlers raise on purpose is answered as the bug it contains: a logged 500.
    """

    async def handle_user_exception(self, error: Exception | BaseExceptionGroup) -> Any:
        if isinstance(error, ExceptionGroup) and error.split(_EXPECTED_ERRORS)[1] is not None:
            return await Quart.handle_user_exception(self, error)  # the handler of Exception: 500
        return await super().handle_user_exception(error)


def create_app(
    service: str,
    *,
    registry: CollectorRegistry | None = None,
    readiness: Mapping[str, ReadinessCheck] | None = None,
    max_body_bytes: int = 1_048_576,
) -> QuartTrio:
    """Make a service app: a QuartTrio app with the edge contract every service shares.

    - ``/healthz`` (alive); ``/readyz`` runs the ``readiness`` checks concurrently, each bounded by
      ``READINESS_TIMEOUT``, and answers 503 naming the ones that failed; ``/metrics`` is the
      Prometheus text of ``registry`` (a fresh one per app unless given: never the global one).
      The process's one registry: the chassis adds ``http_requests_total`` and
      ``http_request_duration_seconds`` (labelled with the status class, ``2xx``..``5xx``, so fast
      refusals do not pull the served requests' percentiles down) and the process collectors
      (`register_process_metrics`); the service hands the same registry to everything it builds.
    - ``x-request-id`` is taken from the gateway or made, bound to structlog's context with the
      tenant, and echoed in the response. Request bodies (at most ``max_body_bytes``) are read
      before the handler runs, so an early answer cannot wedge a keep-alive connection.
    - Every error is JSON ``{"error": {"code", "message", "details"}}``: an `ApiError` as raised;
      a ``floodgate.FloodgateError`` with its own status (429/503/504/502) and ``Retry-After``;
      an oversize body as 413 (and the connection closed); a method the path does not serve as 405
      with ``Allow`` (never a 404: the path exists); anything unexpected as a 500 that
      names the request id and is logged with its traceback, never sent to the client.

    Add readiness checks later with ``chassis_state(app).readiness[name] = fn``.
    """
    app = _ChassisApp(service)
    app.config["MAX_CONTENT_LENGTH"] = max_body_bytes
    app.config["JSON_SORT_KEYS"] = False
    registry = registry if registry is not None else CollectorRegistry()
    state = ChassisState(
        service=service,
        registry=registry,
        requests=Counter(
            "http_requests",
            "HTTP requests handled",
            ["route", "method", "status", "status_class"],
            registry=registry,
        ),
        latency=Histogram(
            "http_request_duration_seconds",
            "HTTP request duration",
            ["route", "method", "status_class"],
            registry=registry,
            buckets=_REQUEST_BUCKETS,
        ),
        readiness=dict(readiness or {}),
    )
    register_process_metrics(registry)
    app.extensions["chassis"] = state
    _install_request_context(app, state)
    _install_error_handlers(app)
    _install_probe_routes(app, state)
    return app


def _install_request_context(app: QuartTrio, state: ChassisState) -> None:
    @app.before_request
    async def _bind_request() -> None:
        request_id = request.headers.get(REQUEST_ID_HEADER) or uuid.uuid4().hex
        g.request_id = request_id
        g.started_at = time.perf_counter()
        structlog.contextvars.bind_contextvars(
            request_id=request_id, tenant=request.headers.get(TENANT_HEADER)
        )
        # Read the (size-limited) body before anything can answer: a response sent while the
        # client is still sending leaves unread bytes on a keep-alive connection, and the
        # client's next request on it hangs (seen with h11: 20 of 300 requests stuck).
        if request.content_length or "chunked" in request.headers.get("transfer-encoding", ""):
            await request.get_data(cache=True)

    @app.after_request
    async def _finish_request(response: Response) -> Response:
        request_id = getattr(g, "request_id", None) or uuid.uuid4().hex
        response.headers[REQUEST_ID_HEADER] = request_id
        route = request.url_rule.rule if request.url_rule is not None else "unmatched"
        elapsed = time.perf_counter() - getattr(g, "started_at", time.perf_counter())
        status = response.status_code
        status_class = f"{status // 100}xx"
        state.requests.labels(route, request.method, str(status), status_class).inc()
        state.latency.labels(route, request.method, status_class).observe(elapsed)
        if route not in ("/healthz", "/readyz", "/metrics"):
            log.info(
                "request",
                method=request.method,
                path=request.path,
                status=status,
                duration_ms=round(elapsed * 1000, 2),
            )
        return response


def _json_error(status: int, payload: dict, headers: Mapping[str, str] | None = None) -> Response:
    response = jsonify(payload)
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def _install_error_handlers(app: QuartTrio) -> None:
    @app.errorhandler(ApiError)
    async def _api_error(exc: ApiError) -> Response:
        return _json_error(exc.status, exc.payload(), exc.headers)

    @app.errorhandler(HTTPException)
    async def _http_error(exc: HTTPException) -> Response:
        code = (exc.name or "http_error").lower().replace(" ", "_")
        message = exc.description or exc.name or "HTTP error"
        if exc.code == 413:
            limit = app.config["MAX_CONTENT_LENGTH"]
            message = f"request body is larger than the limit of {limit} bytes"
            # The rest of the body was never read: close the connection rather than reuse it.
            return _json_error(
                413,
                error_payload("body_too_large", message, {"limit_bytes": limit}),
                {"Connection": "close"},
            )
        if isinstance(exc, MethodNotAllowed):
            # The path exists, the method does not: say which ones do (RFC 9110 requires Allow).
            allowed = sorted(exc.valid_methods or ())
            return _json_error(
                405,
                error_payload(
                    "method_not_allowed",
                    f"{request.method} is not served at {request.path}; allowed: {', '.join(allowed)}",
                    {"allowed": allowed},
                ),
                {"Allow": ", ".join(allowed)},
            )
        return _json_error(exc.code or 500, error_payload(code, message))

    @app.errorhandler(Exception)
    async def _unexpected(exc: Exception) -> Response:
        toolkit = _toolkit_error_response(exc)
        if toolkit is not None:
            return toolkit
        request_id = getattr(g, "request_id", None)
        log.exception("unhandled_exception", error_type=type(exc).__name__)
        return _json_error(
            500,
            error_payload(
                "internal_error",
                "unexpected server error; quote the request id when reporting it",
                {"request_id": request_id},
            ),
        )


def _toolkit_error_response(exc: Exception) -> Response | None:
    """Map a ``floodgate.FloodgateError`` (overload, open breaker, deadline...) to the status, body
    and ``Retry-After`` the toolkit defines for it.

    quart-trio hands a nursery's exception group to the handlers one leaf at a time, so a fan-out
    whose branch was refused arrives here as that branch's toolkit error."""
    if not isinstance(exc, floodgate.FloodgateError):
        return None
    log.info(
        "request_refused", code=exc.code, dependency=exc.dependency, reason=exc.reason, status=exc.http_status
    )
    retry_after = floodgate.retry_after_header(exc)
    headers = {"Retry-After": retry_after} if retry_after is not None else None
    return _json_error(exc.http_status, {"error": floodgate.error_body(exc)}, headers)


def _install_probe_routes(app: QuartTrio, state: ChassisState) -> None:
    @app.get("/healthz")
    async def healthz() -> Response:
        return jsonify({"status": "ok", "service": state.service})

    @app.get("/readyz")
    async def readyz() -> Response:
        results: dict[str, str] = {}

        async def run_check(name: str, check: ReadinessCheck) -> None:
            with trio.move_on_after(READINESS_TIMEOUT) as scope:
                try:
                    await check()
                    results[name] = "ok"
                except Exception as exc:
                    results[name] = f"failed: {type(exc).__name__}: {exc}"[:300]
            if scope.cancelled_caught:
                results[name] = f"failed: no answer within {READINESS_TIMEOUT}s"

        async with trio.open_nursery() as nursery:
            for name, check in state.readiness.items():
                nursery.start_soon(run_check, name, check)
        ready = all(v == "ok" for v in results.values())
        body = {"status": "ready" if ready else "not_ready", "service": state.service, "checks": results}
        if ready:
            return jsonify(body)
        return _json_error(
            503, error_payload("not_ready", "a dependency of this service does not answer", body)
        )

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(state.registry), content_type=CONTENT_TYPE_LATEST)

"""A tiny HTTP side: ``/healthz``, ``/readyz``, ``/metrics`` for the supervisor and Prometheus, and
``GET /v1/usage`` for the gateway (a tenant's token and cost budgets, `services.ratelimit._usage`).

Four GET routes do not justify a web framework: the standard library's threading HTTP server in a
daemon thread answers them, apart from the gRPC threads.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import chassis
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from ._store import CounterStoreError
from ._usage import USAGE_PATH

__all__ = ["ProbeServer", "start_probe_server"]


class ProbeServer:
    def __init__(self, server: ThreadingHTTPServer, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


def start_probe_server(
    host: str,
    port: int,
    *,
    registry: CollectorRegistry,
    ready: Callable[[], str | None],
    usage: Callable[[str], dict[str, Any]] | None = None,
    openapi: dict[str, Any] | None = None,
) -> ProbeServer:
    """Listen on ``host:port``. ``ready()`` returns None when ready, else a reason (for 503);
    ``usage(tenant)`` answers ``GET /v1/usage`` for the tenant of the gateway's header (absent: 404),
    ``openapi`` is served at ``/openapi.json``."""
    openapi_body = json.dumps(openapi).encode() if openapi is not None else None

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = 5  # a client that stalls mid-request is dropped

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/healthz":
                self._send(200, "application/json", b'{"status":"ok"}')
            elif path == "/readyz":
                reason = ready()
                if reason is None:
                    self._send(200, "application/json", b'{"status":"ready"}')
                else:
                    self._send(503, "application/json", _error("not_ready", reason))
            elif path == "/metrics":
                self._send(200, CONTENT_TYPE_LATEST, generate_latest(registry))
            elif path == "/openapi.json" and openapi_body is not None:
                self._send(200, "application/json", openapi_body)
            elif path == USAGE_PATH and usage is not None:
                self._usage(usage)
            else:
                self._send(404, "application/json", _error("not_found", f"no route {path}"))

        def _usage(self, report: Callable[[str], dict[str, Any]]) -> None:
            # The tenant comes from the gateway (set from the API key) and from nowhere else.
            tenant = self.headers.get(chassis.TENANT_HEADER)
            if tenant is None:
                message = f"no {chassis.TENANT_HEADER} header: call through the gateway with an API key"
                self._send(401, "application/json", _error("missing_tenant", message))
            elif not chassis.is_valid_tenant(tenant):
                message = f"{chassis.TENANT_HEADER} does not match {chassis.TENANT_PATTERN}"
                self._send(400, "application/json", _error("invalid_tenant", message))
            else:
                try:
                    body = json.dumps(report(tenant)).encode()
                except CounterStoreError as exc:
                    message = f"the usage counters cannot be read now: {exc}"
                    self._send(503, "application/json", _error("unavailable", message), retry_after=1)
                else:
                    self._send(200, "application/json", body)

        def _send(
            self, status: int, content_type: str, body: bytes, *, retry_after: int | None = None
        ) -> None:
            self.send_response(status)
            if retry_after is not None:
                self.send_header("retry-after", str(retry_after))
            self.send_header("content-type", content_type)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return  # probes are polled constantly; no access log

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="ratelimit-probes", daemon=True)
    thread.start()
    return ProbeServer(server, thread)


def _error(code: str, message: str) -> bytes:
    return json.dumps({"error": {"code": code, "message": message, "details": None}}).encode()

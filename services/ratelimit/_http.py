"""A tiny HTTP side for the supervisor and Prometheus: ``/healthz``, ``/readyz``, ``/metrics``.

Three GET routes do not justify a web framework: the standard library's threading HTTP server in a
daemon thread answers them, apart from the gRPC threads.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

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
    host: str, port: int, *, registry: CollectorRegistry, ready: Callable[[], str | None]
) -> ProbeServer:
    """Listen on ``host:port``. ``ready()`` returns None when ready, else a reason (for 503)."""

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
            else:
                self._send(404, "application/json", _error("not_found", f"no route {path}"))

        def _send(self, status: int, content_type: str, body: bytes) -> None:
            self.send_response(status)
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

"""A tiny HTTP/1.1 side for the supervisor and Prometheus: ``/healthz``, ``/readyz``, ``/metrics``.

Three GET routes do not justify a web framework on the asyncio side; this reads one request line
and its headers (bounded in size and time), answers, and closes the connection.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

__all__ = ["start_probe_server"]

_MAX_HEAD = 8192
_READ_TIMEOUT = 5.0


async def start_probe_server(
    host: str, port: int, *, registry: CollectorRegistry, ready: Callable[[], Awaitable[str | None]]
) -> asyncio.Server:
    """Listen on ``host:port``. ``ready()`` returns None when ready, else a reason (for 503)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(_READ_TIMEOUT):
                head = await reader.readuntil(b"\r\n\r\n")
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            writer.close()
            return
        try:
            method, target, _ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
        except ValueError:
            method, target = "", ""
        path = target.split("?", 1)[0]
        if method not in ("GET", "HEAD"):
            status, ctype, body = 405, "application/json", _error("method_not_allowed", "only GET")
        elif path == "/healthz":
            status, ctype, body = 200, "application/json", b'{"status":"ok"}'
        elif path == "/readyz":
            reason = await ready()
            if reason is None:
                status, ctype, body = 200, "application/json", b'{"status":"ready"}'
            else:
                status, ctype, body = 503, "application/json", _error("not_ready", reason)
        elif path == "/metrics":
            status, ctype, body = 200, CONTENT_TYPE_LATEST, generate_latest(registry)
        else:
            status, ctype, body = 404, "application/json", _error("not_found", f"no route {path}")
        reason_phrase = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}[status]
        writer.write(
            f"HTTP/1.1 {status} {reason_phrase}\r\ncontent-type: {ctype}\r\ncontent-length: {len(body)}\r\n"
            "connection: close\r\n\r\n".encode("latin-1")
        )
        if method != "HEAD":
            writer.write(body)
        try:
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    return await asyncio.start_server(handle, host, port, limit=_MAX_HEAD)


def _error(code: str, message: str) -> bytes:
    return json.dumps({"error": {"code": code, "message": message, "details": None}}).encode()

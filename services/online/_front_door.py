"""The endpoint doors at the ASGI edge: a refused request never becomes a framework request.

Under overload most requests are refused, so the refusal is the service's hottest path, and it
runs on the same event loop as the admitted requests: every microsecond it costs is queueing
for them. Through Quart a refusal cost as much CPU as a small request (request and app contexts,
before/after hooks, the error handler, ``jsonify``, a log event); here, in front of Quart, it is
a dict lookup, the tenant header check, the door's counter, draining a small body and one
pre-rendered response.

For each endpoint route (method + exact path, from the endpoint records) `FrontDoor`:

1. leaves requests without a valid tenant header to the app (401/400 come from the chassis:
   the tenant is checked before the door, as before);
2. takes a place at the endpoint's door (a `floodgate.Door`) for the request's tenant, holds it
   while the app handles the request (body, validation, the endpoint, sending the response), and
   gives it back however the request ends;
3. or answers 429 at once (``tenant_share_exceeded`` when the tenant holds its share of the
   door, ``overloaded`` when the door is full) — the same error body, ``Retry-After``, ``x-request-id`` and
   ``Server-Timing`` as any other endpoint error. The body is read and dropped first (a response
   sent before the body is read leaves bytes on a keep-alive connection, and the client's next
   request hangs), up to the endpoint's ``max_body_bytes``; a larger body closes the connection.

Refusals are counted (``floodgate_rejections_total{gate="admission_*"}`` and the chassis'
``http_requests_total``), not logged one by one: a log line per refusal would be the most
expensive part of refusing, at the moment the service can least afford it. One summary line
per door per `LOG_INTERVAL` says how many were refused.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

import chassis
import floodgate
import structlog
import trio

__all__ = ["LOG_INTERVAL", "DoorRoute", "FrontDoor"]

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: At most one ``admission.refusing`` log event per door per this many seconds.
LOG_INTERVAL = 1.0

_TENANT = chassis.TENANT_HEADER.encode()
_REQUEST_ID = chassis.REQUEST_ID_HEADER.encode()
_log = structlog.get_logger("online")


@dataclass(frozen=True)
class DoorRoute:
    """One endpoint behind a door: its route, its door and its body limit."""

    path: str
    door: floodgate.Door
    max_body_bytes: int
    method: str = "POST"


class FrontDoor:
    """ASGI middleware: the endpoint doors, checked before the framework sees the request.

    Install it as ``app.asgi_app = FrontDoor(app.asgi_app, routes, chassis=...)`` (Quart's
    documented way to wrap an app), so the server and the test client both go through it.
    """

    def __init__(self, app: ASGIApp, routes: list[DoorRoute], *, chassis_state: chassis.ChassisState) -> None:
        self.app = app
        self._routes = {route.path: route for route in routes}
        self._chassis = chassis_state
        self._bodies: dict[tuple[str, int, int | None], bytes] = {}  # (path, limit, share) -> error body
        self._metrics: dict[str, tuple[Any, Any]] = {}  # path -> (requests counter, latency histogram)
        self._last_log: dict[str, float] = {}
        self._unlogged: dict[str, int] = dict.fromkeys(self._routes, 0)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = self._routes.get(scope["path"]) if scope["type"] == "http" else None
        if route is None or scope["method"] != route.method:
            await self.app(scope, receive, send)
            return
        tenant = request_id = None
        for name, value in scope["headers"]:
            if name == _TENANT:
                tenant = value
            elif name == _REQUEST_ID:
                request_id = value
        tenant_name = None if tenant is None else tenant.decode("latin-1")
        if tenant_name is None or not chassis.is_valid_tenant(tenant_name):
            await self.app(scope, receive, send)  # the chassis answers 401/400
            return
        door = route.door
        if door.try_enter(tenant_name):
            if door.adaptive is None:
                try:
                    await self.app(scope, receive, send)
                finally:
                    door.leave(tenant_name)
                return
            await self._admit_measured(door, tenant_name, scope, receive, send)
            return
        share = door.share_of(tenant_name) if door.at_share(tenant_name) else None
        await self._refuse(route, scope, receive, send, request_id, share)

    async def _admit_measured(
        self, door: floodgate.Door, tenant: str, scope: Scope, receive: Receive, send: Send
    ) -> None:
        """Run the app for an admitted request and feed its latency to the door's adaptive limit."""
        status = 0

        async def send_watched(message: MutableMapping[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        started = trio.current_time()
        try:
            await self.app(scope, receive, send_watched)
        finally:
            door.leave(tenant)
        # Client errors (bad body, validation) end before any downstream work: their time says
        # nothing about how loaded the process is. Answers and 5xx (deadlines included) do.
        if status < 400 or status >= 500:
            now = trio.current_time()
            door.observe(now - started, now)

    # -- the refusal -----------------------------------------------------------------------------

    async def _refuse(
        self,
        route: DoorRoute,
        scope: Scope,
        receive: Receive,
        send: Send,
        request_id: bytes | None,
        share: int | None,
    ) -> None:
        """Answer 429: the tenant's ``share`` of the door is all held, or (None) the door is full."""
        started = time.perf_counter()
        keep_alive = await self._drain(scope, receive, route.max_body_bytes)
        body = self._body(route, share)
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"retry-after", b"1"),
            (_REQUEST_ID, request_id or uuid.uuid4().hex.encode()),
        ]
        if not keep_alive:
            headers.append((b"connection", b"close"))
        elapsed = time.perf_counter() - started
        headers.append(
            (b"server-timing", f"admission;dur={elapsed * 1000:.1f}, total;dur={elapsed * 1000:.1f}".encode())
        )
        await send({"type": "http.response.start", "status": 429, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        self._count(route, elapsed)

    @staticmethod
    async def _drain(scope: Scope, receive: Receive, limit: int) -> bool:
        """Read and drop the request body; False when it is larger than ``limit`` (or the client
        left), so the connection must not be reused."""
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    if int(value) > limit:
                        return False
                except ValueError:
                    return False
        seen = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return False  # http.disconnect
            seen += len(message.get("body", b""))
            if seen > limit:
                return False
            if not message.get("more_body", False):
                return True

    def _body(self, route: DoorRoute, share: int | None) -> bytes:
        # One rendering per limit and share, never per tenant: the body names no tenant.
        key = (route.path, route.door.limit, share)
        body = self._bodies.get(key)
        if body is None:
            door = route.door
            error = door.refusal() if share is None else door.share_refusal(share)
            body = self._bodies[key] = json.dumps({"error": floodgate.error_body(error)}).encode()
        return body

    def _count(self, route: DoorRoute, elapsed: float) -> None:
        metrics = self._metrics.get(route.path)
        if metrics is None:
            state = self._chassis
            assert state.requests is not None and state.latency is not None
            metrics = self._metrics[route.path] = (
                state.requests.labels(route.path, "POST", "429", "4xx"),
                state.latency.labels(route.path, "POST", "4xx"),
            )
        metrics[0].inc()
        metrics[1].observe(elapsed)
        self._unlogged[route.path] += 1
        now = time.monotonic()
        if now - self._last_log.get(route.path, -LOG_INTERVAL) >= LOG_INTERVAL:
            stats = route.door.statistics()
            _log.warning(
                "admission.refusing",
                endpoint=stats.name,
                refused=self._unlogged[route.path],
                refused_total=stats.refused_total,
                limit=stats.limit,
                dependency=route.door.dependency,
            )
            self._last_log[route.path] = now
            self._unlogged[route.path] = 0

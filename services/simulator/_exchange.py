"""The thin I/O layer around :class:`Simulator`: enact a arrival's decision inside one HTTP exchange.

``simulate(api, produce)`` counts the request in, refuses it (429/503), sleeps the simulated
latency on trio's clock, fails it, hangs it, or lets ``produce`` answer; then counts it out with
the status sent. A streamed answer (``SseStream``) is counted out when its last chunk has gone, or
when the client goes away, so concurrency covers the whole response.
"""

from __future__ import annotations

import json
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from itertools import count
from typing import Any

import floodgate
import trio
from chassis import ApiError
from quart import Response, current_app, jsonify, request

from ._behaviour import NO_RESPONSE, Arrival, Simulator
from ._corpus import Corpus

__all__ = ["SimulatedError", "SimulatorState", "SseStream", "api_key", "simulate", "simulator_state"]

_ERROR_TYPES = {400: "invalid_request_error", 404: "not_found_error", 429: "requests"}


class SimulatedError(ApiError):
    """An error in the providers' (OpenAI) shape: ``{"error": {message, type, param, code, details}}``.

    It keeps the chassis's ``code``/``message``/``details`` keys, so both OpenAI clients and
    Floodgate's own error parsing read it.
    """

    def __init__(self, status: int, code: str, message: str, *, param: str | None = None, **kw: Any) -> None:
        super().__init__(status, code, message, **kw)
        self.param = param

    def payload(self) -> dict[str, Any]:
        kind = _ERROR_TYPES.get(
            self.status, "server_error" if self.status >= 500 else "invalid_request_error"
        )
        return {
            "error": {
                "message": self.message,
                "type": kind,
                "param": self.param,
                "code": self.code,
                "details": self.details,
            }
        }


@dataclass
class SimulatorState:
    """App-lifetime objects of the simulator, stored on the app (``app.extensions["simulator"]``)."""

    simulator: Simulator
    corpus: Corpus
    _ids: count = field(default_factory=lambda: count(1))

    def next_id(self, prefix: str) -> str:
        return f"{prefix}-sim{next(self._ids):08d}"


def simulator_state() -> SimulatorState:
    return current_app.extensions["simulator"]


def api_key() -> str:
    """The caller's key, for per-key limits and statistics: ``Authorization: Bearer``, then
    ``x-api-key``; a request without one counts as ``anonymous``."""
    auth = request.headers.get("authorization", "")
    if auth[:7].lower() == "bearer " and auth[7:].strip():
        return auth[7:].strip()
    return request.headers.get("x-api-key", "").strip() or "anonymous"


def _error_response(exc: SimulatedError) -> Response:
    response = jsonify(exc.payload())
    response.status_code = exc.status
    for name, value in exc.headers.items():
        response.headers[name] = value
    return response


class SseStream:
    """A ``text/event-stream`` body of prepared events, ending with ``data: [DONE]``.

    Counted out of the simulator when the last event has been sent or the body is closed early;
    a finaliser covers a body the server never started to send (the client left first).
    """

    def __init__(self, events: list[dict[str, Any]]) -> None:
        self._chunks = [f"data: {json.dumps(e, separators=(',', ':'))}\n\n".encode() for e in events]
        self._chunks.append(b"data: [DONE]\n\n")
        self._position = 0
        self._done: Callable[[], object] = lambda: None

    def bind(self, simulator: Simulator, arrival: Arrival) -> None:
        self._done = weakref.finalize(self, simulator.finish, arrival, 200)

    def __aiter__(self) -> SseStream:
        return self

    async def __anext__(self) -> bytes:
        if self._position >= len(self._chunks):
            self._done()
            raise StopAsyncIteration
        self._position += 1
        return self._chunks[self._position - 1]

    async def aclose(self) -> None:
        self._done()

    def response(self) -> Response:
        response = Response(self, status=200, content_type="text/event-stream")
        response.headers["cache-control"] = "no-cache"
        return response


Produce = Callable[[], Awaitable["Response | SseStream"]]


async def simulate(api: str, produce: Produce) -> Response:
    """Run one request of ``api`` through the simulated provider behaviour, then ``produce``.

    The chassis has already read the request body (a refusal sent while the body is still
    arriving would wedge the keep-alive connection), so a refusal here is safe to send at once.
    """
    simulator = simulator_state().simulator
    arrival = simulator.arrive(api, api_key(), trio.current_time())
    status = NO_RESPONSE
    handed_to_stream = False
    try:
        if arrival.refusal is not None:
            refusal = arrival.refusal
            headers = {}
            if refusal.retry_after is not None:
                headers["Retry-After"] = str(floodgate.retry_after_seconds(refusal.retry_after))
                headers["retry-after-ms"] = str(max(1, round(refusal.retry_after * 1000)))
            response = _error_response(
                SimulatedError(refusal.status, refusal.code, refusal.message, headers=headers)
            )
            status = response.status_code
            return response
        # The answer is due at arrival + latency. Compute it while "waiting", so the simulator's own
        # CPU time does not add to the configured latency (it did, noticeably, under load).
        answer_at = trio.current_time() + arrival.delay
        if arrival.outcome == "ok":
            try:
                result = await produce()
            except ApiError as exc:
                status = exc.status
                await trio.sleep_until(answer_at)
                raise
            except Exception:
                status = 500
                raise
            await trio.sleep_until(answer_at)
            if isinstance(result, SseStream):
                result.bind(simulator, arrival)
                handed_to_stream = True
                return result.response()
            status = result.status_code
            return result
        await trio.sleep_until(answer_at)
        if arrival.outcome == "hang":
            # Never answer: the client's timeout (or its disconnect) is what ends this request.
            await trio.sleep_forever()
        if arrival.outcome == "error":
            response = _error_response(
                SimulatedError(
                    arrival.error_status,
                    "service_unavailable" if arrival.error_status == 503 else "internal_error",
                    f"simulated {arrival.error_status} error of the {api} API",
                )
            )
            status = response.status_code
            return response
        raise AssertionError(f"unknown simulated outcome {arrival.outcome!r}")
    finally:
        if not handed_to_stream:
            simulator.finish(arrival, status)

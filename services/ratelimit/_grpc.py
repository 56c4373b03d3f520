"""The gRPC face: ``envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit``.

Translates between the protobuf messages (stubs from the ``xds-protos`` wheel) and the limiter's
plain values; the decisions themselves live in `RateLimiter`. A failing counter store becomes gRPC
``UNAVAILABLE`` so that Envoy applies its configured failure mode instead of guessing a verdict here.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence

import grpc
import structlog
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc
from google.protobuf.message import DecodeError

from ._budgets import budget_headers, budget_window
from ._config import RateLimit, Unit
from ._h2grpc import GrpcStatus, UnaryCall
from ._h2server import GrpcAbort
from ._limiter import Code, Decision, Descriptor, RateLimiter
from ._metrics import RateLimitMetrics
from ._store import CounterStoreError

__all__ = ["SHOULD_RATE_LIMIT_PATH", "RateLimitServicer", "decision_to_response"]

SHOULD_RATE_LIMIT_PATH = "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit"

log = structlog.get_logger("ratelimit")

_PB = rls_pb2.RateLimitResponse
_CODES = {Code.OK: _PB.OK, Code.OVER_LIMIT: _PB.OVER_LIMIT}
_UNITS = {
    Unit.SECOND: _PB.RateLimit.SECOND,
    Unit.MINUTE: _PB.RateLimit.MINUTE,
    Unit.HOUR: _PB.RateLimit.HOUR,
    Unit.DAY: _PB.RateLimit.DAY,
}


#: ``(domain, descriptors, hits_addend)``: what the limiter needs from one request
RequestItem = tuple[str, tuple[Descriptor, ...], int]

#: distinct request messages remembered (tenants x routes in practice)
_PARSE_CACHE_SIZE = 16384


def request_descriptors(request: rls_pb2.RateLimitRequest) -> tuple[Descriptor, ...]:
    return tuple(
        [
            Descriptor(
                tuple([(e.key, e.value) for e in d.entries]),
                d.hits_addend.value if d.HasField("hits_addend") else None,
            )
            for d in request.descriptors
        ]
    )


def request_item(request: rls_pb2.RateLimitRequest) -> RequestItem:
    # hits_addend 0 means "not set" in proto3: one hit, as in the reference service.
    return (request.domain, request_descriptors(request), request.hits_addend or 1)


def decision_to_response(decision: Decision) -> rls_pb2.RateLimitResponse:
    response = _PB(overall_code=_CODES[decision.code])
    budgets = False
    for status in decision.statuses:
        out = response.statuses.add(code=_CODES[status.code], limit_remaining=status.limit_remaining)
        limit = status.limit
        if limit is not None and not limit.unlimited:
            if limit.name is not None and budget_window(limit.name) is not None:
                # No current_limit: Envoy's x-ratelimit-* headers stay about requests; the token
                # and cost budgets get headers of their own (below).
                budgets = True
            else:
                out.current_limit.CopyFrom(_limit_message(limit))
        if status.duration_until_reset is not None:
            nanos = int(status.duration_until_reset * 1e9)
            reset = out.duration_until_reset
            reset.seconds = nanos // 1_000_000_000
            reset.nanos = nanos % 1_000_000_000
    retry_after = decision.retry_after
    if retry_after is not None:
        # Envoy's own x-ratelimit-reset rounds down to whole seconds (0 in a one-second window),
        # which would tell clients to retry at once; Retry-After is rounded up and at least 1.
        response.response_headers_to_add.add(key="retry-after", value=str(retry_after))
    if budgets:
        for key, value in budget_headers(decision.statuses):
            response.response_headers_to_add.add(key=key, value=value)
    return response


@functools.lru_cache(maxsize=1024)
def _limit_message(limit: RateLimit) -> rls_pb2.RateLimitResponse.RateLimit:
    """The ``current_limit`` message of a configured limit, built once (callers copy it)."""
    return _PB.RateLimit(
        requests_per_unit=limit.requests_per_unit, unit=_UNITS[limit.unit], name=limit.name or ""
    )


class RateLimitServicer(rls_pb2_grpc.RateLimitServiceServicer):
    """Decides calls for either server: grpcio's (`ShouldRateLimit`, in its worker threads) or the
    single-threaded `UnaryGrpcServer` (`handle_batch`, raw message bytes in and out). The limiter
    and the store are thread-safe."""

    def __init__(self, limiter: RateLimiter, metrics: RateLimitMetrics) -> None:
        self._limiter = limiter
        self._metrics = metrics
        # labelled children resolved once per label set: labels() costs more than inc()
        self._requests: dict[tuple[str, Code], object] = {}
        self._over: dict[tuple[str, bool], object] = {}
        self._parsed: dict[bytes, RequestItem] = {}

    def decide(self, request: rls_pb2.RateLimitRequest) -> rls_pb2.RateLimitResponse:
        """The response for ``request``. Raises `CounterStoreError` (counted) when the store fails."""
        return self.decide_many([request_item(request)])[0]

    def decide_many(self, items: Sequence[RequestItem]) -> list[rls_pb2.RateLimitResponse]:
        """Responses for several requests (as `request_item` gives them), counted with one store
        call (see `RateLimiter.should_rate_limit_many`). Raises `CounterStoreError` (counted)."""
        started = time.perf_counter()
        try:
            decisions = self._limiter.should_rate_limit_many(items)
        except CounterStoreError as exc:
            self._metrics.store_errors.inc(len(items))
            log.warning("counter_store_failed", error=str(exc), calls=len(items))
            raise
        responses = []
        for item, decision in zip(items, decisions, strict=True):
            self._count(item[0], decision)
            responses.append(decision_to_response(decision))
        elapsed = time.perf_counter() - started
        for _ in responses:  # every call of the batch waited for all of it
            self._metrics.latency.observe(elapsed)
        return responses

    def _parse(self, message: bytes) -> RequestItem:
        """The request in ``message``, remembered by its bytes.

        Envoy sends the very same bytes for every request of one tenant on one route, and turning
        them into descriptors (protobuf parse, then Python objects for every entry) is a large
        part of a decision when the call arrives on a cold CPU cache, as it does at moderate
        rates. Parsing is a pure function of the bytes and the result is immutable, so remembering
        it is safe; the dict is bounded (emptied when full)."""
        item = self._parsed.get(message)
        if item is None:
            item = request_item(rls_pb2.RateLimitRequest.FromString(message))
            if len(self._parsed) >= _PARSE_CACHE_SIZE:
                self._parsed.clear()
            self._parsed[message] = item
        return item

    def _count(self, domain: str, decision: Decision) -> None:
        key = (domain, decision.code)
        counter = self._requests.get(key)
        if counter is None:
            counter = self._requests[key] = self._metrics.requests.labels(domain, decision.code.value)
        counter.inc()
        for status in decision.statuses:
            if status.code is Code.OVER_LIMIT or status.shadow_over_limit:
                over_key = (status.metric_key or "", status.shadow_over_limit)
                over = self._over.get(over_key)
                if over is None:
                    over = self._over[over_key] = self._metrics.over_limit.labels(
                        over_key[0], str(over_key[1]).lower()
                    )
                over.inc()

    def ShouldRateLimit(
        self, request: rls_pb2.RateLimitRequest, context: grpc.ServicerContext
    ) -> rls_pb2.RateLimitResponse:
        try:
            return self.decide(request)
        except CounterStoreError as exc:
            context.abort(grpc.StatusCode.UNAVAILABLE, f"counter store unavailable: {exc}")
            raise  # abort() raises; this line is never reached

    def handle_batch(self, calls: Sequence[UnaryCall]) -> list[bytes | GrpcAbort]:
        """`UnaryGrpcServer`'s handler: the calls read together, answered together (serialized
        response, or the `GrpcAbort` that fails that call), in order."""
        results: list[bytes | GrpcAbort] = []
        items: list[tuple[int, RequestItem]] = []
        for call in calls:
            if call.path != SHOULD_RATE_LIMIT_PATH:
                results.append(GrpcAbort(GrpcStatus.UNIMPLEMENTED, f"unknown method {call.path}"))
                continue
            try:
                items.append((len(results), self._parse(call.message)))
            except DecodeError:
                results.append(GrpcAbort(GrpcStatus.INTERNAL, "cannot parse the request message"))
                continue
            results.append(b"")  # filled in below
        if items:
            try:
                responses = self.decide_many([item for _, item in items])
            except CounterStoreError as exc:
                failed = GrpcAbort(GrpcStatus.UNAVAILABLE, f"counter store unavailable: {exc}")
                for index, _ in items:
                    results[index] = failed
            else:
                for (index, _), response in zip(items, responses, strict=True):
                    results[index] = response.SerializeToString()
        return results

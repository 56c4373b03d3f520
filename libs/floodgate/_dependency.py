"""Guarded calls: the one way a service touches a downstream.

Each call goes ``gate -> rate limit -> breaker -> deadline -> attempt (timeout) -> classify
-> retry?``::

    deps = Dependencies.from_budget(budget, service="online", registry=registry,
                                    http_base_urls={"llm": "http://127.0.0.1:8100"})
    async with deps:
        with deadline_after(8.0):
            resp = await deps["llm"].request("POST", "/v1/chat/completions", json=body,
                                             tenant="t1", idempotent=True)

The gate slot is held for the whole call, retries included (a retry is not a new arrival);
the cool-down, the rate limit and the breaker are consulted before every attempt. The retry
loop is floodgate's own (see `_retry`), so it honours ``Retry-After`` (with a little jitter,
never earlier), the deadline, the retry budget and trio's virtual clock.

Polite towards the provider: a 429 pauses the whole dependency for every caller of the process
for as long as the provider asked (`Cooldown`), and with ``adaptive`` on, the gate's capacity is
the in-flight limit learned from the 429s (`PushbackLimit`), never above the budget's value.
"""

from __future__ import annotations

import math
import random
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import httpx
import structlog

from ._backend import HotPath, hot_path
from ._breaker import BreakerState, BreakerStatistics, CircuitBreaker
from ._budget import Budget, DependencyPolicy
from ._cooldown import Cooldown, CooldownStatistics
from ._deadline import deadline_headers, time_left
from ._errors import (
    CoolingDown,
    DeadlineExceeded,
    DependencyError,
    FloodgateError,
    Overloaded,
    RetryBudgetExhausted,
)
from ._gate import DEFAULT_TENANT, Gate, GateStatistics
from ._http import IDEMPOTENT_METHODS, ConnectionWait, make_http_client, retry_after_from_headers
from ._metrics import metrics_for
from ._pushback import PushbackLimit, PushbackLimitStatistics
from ._ratelimit import TokenBucket, TokenBucketStatistics
from ._retry import RetryBudget, RetryBudgetStatistics, backoff_delay, retry_after_delay

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from ._tenants import TenantTable

__all__ = ["Dependencies", "Dependency", "DependencyStatistics"]

T = TypeVar("T")

_log = structlog.get_logger("floodgate")


@dataclass(frozen=True)
class DependencyStatistics:
    """A snapshot of a `Dependency`: its gate, breaker, retry budget and rate limit, with
    ``calls_total`` (guarded calls made) and ``failures_total`` (those that ended in an error
    after the retries the policy allowed); its cool-down (None when off), its learned limit
    (None unless adaptive) and ``in_flight``, the attempts sent and not yet answered."""

    name: str
    gate: GateStatistics
    breaker: BreakerStatistics
    retry_budget: RetryBudgetStatistics
    rate_limit: TokenBucketStatistics | None
    calls_total: int
    failures_total: int
    cooldown: CooldownStatistics | None = None
    limit: PushbackLimitStatistics | None = None
    in_flight: int = 0


@dataclass(frozen=True, slots=True)
class _Failure:
    """What a failed attempt means for breaker and retry decisions."""

    label: str  # metrics label: "503", "timeout", "transport"
    exc: BaseException | None
    status: int | None = None
    retry_after: float | None = None
    retryable: bool = False
    safe_to_repeat: bool = False  # the downstream never processed it (connect error, 429)
    unhealthy: bool = True  # counts as a failure for the breaker


class Dependency:
    """One downstream with its gate, rate limit, breaker, retry policy and retry budget.

    ``await dep.call(fn, *args, tenant=..., idempotent=...)`` runs ``fn`` under all of them;
    ``await dep.request(method, url, ...)`` does the same for an HTTP request sent with the
    dependency's own httpx client. Every refusal or failure comes out as one of the toolkit's
    exceptions (see `call`), each carrying the HTTP status a service edge answers with.

    Build them with `Dependencies.from_budget` (sized for one process from the budget);
    construct directly in tests. ``rng`` is the random source of the backoff and Retry-After
    jitter (a callable returning a float in [0, 1)). ``capacity`` is the process's share; with
    ``policy.adaptive`` the gate admits the lower of it and the learned limit (`resize` changes
    the share at run time). ``tenants`` (the budget's `TenantTable`) gives the gate each
    tenant's round-robin weight and, with a ``tenant_share``, its cap.
    """

    def __init__(
        self,
        name: str,
        policy: DependencyPolicy,
        *,
        capacity: int,
        rate: float | None = None,
        client: httpx.AsyncClient | None = None,
        registry: CollectorRegistry | None = None,
        rng: Callable[[], float] = random.random,
        gate: Gate | None = None,
        tenants: TenantTable | None = None,
    ):
        self.name = name
        self.policy = policy
        self.client = client
        self._metrics = metrics = metrics_for(registry)
        self._rng = rng
        self._min_start = policy.timeouts.min_time_to_start
        self.gate = gate or Gate(
            name,
            capacity,
            max_waiters=policy.max_waiters,
            max_wait=policy.max_wait,
            start_margin=self._min_start,
            tenants=tenants,  # each tenant's weight, and its share of the gate (tenant_share)
            registry=registry,
        )
        self.breaker = CircuitBreaker(name, policy.breaker, on_transition=self._on_breaker_transition)
        self.retry_budget = RetryBudget(
            ratio=policy.retry_budget.ratio,
            window=policy.retry_budget.window,
            min_retries=policy.retry_budget.min_retries,
        )
        cooldown = policy.cooldown
        self.cooldown: Cooldown | None = None
        if cooldown.enabled:
            self.cooldown = Cooldown(
                without_retry_after=cooldown.without_retry_after,
                max_seconds=cooldown.max_seconds,
                jitter=policy.retry.retry_after_jitter,
            )
        self._share = capacity
        self.limit: PushbackLimit | None = None
        if policy.adaptive is not None:
            ceiling = max(1, capacity)
            self.limit = PushbackLimit(
                ceiling,
                floor=min(policy.adaptive.floor, ceiling),
                decrease=policy.adaptive.decrease,
                increase_interval=policy.adaptive.increase_interval,
            )
        self._in_flight = 0  # attempts sent and not answered (a retry's backoff is not one)
        self.bucket: TokenBucket | None = None
        self._rate_limit_wait = 0.0
        if rate is not None and policy.rate_limit is not None:
            self.bucket = TokenBucket(rate=rate, burst=policy.rate_limit.burst)
            self._rate_limit_wait = policy.rate_limit.max_wait
        self._calls = 0
        self._failures = 0
        self._latency_children: dict[str, Any] = {}
        self._attempt_children: dict[str, Any] = {}
        self._connection_wait: Callable[[float], None] | None = None
        if metrics is not None:
            metrics.breaker_state.labels(name).set(0)
            if client is not None:
                self._connection_wait = metrics.http_connection_wait.labels(name).observe
            if self.limit is not None:
                metrics.concurrency_limit.labels(name).set(self.limit.limit)

    # -- metrics helpers -------------------------------------------------------------------------

    def _observe(self, label: str, duration: float) -> None:
        metrics = self._metrics
        if metrics is None:
            return
        latency = self._latency_children.get(label)
        if latency is None:
            latency = self._latency_children[label] = metrics.latency.labels(self.name, label)
            self._attempt_children[label] = metrics.attempts.labels(self.name, label)
        latency.observe(duration)
        self._attempt_children[label].inc()

    def _rejected(self, reason: str) -> None:
        if self._metrics is not None:
            self._metrics.rejections.labels(self.name, reason).inc()

    def _on_breaker_transition(self, name: str, before: BreakerState, after: BreakerState) -> None:
        if self._metrics is not None:
            self._metrics.breaker_state.labels(name).set(int(after))
            self._metrics.breaker_transitions.labels(name, before.name.lower(), after.name.lower()).inc()
        _log.warning(
            "floodgate.breaker_transition",
            dependency=name,
            from_state=before.name.lower(),
            to_state=after.name.lower(),
        )

    # -- the guarded call ------------------------------------------------------------------------

    async def call(
        self,
        fn: Callable[..., Awaitable[T]],
        *args: Any,
        tenant: str = DEFAULT_TENANT,
        idempotent: bool = False,
    ) -> T:
        """Run ``await fn(*args)`` under this dependency's budget and policies.

        Raises `Overloaded` (gate or rate limit said no), `CircuitOpen`, `DeadlineExceeded`
        (too little time left to start, or attempts timed out), `DependencyError` (``fn``
        raised one, or a transport error, after retries) or `RetryBudgetExhausted`. Other
        exceptions from ``fn`` propagate unchanged and are not retried. Only calls marked
        ``idempotent`` are retried, except failures the downstream never processed
        (connect errors, 429). After a 429 the whole dependency pauses (its cool-down): a call
        that cannot wait out the pause gets `CoolingDown` (an `Overloaded`).

        ``fn`` reports a downstream status by raising `DependencyError(status=...,
        retry_after=...)`; `request` does this for HTTP.
        """
        # The clock and the deadline are read once here and passed down: on the fast path
        # (free slot, token available, closed circuit) this is most of the call's cost.
        ops = hot_path()
        now = ops.current_time()
        deadline = ops.current_effective_deadline()
        if deadline - now < self._min_start:
            self._rejected("deadline")
            raise DeadlineExceeded(
                f"too little time left to start ({max(0.0, deadline - now):.3f}s < {self._min_start:g}s)",
                dependency=self.name,
            )
        arrived = now
        try:
            self.gate.acquire_nowait(tenant)
        except anyio.WouldBlock:
            await self.gate.acquire(tenant)
            now = ops.current_time()
        try:
            cooldown = self.cooldown
            if cooldown is not None and cooldown.remaining(now) > 0:
                # A new call waits out the pause within what is left of its max_wait (the gate's
                # wait counts) and its deadline; else it is refused without reaching the provider.
                allowed = min(self.policy.max_wait - (now - arrived), deadline - now - self._min_start)
                now = await self._wait_for_cooldown(tenant, now, allowed, None)
            return await self._attempts(fn, args, tenant, idempotent, ops, now, deadline)
        finally:
            self.gate.release(tenant)

    async def _attempts(
        self,
        fn: Callable[..., Awaitable[T]],
        args: tuple[Any, ...],
        tenant: str,
        idempotent: bool,
        ops: HotPath,
        now: float,
        deadline: float,
    ) -> T:
        policy = self.policy
        attempt_timeout = policy.timeouts.attempt
        started = now
        self._calls += 1
        self.retry_budget.record_call(started)
        attempt = 0
        failure: _Failure | None = None
        while True:
            attempt += 1
            if attempt > 1:
                now = ops.current_time()  # after the backoff
                deadline = ops.current_effective_deadline()
                if self.cooldown is not None and self.cooldown.remaining(now) > 0:
                    # Another caller's 429 paused the dependency while this one backed off.
                    assert failure is not None
                    allowed = min(started + policy.retry.max_total - now, deadline - now - self._min_start)
                    now = await self._wait_for_cooldown(tenant, now, allowed, failure)
            if self.bucket is not None:
                now = await self._take_token(tenant, now)
            try:
                ticket = self.breaker.admit(now)
            except FloodgateError:
                self._rejected("circuit_open")
                _log.info("floodgate.rejected", dependency=self.name, tenant=tenant, reason="circuit_open")
                raise
            t0 = now
            failure = None
            self._in_flight += 1
            sent_with = self._in_flight
            generation = self.limit.generation if self.limit is not None else 0
            try:
                if t0 + attempt_timeout < deadline:
                    with ops.cancel_scope(t0 + attempt_timeout) as scope:
                        result = await fn(*args)
                    if scope.cancelled_caught:
                        failure = _Failure("timeout", None, retryable=policy.retry.retry_on_timeout)
                else:
                    # The request deadline comes first: it bounds the attempt, no scope of our own.
                    result = await fn(*args)
            except BaseException as exc:
                failure = self._classify(exc)
                if failure is None:
                    # Cancellation, or an error that says nothing about the downstream's health.
                    self.breaker.cancel(ticket)
                    if isinstance(exc, anyio.get_cancelled_exc_class()):
                        self._observe("cancelled", ops.current_time() - t0)
                    raise
            finally:
                self._in_flight -= 1
            t1 = ops.current_time()
            duration = t1 - t0
            if failure is None:
                self.breaker.record(t1, ticket, failed=False, duration=duration)
                self._observe(
                    str(result.status_code) if isinstance(result, httpx.Response) else "ok", duration
                )
                if self.limit is not None and self.limit.success(
                    t1, sent_with=sent_with, generation=generation
                ):
                    self._apply_limit(tenant)
                return result
            self.breaker.record(t1, ticket, failed=failure.unhealthy, duration=duration)
            self._observe(failure.label, duration)
            if failure.status == 429:
                self._pushback(failure, tenant, t1, sent_with, generation)
            delay = self._retry_delay(failure, attempt, started, t1, idempotent, tenant)
            if self._metrics is not None:
                self._metrics.retries.labels(self.name, failure.label).inc()
            _log.info(
                "floodgate.retry",
                dependency=self.name,
                tenant=tenant,
                attempt=attempt,
                failure=failure.label,
                delay=round(delay, 4),
            )
            await anyio.sleep(delay)

    def _classify(self, exc: BaseException) -> _Failure | None:
        retry = self.policy.retry
        if isinstance(exc, DependencyError) and exc.dependency in (None, self.name):
            status = exc.status
            if status is None:
                return _Failure("transport", exc, retryable=retry.retry_on_transport_error)
            return _Failure(
                str(status),
                exc,
                status=status,
                retry_after=exc.retry_after,
                retryable=status in retry.retry_on_status,
                safe_to_repeat=status == 429,
                unhealthy=status >= 500,
            )
        if isinstance(exc, httpx.TimeoutException):
            return _Failure(
                "timeout",
                exc,
                retryable=retry.retry_on_timeout,
                safe_to_repeat=isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout),
            )
        if isinstance(exc, httpx.TransportError | OSError):
            return _Failure(
                "transport",
                exc,
                retryable=retry.retry_on_transport_error,
                safe_to_repeat=isinstance(exc, httpx.ConnectError | ConnectionRefusedError),
            )
        return None

    def _final_error(self, failure: _Failure, attempts: int, why: str) -> FloodgateError:
        tried = f"{attempts} attempt{'s' if attempts != 1 else ''}"
        if failure.label == "timeout":
            if failure.exc is None:
                reason = f"attempt timed out after {self.policy.timeouts.attempt:g}s ({tried}; {why})"
            else:
                reason = f"{type(failure.exc).__name__} ({tried}; {why})"
            return DeadlineExceeded(reason, dependency=self.name)
        if failure.status is not None:
            assert isinstance(failure.exc, DependencyError)
            return DependencyError(
                f"HTTP {failure.status} ({tried}; {why})",
                dependency=self.name,
                status=failure.status,
                retry_after=failure.retry_after,
                response=failure.exc.response,
            )
        exc = failure.exc
        detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return DependencyError(f"{detail} ({tried}; {why})", dependency=self.name)

    def _retry_delay(
        self, failure: _Failure, attempt: int, started: float, now: float, idempotent: bool, tenant: str
    ) -> float:
        """Seconds to wait before the next attempt; raises the final error when not retrying."""
        retry = self.policy.retry

        def give_up(why: str) -> FloodgateError:
            self._failures += 1
            error = self._final_error(failure, attempt, why)
            _log.warning(
                "floodgate.call_failed",
                dependency=self.name,
                tenant=tenant,
                attempts=attempt,
                failure=failure.label,
                why=why,
            )
            error.__cause__ = failure.exc
            return error

        if not failure.retryable:
            raise give_up("not retryable")
        if not (idempotent or failure.safe_to_repeat):
            raise give_up("not idempotent")
        if attempt >= retry.max_attempts:
            raise give_up("attempts exhausted")
        if failure.retry_after is not None:
            if failure.retry_after > retry.retry_after_cap:
                raise give_up(f"Retry-After {failure.retry_after:g}s over cap {retry.retry_after_cap:g}s")
            delay = retry_after_delay(failure.retry_after, jitter=retry.retry_after_jitter, rng=self._rng)
        else:
            delay = backoff_delay(attempt, base=retry.backoff_base, cap=retry.backoff_cap, rng=self._rng)
        if now + delay - started > retry.max_total:
            raise give_up(f"next retry would pass max_total {retry.max_total:g}s")
        left = time_left()
        if left != math.inf and left - delay < self._min_start:
            raise give_up("no time left for a retry")
        if not self.retry_budget.try_spend(now):
            self._failures += 1
            self._rejected("retry_budget")
            _log.warning("floodgate.retry_budget_exhausted", dependency=self.name, tenant=tenant)
            error = RetryBudgetExhausted(
                f"retry budget spent ({failure.label} on attempt {attempt})",
                dependency=self.name,
                retry_after=max(1.0, failure.retry_after or 0.0),
            )
            error.__cause__ = failure.exc
            raise error
        return delay

    # -- provider pushback: the cool-down and the learned limit -------------------------------------

    def _pushback(self, failure: _Failure, tenant: str, now: float, sent_with: int, generation: int) -> None:
        """A 429: pause the dependency (`Cooldown`) and lower the learned limit (`PushbackLimit`)."""
        cooldown = self.cooldown
        if cooldown is not None:
            began = cooldown.remaining(now) <= 0
            added = cooldown.pushback(now, failure.retry_after)
            if added > 0 and self._metrics is not None:
                self._metrics.cooldown_seconds.labels(self.name).inc(added)
                if began:
                    self._metrics.cooldowns.labels(self.name).inc()
            if added > 0 and began:
                _log.warning(
                    "floodgate.cooldown",
                    dependency=self.name,
                    tenant=tenant,
                    seconds=round(cooldown.remaining(now), 3),
                    retry_after=failure.retry_after,
                )
        if self.limit is not None and self.limit.pushback(now, sent_with=sent_with, generation=generation):
            self._apply_limit(tenant)

    async def _wait_for_cooldown(
        self, tenant: str, now: float, allowed: float, failure: _Failure | None
    ) -> float:
        """Wait until the dependency's pause is over (plus a little jitter, never less); returns
        the time after. Raises `CoolingDown` when the pause outlasts ``allowed`` seconds (a retry's
        refusal counts as the call's failure; ``failure`` is its last attempt's)."""
        cooldown = self.cooldown
        assert cooldown is not None
        while (left := cooldown.remaining(now)) > 0:
            if left > allowed:
                self._rejected("cooldown")
                _log.info("floodgate.rejected", dependency=self.name, tenant=tenant, reason="cooldown")
                error = CoolingDown(
                    f"paused {left:.3g}s more after the provider's 429",
                    dependency=self.name,
                    retry_after=left,
                )
                if failure is not None:
                    self._failures += 1
                    error.__cause__ = failure.exc
                raise error
            wait = min(cooldown.wait(now, self._rng), allowed)
            await anyio.sleep(wait)
            after = anyio.current_time()
            allowed -= after - now
            now = after
        return now

    def _apply_limit(self, tenant: str) -> None:
        """Size the gate to the lower of the process's share and the learned limit."""
        assert self.limit is not None
        limit = self.limit.limit
        self.gate.resize(min(self._share, limit))
        if self._metrics is not None:
            self._metrics.concurrency_limit.labels(self.name).set(limit)
        _log.info("floodgate.concurrency_limit", dependency=self.name, tenant=tenant, limit=limit)

    def resize(self, capacity: int) -> None:
        """Set this process's share of the dependency (the gate's capacity) in place: calls in
        flight are kept, a lower share takes effect as they finish (`Gate.resize`). With
        ``adaptive`` on, the share is the learned limit's ceiling and the gate gets the lower of
        the two. For deployments whose process count changes at run time."""
        if capacity < 0:
            raise ValueError(f"capacity must be >= 0, not {capacity}")
        self._share = capacity
        if self.limit is not None:
            self.limit.set_ceiling(max(1, capacity), anyio.current_time())
            self._apply_limit(DEFAULT_TENANT)
        else:
            self.gate.resize(capacity)

    async def _take_token(self, tenant: str, now: float) -> float:
        """Take a token from the rate limit, waiting if allowed; returns the time after."""
        bucket = self.bucket
        assert bucket is not None
        if bucket.try_take(now):
            return now
        left = anyio.current_effective_deadline() - now
        max_wait = max(0.0, min(self._rate_limit_wait, left - self._min_start))
        wait = bucket.reserve(now, max_wait=max_wait)
        if wait is None:
            self._rejected("rate_limited")
            _log.info("floodgate.rejected", dependency=self.name, tenant=tenant, reason="rate_limited")
            raise Overloaded(
                f"client-side rate limit ({bucket.rate * 60:g}/min per process)",
                dependency=self.name,
                retry_after=bucket.wait_needed(now),
            )
        try:
            await anyio.sleep(wait)
        except BaseException:
            bucket.refund()
            raise
        return anyio.current_time()

    # -- HTTP ------------------------------------------------------------------------------------

    async def request(
        self,
        method: str,
        url: str,
        *,
        tenant: str = DEFAULT_TENANT,
        idempotent: bool | None = None,
        headers: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        """Send an HTTP request through `call`, with this dependency's own client.

        Adds ``x-floodgate-deadline-ms`` (time left). A 4xx/5xx answer is a
        `DependencyError` with ``.status``, ``.retry_after`` (from ``retry-after-ms`` or
        ``Retry-After``: `retry_after_from_headers`) and
        ``.response``; 429/502/503/504 are retried per the policy (``Retry-After`` honoured
        up to its cap). ``idempotent`` defaults to True for GET, HEAD, OPTIONS, PUT, DELETE.
        Other keyword arguments go to `httpx.AsyncClient.request`. With metrics on, each
        attempt's wait for a connection goes to ``floodgate_http_connection_wait_seconds``
        (see `ConnectionWait`; a ``trace`` extension of the caller's is replaced).
        """
        if self.client is None:
            raise RuntimeError(f"dependency {self.name!r} has no HTTP client (no base URL configured)")
        if idempotent is None:
            idempotent = method.upper() in IDEMPOTENT_METHODS
        return await self.call(self._send, method, url, headers, kwargs, tenant=tenant, idempotent=idempotent)

    async def _send(
        self, method: str, url: str, headers: Mapping[str, str] | None, kwargs: dict[str, Any]
    ) -> httpx.Response:
        assert self.client is not None
        all_headers = deadline_headers()
        if headers:
            all_headers.update(headers)
        if self._connection_wait is not None:
            clock = hot_path().current_time
            trace = ConnectionWait(self._connection_wait, clock, clock())
            kwargs = {**kwargs, "extensions": {**(kwargs.get("extensions") or {}), "trace": trace}}
        response = await self.client.request(method, url, headers=all_headers, **kwargs)
        if response.status_code >= 400:
            raise DependencyError(
                f"HTTP {response.status_code}",
                dependency=self.name,
                status=response.status_code,
                retry_after=retry_after_from_headers(response.headers),
                response=response,
            )
        return response

    # -- lifecycle and introspection -------------------------------------------------------------

    async def aclose(self) -> None:
        if self.client is not None:
            await self.client.aclose()

    def statistics(self) -> DependencyStatistics:
        now = anyio.current_time()
        return DependencyStatistics(
            name=self.name,
            gate=self.gate.statistics(),
            breaker=self.breaker.statistics(now),
            retry_budget=self.retry_budget.statistics(now),
            rate_limit=self.bucket.statistics(now) if self.bucket is not None else None,
            calls_total=self._calls,
            failures_total=self._failures,
            cooldown=self.cooldown.statistics(now) if self.cooldown is not None else None,
            limit=self.limit.statistics() if self.limit is not None else None,
            in_flight=self._in_flight,
        )

    def __repr__(self) -> str:
        return f"<Dependency {self.name!r} {self.gate!r} {self.breaker!r} calls={self._calls}>"


class Dependencies(Mapping[str, Dependency]):
    """The dependencies of one service process, built from the budget in one place.

    An app-lifetime resource: build it at start-up, store it on the app, close it at
    shutdown (``await deps.aclose()`` or ``async with deps:``).
    """

    def __init__(self, dependencies: Mapping[str, Dependency], *, service: str = ""):
        self._deps = dict(dependencies)
        self.service = service

    @classmethod
    def from_budget(
        cls,
        budget: Budget,
        *,
        service: str,
        registry: CollectorRegistry | None = None,
        http_base_urls: Mapping[str, str] | None = None,
        api_keys: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | Mapping[str, httpx.AsyncBaseTransport] | None = None,
        rng: Callable[[], float] = random.random,
    ) -> Dependencies:
        """One `Dependency` per dependency ``service`` has a share of, sized for one process.

        ``http_base_urls`` gives each HTTP dependency's base URL (one without a URL gets no
        client: `Dependency.request` then raises); ``api_keys`` adds ``Authorization: Bearer``.
        ``transport`` (one, or one per dependency) replaces the network, for tests.
        ``registry`` (a prometheus ``CollectorRegistry``) turns metrics on.
        """
        budget.service(service)  # raises on an unknown service
        base_urls = http_base_urls or {}
        keys = api_keys or {}
        unknown = set(base_urls) - set(budget.dependencies)
        if unknown:
            raise LookupError(f"http_base_urls names unknown dependencies: {sorted(unknown)}")
        deps: dict[str, Dependency] = {}
        for name in budget.dependencies_of(service):
            policy = budget.dependency(name)
            capacity = budget.process_limit(service, name)
            client = None
            if policy.kind == "http" and name in base_urls:
                dep_transport = transport.get(name) if isinstance(transport, Mapping) else transport
                client = make_http_client(
                    policy,
                    base_url=base_urls[name],
                    # Connections for the most this process may ever hold: its service's whole share,
                    # when it is the only live member (dynamic shares resize the gate, not the
                    # client). The gate bounds what is used; connections open only as calls need them.
                    capacity=math.floor(budget.global_limit(name) * policy.shares[service] + 1e-9),
                    api_key=keys.get(name),
                    headers=headers,
                    transport=dep_transport,
                )
            deps[name] = Dependency(
                name,
                policy,
                capacity=capacity,
                rate=budget.process_rate(service, name),
                client=client,
                registry=registry,
                rng=rng,
                tenants=budget.tenants,
            )
        return cls(deps, service=service)

    def __getitem__(self, name: str) -> Dependency:
        try:
            return self._deps[name]
        except KeyError:
            raise KeyError(
                f"no dependency {name!r} for service {self.service!r} (it has {sorted(self._deps)})"
            ) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._deps)

    def __len__(self) -> int:
        return len(self._deps)

    async def aclose(self) -> None:
        """Close every dependency's HTTP client, shielded from cancellation (this runs at shutdown).
        One that fails to close does not keep the others open: its error is raised at the end."""
        first_error: Exception | None = None
        with anyio.CancelScope(shield=True):
            for dep in self._deps.values():
                try:
                    await dep.aclose()
                except Exception as exc:
                    first_error = first_error or exc
        if first_error is not None:
            raise first_error

    async def __aenter__(self) -> Dependencies:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def statistics(self) -> dict[str, DependencyStatistics]:
        return {name: dep.statistics() for name, dep in self._deps.items()}

    def __repr__(self) -> str:
        return f"<Dependencies service={self.service!r} {sorted(self._deps)}>"

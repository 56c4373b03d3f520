"""What the simulated providers do to a request, as pure state: no I/O, no clock reads.

The HTTP layer asks :meth:`Simulator.arrive` for an :class:`Arrival` (the decision: refuse now with
429/503, or wait ``delay`` seconds and then answer, fail or hang), performs it, and hands the arrival
back to :meth:`Simulator.finish` with the status it sent. Time comes in as an argument, so the
decisions are testable without a clock and the app can feed them ``trio.current_time()`` (which a
``MockClock`` drives in tests).
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Literal

__all__ = [
    "APIS",
    "ApiBehaviour",
    "ApiStatistics",
    "Arrival",
    "Behaviour",
    "BehaviourError",
    "Latency",
    "Refusal",
    "SimulatedRateLimit",
    "Simulator",
    "SimulatorStatistics",
    "TrafficStatistics",
]

APIS = ("chat", "embeddings", "rerank", "search", "fetch")

#: Status recorded for a request that ended without a response (a hang cut by the client or by
#: shutdown). Borrowed from nginx's "client closed request".
NO_RESPONSE = 499

# z-score of the 99th percentile of a standard normal: p99 = p50 * exp(2.326 * sigma).
_Z99 = 2.3263478740408408


class BehaviourError(ValueError):
    """A behaviour document is invalid; the message names the offending key path."""


# -- behaviour: immutable values ------------------------------------------------------------------


@dataclass(frozen=True)
class Latency:
    """Time before a simulated provider answers: ``fixed_ms``, or log-normal from ``p50_ms``/``p99_ms``.

    For the log-normal form the median is ``p50_ms`` and ``sigma = ln(p99/p50) / 2.326``, so 1% of
    samples land above ``p99_ms``; a long right tail, like real LLM and search latencies.
    """

    fixed_ms: float | None = 0.0
    p50_ms: float | None = None
    p99_ms: float | None = None

    def sample(self, rng: random.Random) -> float:
        """One latency in seconds. The fixed form draws nothing from ``rng``."""
        if self.fixed_ms is not None:
            return self.fixed_ms / 1000.0
        assert self.p50_ms is not None and self.p99_ms is not None
        if self.p50_ms == 0:
            return 0.0
        sigma = math.log(self.p99_ms / self.p50_ms) / _Z99
        return rng.lognormvariate(math.log(self.p50_ms), sigma) / 1000.0

    def to_dict(self) -> dict[str, float]:
        if self.fixed_ms is not None:
            return {"fixed_ms": self.fixed_ms}
        return {"p50_ms": self.p50_ms, "p99_ms": self.p99_ms}  # type: ignore[dict-item]

    @classmethod
    def from_mapping(cls, data: Any, path: str) -> Latency:
        data = _expect_mapping(data, path, {"fixed_ms", "p50_ms", "p99_ms"})
        if "fixed_ms" in data:
            if "p50_ms" in data or "p99_ms" in data:
                raise BehaviourError(f"{path}: give either fixed_ms or p50_ms/p99_ms, not both")
            return cls(fixed_ms=_number(data["fixed_ms"], f"{path}.fixed_ms", minimum=0))
        if "p50_ms" not in data:
            raise BehaviourError(f"{path}: needs fixed_ms, or p50_ms (and optionally p99_ms)")
        p50 = _number(data["p50_ms"], f"{path}.p50_ms", minimum=0)
        p99 = _number(data.get("p99_ms", p50), f"{path}.p99_ms", minimum=0)
        if p99 < p50:
            raise BehaviourError(f"{path}.p99_ms: must be >= p50_ms ({p99} < {p50})")
        if p50 == 0 and p99 > 0:
            raise BehaviourError(f"{path}.p50_ms: must be > 0 when p99_ms > 0")
        return cls(fixed_ms=None, p50_ms=p50, p99_ms=p99)


@dataclass(frozen=True)
class SimulatedRateLimit:
    """A simulated provider's limit per API key (not the gateway's ``services.ratelimit.RateLimit``):
    a token bucket of ``rps`` (burst ``burst``, default ``ceil(rps)``) and at most
    ``max_concurrent`` admitted requests at once. ``None`` = no limit."""

    rps: float | None = None
    burst: int | None = None
    max_concurrent: int | None = None

    @property
    def bucket_size(self) -> float:
        assert self.rps is not None
        return float(self.burst if self.burst is not None else max(1, math.ceil(self.rps)))

    def to_dict(self) -> dict[str, float | int | None]:
        return {"rps": self.rps, "burst": self.burst, "max_concurrent": self.max_concurrent}

    @classmethod
    def from_mapping(cls, data: Any, path: str) -> SimulatedRateLimit:
        if data is None:
            return cls()
        data = _expect_mapping(data, path, {"rps", "burst", "max_concurrent"})
        rps = data.get("rps")
        burst = data.get("burst")
        conc = data.get("max_concurrent")
        return cls(
            rps=None if rps is None else _number(rps, f"{path}.rps", minimum=0, exclusive=True),
            burst=None if burst is None else _integer(burst, f"{path}.burst", minimum=1),
            max_concurrent=None if conc is None else _integer(conc, f"{path}.max_concurrent", minimum=1),
        )


@dataclass(frozen=True)
class ApiBehaviour:
    """How one simulated API behaves. The defaults answer at once and never fail."""

    latency: Latency = field(default_factory=Latency)
    rate_limit: SimulatedRateLimit = field(default_factory=SimulatedRateLimit)
    error_rate: float = 0.0
    error_status: int = 503
    hang_rate: float = 0.0
    outage: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "latency": self.latency.to_dict(),
            "rate_limit": self.rate_limit.to_dict(),
            "error_rate": self.error_rate,
            "error_status": self.error_status,
            "hang_rate": self.hang_rate,
            "outage": self.outage,
        }

    def merged(self, patch: Any, path: str) -> ApiBehaviour:
        """A copy with ``patch`` applied: given keys replace, absent keys stay, ``null`` resets."""
        patch = _expect_mapping(
            patch, path, {"latency", "rate_limit", "error_rate", "error_status", "hang_rate", "outage"}
        )
        changes: dict[str, Any] = {}
        if "latency" in patch:
            changes["latency"] = (
                Latency()
                if patch["latency"] is None
                else Latency.from_mapping(
                    _merge_latency(self.latency, patch["latency"], path), f"{path}.latency"
                )
            )
        if "rate_limit" in patch:
            raw = patch["rate_limit"]
            if raw is not None:
                raw = {**self.rate_limit.to_dict(), **_expect_mapping(raw, f"{path}.rate_limit", None)}
            changes["rate_limit"] = SimulatedRateLimit.from_mapping(raw, f"{path}.rate_limit")
        if "error_rate" in patch:
            changes["error_rate"] = _rate(patch["error_rate"], f"{path}.error_rate")
        if "hang_rate" in patch:
            changes["hang_rate"] = _rate(patch["hang_rate"], f"{path}.hang_rate")
        if "error_status" in patch:
            status = _integer(patch["error_status"], f"{path}.error_status", minimum=500)
            if status > 599:
                raise BehaviourError(f"{path}.error_status: must be a 5xx status (got {status})")
            changes["error_status"] = status
        if "outage" in patch:
            if not isinstance(patch["outage"], bool):
                raise BehaviourError(f"{path}.outage: must be true or false")
            changes["outage"] = patch["outage"]
        result = replace(self, **changes)
        if result.error_rate + result.hang_rate > 1.0:
            raise BehaviourError(f"{path}: error_rate + hang_rate must not exceed 1.0")
        return result


@dataclass(frozen=True)
class Behaviour:
    """The behaviour of every simulated API, keyed by API name (see :data:`APIS`)."""

    apis: Mapping[str, ApiBehaviour] = field(
        default_factory=lambda: MappingProxyType({api: ApiBehaviour() for api in APIS})
    )

    def __getitem__(self, api: str) -> ApiBehaviour:
        return self.apis[api]

    def merged(self, patch: Any) -> Behaviour:
        """Apply a partial document such as ``{"chat": {"error_rate": 0.5}}``; raises BehaviourError."""
        patch = _expect_mapping(patch, "behaviour", set(APIS))
        apis = dict(self.apis)
        for api, api_patch in patch.items():
            apis[api] = apis[api].merged(api_patch, api)
        return Behaviour(MappingProxyType(apis))

    @classmethod
    def from_mapping(cls, data: Any) -> Behaviour:
        return cls().merged(data)

    def to_dict(self) -> dict[str, Any]:
        return {api: self.apis[api].to_dict() for api in APIS}


def _merge_latency(current: Latency, patch: Any, path: str) -> dict[str, Any]:
    # The two forms exclude each other: a patch naming one form replaces the other form entirely,
    # while a patch of p99_ms alone tunes the current log-normal.
    patch = _expect_mapping(patch, f"{path}.latency", {"fixed_ms", "p50_ms", "p99_ms"})
    if "fixed_ms" in patch or current.fixed_ms is not None:
        return dict(patch)
    return {**current.to_dict(), **patch}


def _expect_mapping(data: Any, path: str, allowed: set[str] | None) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise BehaviourError(f"{path}: must be an object")
    if allowed is not None:
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise BehaviourError(f"{path}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")
    return data


def _number(value: Any, path: str, *, minimum: float, exclusive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise BehaviourError(f"{path}: must be a number (got {value!r})")
    if value < minimum or (exclusive and value == minimum):
        raise BehaviourError(f"{path}: must be {'>' if exclusive else '>='} {minimum} (got {value})")
    if math.isinf(value):
        raise BehaviourError(f"{path}: must be finite")
    return float(value)


def _integer(value: Any, path: str, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise BehaviourError(f"{path}: must be an integer (got {value!r})")
    if value < minimum:
        raise BehaviourError(f"{path}: must be >= {minimum} (got {value})")
    return value


def _rate(value: Any, path: str) -> float:
    rate = _number(value, path, minimum=0.0)
    if rate > 1.0:
        raise BehaviourError(f"{path}: must be between 0.0 and 1.0 (got {value})")
    return rate


# -- decisions --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Refusal:
    """Answer at once with ``status`` (429 rate limit, 503 outage); ``retry_after`` in seconds."""

    status: int
    code: str
    message: str
    retry_after: float | None


@dataclass(eq=False)
class Arrival:
    """One request's passage through the simulator, from :meth:`Simulator.arrive` to ``finish``
    (named apart from the toolkit's breaker ``Ticket``, which is a different thing).

    ``refusal`` set: answer it now. Otherwise wait ``delay`` seconds, then act on ``outcome``
    (``"ok"`` answer, ``"error"`` fail with ``error_status``, ``"hang"`` never answer).
    """

    api: str
    key: str
    refusal: Refusal | None
    delay: float = 0.0
    outcome: Literal["ok", "error", "hang"] = "ok"
    error_status: int = 503
    # The counters this request occupies. Kept on the arrival so a reset while it is in flight
    # does not make its release touch the fresh counters.
    _traffic: tuple[_Traffic, ...] = ()
    _admitted: _KeyLimits | None = None
    _finished: bool = False

    @property
    def finished(self) -> bool:
        return self._finished


@dataclass(frozen=True)
class TrafficStatistics:
    """Counts for one API or one (API, key). Concurrency spans arrival to response end, refusals included."""

    requests: int
    statuses: Mapping[int, int]
    current_concurrent: int
    peak_concurrent: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "statuses": {str(code): n for code, n in sorted(self.statuses.items())},
            "current_concurrent": self.current_concurrent,
            "peak_concurrent": self.peak_concurrent,
        }


@dataclass(frozen=True)
class ApiStatistics:
    total: TrafficStatistics
    keys: Mapping[str, TrafficStatistics]

    def to_dict(self) -> dict[str, Any]:
        return {**self.total.to_dict(), "keys": {k: v.to_dict() for k, v in sorted(self.keys.items())}}


@dataclass(frozen=True)
class SimulatorStatistics:
    seed: int
    apis: Mapping[str, ApiStatistics]

    def to_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "apis": {api: self.apis[api].to_dict() for api in APIS}}


class _Traffic:
    __slots__ = ("current", "peak", "requests", "statuses")

    def __init__(self) -> None:
        self.requests = 0
        self.current = 0
        self.peak = 0
        self.statuses: dict[int, int] = {}

    def arrive(self) -> None:
        self.requests += 1
        self.current += 1
        self.peak = max(self.peak, self.current)

    def leave(self, status: int) -> None:
        self.current -= 1
        self.statuses[status] = self.statuses.get(status, 0) + 1

    def statistics(self) -> TrafficStatistics:
        return TrafficStatistics(
            self.requests, MappingProxyType(dict(self.statuses)), self.current, self.peak
        )


class _KeyLimits:
    """Token bucket and admitted-concurrency count of one API key on one API."""

    __slots__ = ("admitted", "tokens", "updated_at")

    def __init__(self) -> None:
        self.tokens: float | None = None  # None: full (its size depends on the current behaviour)
        self.updated_at = 0.0
        self.admitted = 0

    def take_token(self, limit: SimulatedRateLimit, now: float) -> float | None:
        """Take one token; or return the seconds until one is available (and take nothing)."""
        assert limit.rps is not None
        size = limit.bucket_size
        if self.tokens is None:
            self.tokens = size
        else:
            elapsed = max(0.0, now - self.updated_at)
            self.tokens = min(size, self.tokens + elapsed * limit.rps)
        self.updated_at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return None
        return (1.0 - self.tokens) / limit.rps


class Simulator:
    """Behaviour, randomness, provider-side limits and statistics of all simulated APIs.

    Each API draws from its own ``random.Random`` seeded from ``(seed, api)``, so the same seed
    and the same arrival order give the same latencies, errors and hangs, and traffic on one API
    does not shift another API's draws.
    """

    def __init__(self, behaviour: Behaviour | None = None, *, seed: int = 42) -> None:
        self.seed = seed
        self._initial = behaviour if behaviour is not None else Behaviour()
        self.reset()

    def reset(self) -> None:
        """Back to the start-up behaviour, fresh random streams, empty limits and statistics."""
        self._behaviour = self._initial
        self._rngs = {api: random.Random(f"{self.seed}:{api}") for api in APIS}
        self._api_traffic = {api: _Traffic() for api in APIS}
        self._key_traffic: dict[str, dict[str, _Traffic]] = {api: {} for api in APIS}
        self._limits: dict[str, dict[str, _KeyLimits]] = {api: {} for api in APIS}

    @property
    def behaviour(self) -> Behaviour:
        return self._behaviour

    def update(self, patch: Any) -> Behaviour:
        """Merge a partial behaviour document; all or nothing (raises BehaviourError)."""
        self._behaviour = self._behaviour.merged(patch)
        return self._behaviour

    def arrive(self, api: str, key: str, now: float) -> Arrival:
        """Count a request in and decide its fate; pair every call with :meth:`finish`."""
        behaviour = self._behaviour[api]
        key_traffic = self._key_traffic[api].setdefault(key, _Traffic())
        traffic = (self._api_traffic[api], key_traffic)
        for t in traffic:
            t.arrive()

        def refuse(status: int, code: str, message: str, retry_after: float | None) -> Arrival:
            return Arrival(api, key, Refusal(status, code, message, retry_after), _traffic=traffic)

        if behaviour.outage:
            return refuse(503, "service_unavailable", f"simulated outage of the {api} API", 30.0)
        limit = behaviour.rate_limit
        limits = self._limits[api].setdefault(key, _KeyLimits())
        if limit.max_concurrent is not None and limits.admitted >= limit.max_concurrent:
            # No time at which a slot frees is known in advance; a second is what providers say.
            return refuse(
                429,
                "rate_limit_exceeded",
                f"too many concurrent requests on the {api} API for this key (limit {limit.max_concurrent})",
                1.0,
            )
        if limit.rps is not None:
            wait = limits.take_token(limit, now)
            if wait is not None:
                return refuse(
                    429,
                    "rate_limit_exceeded",
                    f"rate limit of {limit.rps:g} requests/s on the {api} API reached for this key",
                    wait,
                )
        limits.admitted += 1
        rng = self._rngs[api]
        delay = behaviour.latency.sample(rng)
        draw = rng.random()
        if draw < behaviour.error_rate:
            outcome: Literal["ok", "error", "hang"] = "error"
        elif draw < behaviour.error_rate + behaviour.hang_rate:
            outcome = "hang"
        else:
            outcome = "ok"
        return Arrival(
            api,
            key,
            None,
            delay=delay,
            outcome=outcome,
            error_status=behaviour.error_status,
            _traffic=traffic,
            _admitted=limits,
        )

    def finish(self, arrival: Arrival, status: int) -> None:
        """Count the request out with the status it got. Idempotent: a second call does nothing."""
        if arrival._finished:
            return
        arrival._finished = True
        for t in arrival._traffic:
            t.leave(status)
        if arrival._admitted is not None:
            arrival._admitted.admitted -= 1

    def statistics(self) -> SimulatorStatistics:
        return SimulatorStatistics(
            self.seed,
            MappingProxyType(
                {
                    api: ApiStatistics(
                        self._api_traffic[api].statistics(),
                        MappingProxyType({k: t.statistics() for k, t in self._key_traffic[api].items()}),
                    )
                    for api in APIS
                }
            ),
        )

    def __repr__(self) -> str:
        busy = {api: t.current for api, t in self._api_traffic.items() if t.current}
        total = sum(t.requests for t in self._api_traffic.values())
        return f"<Simulator seed={self.seed} requests={total} in_flight={busy}>"

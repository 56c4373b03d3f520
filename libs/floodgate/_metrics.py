"""Prometheus metric families of the toolkit, registered on a registry the caller owns.

Metrics are passed one way: every public constructor takes ``registry=`` (a prometheus
``CollectorRegistry``; None, the default, turns metrics off). Inside, there is one
`FloodgateMetrics` per registry (constructing it twice for the same registry returns the same
object, so a service hands one registry to `Dependencies.from_budget`, `open_pg_pool`, a `Door`
and a `Gate` without double registration). Never the global registry: a
process may host several apps, and tests make a fresh registry each.
"""

from __future__ import annotations

import weakref

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["FloodgateMetrics", "metrics_for"]

# Latency buckets from 1 ms to 30 s: downstream calls span embeddings (ms) to LLM generations (s).
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_WAIT_BUCKETS = (0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
_LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1)

_BY_REGISTRY: weakref.WeakKeyDictionary[CollectorRegistry, FloodgateMetrics] = weakref.WeakKeyDictionary()


class FloodgateMetrics:
    """All of floodgate's metric families on ``registry``.

    Gates: ``floodgate_gate_{in_use,waiting,capacity}``, ``floodgate_gate_wait_seconds``,
    ``floodgate_rejections_total{dependency,reason}``. Calls: ``floodgate_attempts_total``,
    ``floodgate_retries_total``, ``floodgate_downstream_latency_seconds{dependency,status}``,
    ``floodgate_http_connection_wait_seconds{dependency}`` (an HTTP attempt's wait for a connection).
    Provider pushback: ``floodgate_cooldowns_total``, ``floodgate_cooldown_seconds_total``,
    ``floodgate_dependency_concurrency_limit`` (adaptive dependencies).
    Breakers: ``floodgate_breaker_state`` (0 closed, 1 half-open, 2 open),
    ``floodgate_breaker_transitions_total``. Caches: ``floodgate_cache_requests_total``,
    ``floodgate_singleflight_shared_total``. Pools: ``floodgate_pool_{in_use,size}``,
    ``floodgate_pool_acquire_wait_seconds``. Loop: ``floodgate_loop_lag_seconds``.
    Degradation: ``floodgate_degraded_total{step,reason}``. Dynamic shares:
    ``floodgate_membership_{live_members,generation,fenced}{service}``,
    ``floodgate_membership_heartbeats_total{service,outcome}``.
    """

    def __new__(cls, registry: CollectorRegistry) -> FloodgateMetrics:
        existing = _BY_REGISTRY.get(registry)
        if existing is not None:
            return existing
        self = super().__new__(cls)
        self._init(registry)
        _BY_REGISTRY[registry] = self
        return self

    def _init(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        r = registry
        self.gate_in_use = Gauge("floodgate_gate_in_use", "Slots held", ["gate"], registry=r)
        self.gate_waiting = Gauge(
            "floodgate_gate_waiting", "Callers waiting for a slot", ["gate"], registry=r
        )
        self.gate_capacity = Gauge("floodgate_gate_capacity", "Slots in the gate", ["gate"], registry=r)
        self.gate_wait = Histogram(
            "floodgate_gate_wait_seconds",
            "Time waited for a slot (granted or not)",
            ["gate"],
            buckets=_WAIT_BUCKETS,
            registry=r,
        )
        self.rejections = Counter(
            "floodgate_rejections",
            "Calls refused by floodgate, by reason",
            ["dependency", "reason"],
            registry=r,
        )
        self.attempts = Counter(
            "floodgate_attempts",
            "Attempts sent to a dependency, by outcome",
            ["dependency", "outcome"],
            registry=r,
        )
        self.retries = Counter(
            "floodgate_retries", "Retries, by reason", ["dependency", "reason"], registry=r
        )
        self.latency = Histogram(
            "floodgate_downstream_latency_seconds",
            "Duration of one attempt, by status",
            ["dependency", "status"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.http_connection_wait = Histogram(
            "floodgate_http_connection_wait_seconds",
            "Time from an HTTP attempt's start until it has a connection (pool wait and connect)",
            ["dependency"],
            buckets=_WAIT_BUCKETS,
            registry=r,
        )
        self.concurrency_limit = Gauge(
            "floodgate_dependency_concurrency_limit",
            "In-flight limit learned from the provider's 429s (adaptive dependencies only)",
            ["dependency"],
            registry=r,
        )
        self.cooldowns = Counter(
            "floodgate_cooldowns",
            "Pauses of a whole dependency begun by a provider 429",
            ["dependency"],
            registry=r,
        )
        self.cooldown_seconds = Counter(
            "floodgate_cooldown_seconds",
            "Time a dependency spent paused after provider 429s",
            ["dependency"],
            registry=r,
        )
        self.breaker_state = Gauge(
            "floodgate_breaker_state",
            "Circuit state: 0 closed, 1 half-open, 2 open",
            ["dependency"],
            registry=r,
        )
        self.breaker_transitions = Counter(
            "floodgate_breaker_transitions",
            "Circuit state changes",
            ["dependency", "from_state", "to_state"],
            registry=r,
        )
        self.cache_requests = Counter(
            "floodgate_cache_requests", "Cache lookups, by result (hit/miss)", ["cache", "result"], registry=r
        )
        self.singleflight_shared = Counter(
            "floodgate_singleflight_shared",
            "Calls that joined an identical call in flight",
            ["name"],
            registry=r,
        )
        self.pool_in_use = Gauge("floodgate_pool_in_use", "Connections checked out", ["pool"], registry=r)
        self.pool_size = Gauge("floodgate_pool_size", "Connections open", ["pool"], registry=r)
        self.pool_acquire_wait = Histogram(
            "floodgate_pool_acquire_wait_seconds",
            "Time to check out a connection",
            ["pool"],
            buckets=_WAIT_BUCKETS,
            registry=r,
        )
        self.loop_lag = Histogram(
            "floodgate_loop_lag_seconds",
            "How late a sleep woke up (event loop lag)",
            buckets=_LAG_BUCKETS,
            registry=r,
        )
        self.loop_lag_max = Gauge("floodgate_loop_lag_max_seconds", "Largest lag seen", registry=r)
        self.degraded = Counter(
            "floodgate_degraded", "Steps that fell back, by reason", ["step", "reason"], registry=r
        )
        self.membership_live = Gauge(
            "floodgate_membership_live_members",
            "Live processes of the service in the generation this process saw last (dynamic shares)",
            ["service"],
            registry=r,
        )
        self.membership_generation = Gauge(
            "floodgate_membership_generation",
            "The service's membership generation seen last",
            ["service"],
            registry=r,
        )
        self.membership_fenced = Gauge(
            "floodgate_membership_fenced",
            "1 while this process holds no share because its heartbeats do not get through",
            ["service"],
            registry=r,
        )
        self.membership_heartbeats = Counter(
            "floodgate_membership_heartbeats",
            "Membership heartbeats, by outcome (ok, failed)",
            ["service", "outcome"],
            registry=r,
        )

    def __init__(self, registry: CollectorRegistry):
        # All work happens in __new__ so a second construction for the same registry is a no-op.
        pass

    def __repr__(self) -> str:
        return f"<FloodgateMetrics registry={self.registry!r}>"


def metrics_for(registry: CollectorRegistry | None) -> FloodgateMetrics | None:
    """The toolkit's families on ``registry`` (made once per registry), or None: metrics off.

    Every public constructor takes ``registry=`` and calls this; none takes the families object.
    """
    return None if registry is None else FloodgateMetrics(registry)

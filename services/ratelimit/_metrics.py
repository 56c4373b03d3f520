"""Prometheus metrics of the rate-limit service, on an explicit registry owned by the server (which also
gets the process collectors: `chassis.register_process_metrics`)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

__all__ = ["RateLimitMetrics"]


class RateLimitMetrics:
    """Labels stay bounded: ``limit`` is the matched config path with the values of key-only nodes
    left out (``floodgate.tenant.route_deal_brain``), never one label per tenant."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.requests = Counter(
            "ratelimit_requests",
            "ShouldRateLimit calls by overall verdict",
            ["domain", "code"],
            registry=registry,
        )
        self.over_limit = Counter(
            "ratelimit_over_limit", "descriptors over their limit", ["limit", "shadow"], registry=registry
        )
        self.store_errors = Counter(
            "ratelimit_store_errors",
            "calls answered UNAVAILABLE because the counter store failed",
            registry=registry,
        )
        self.latency = Histogram(
            "ratelimit_decision_duration_seconds",
            "time to decide one ShouldRateLimit call",
            registry=registry,
            buckets=(0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1),
        )
        # The selectors loop's counterpart of a trio service's loop lag: a socket that becomes
        # ready while the loop is busy waits for the rest of that round (see `UnaryGrpcServer`).
        self.loop_round = Histogram(
            "ratelimit_loop_round_seconds",
            "time the gRPC loop takes to come round: from the sockets being ready to waiting again",
            registry=registry,
            buckets=(0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25),
        )

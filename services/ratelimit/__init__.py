"""Floodgate's global rate-limit service for Envoy (``envoy.service.ratelimit.v3.RateLimitService``).

Reads the descriptor configuration format of the reference service ``envoyproxy/ratelimit``
(``config/ratelimit.yaml``), counts fixed windows in Redis (``REDIS_URL``) or in memory, and answers
Envoy's ``ShouldRateLimit`` with per-descriptor statuses so Envoy can emit ``x-ratelimit-*`` headers.
Run it with ``python -m services.ratelimit``. The decision logic (`RateLimiter`) is usable alone.
It also keeps each tenant's token and cost budgets (`_budgets`: asked with zero hits before an LLM
request, the usage reported after it) and answers ``GET /v1/usage`` on its HTTP port (`tenant_usage`).
gRPC is served by a small single-threaded HTTP/2 server (`UnaryGrpcServer` around the sans-I/O
`UnaryGrpcConnection`) that decides each call in the thread that read it; grpcio's threaded server
remains available (``RATELIMIT_GRPC_SERVER=grpcio``), and the same loop on the ``h2`` library's
framing (`H2LibraryGrpcConnection`, ``RATELIMIT_GRPC_SERVER=h2``).
"""

from ._budgets import (
    BUDGET_KEY,
    BUDGET_WINDOWS,
    COST_SCALE,
    REQUESTS_FINISHED,
    REQUESTS_STARTED,
    BudgetWindow,
    budget_descriptor_entries,
    budget_headers,
    budget_window,
    in_flight_descriptor_entries,
    reset_duration,
)
from ._config import (
    ConfigError,
    DescriptorNode,
    DomainConfig,
    MatchedLimit,
    RateLimit,
    RateLimitConfig,
    Unit,
    load_config,
    parse_config,
)
from ._grpc import SHOULD_RATE_LIMIT_PATH, RateLimitServicer, decision_to_response
from ._h2grpc import GrpcStatus, H2ProtocolError, UnaryCall, UnaryGrpcConnection, UnaryGrpcStatistics
from ._h2lib import H2LibraryGrpcConnection
from ._h2server import GrpcAbort, GrpcConnection, UnaryGrpcServer, UnaryGrpcServerStatistics
from ._limiter import (
    Code,
    Decision,
    DecisionPlan,
    Descriptor,
    DescriptorDecision,
    RateLimiter,
    RateLimiterStatistics,
    Reading,
)
from ._metrics import RateLimitMetrics
from ._openapi import USAGE_ERRORS, build_openapi
from ._server import build_limiter, serve
from ._settings import RateLimitSettings
from ._store import (
    CounterStore,
    CounterStoreError,
    Increment,
    MemoryCounterStore,
    MemoryStoreStatistics,
    RedisCounterStore,
)
from ._usage import USAGE_PATH, tenant_usage

__all__ = [
    "BUDGET_KEY",
    "BUDGET_WINDOWS",
    "COST_SCALE",
    "REQUESTS_FINISHED",
    "REQUESTS_STARTED",
    "SHOULD_RATE_LIMIT_PATH",
    "USAGE_ERRORS",
    "USAGE_PATH",
    "BudgetWindow",
    "Code",
    "ConfigError",
    "CounterStore",
    "CounterStoreError",
    "Decision",
    "DecisionPlan",
    "Descriptor",
    "DescriptorDecision",
    "DescriptorNode",
    "DomainConfig",
    "GrpcAbort",
    "GrpcConnection",
    "GrpcStatus",
    "H2LibraryGrpcConnection",
    "H2ProtocolError",
    "Increment",
    "MatchedLimit",
    "MemoryCounterStore",
    "MemoryStoreStatistics",
    "RateLimit",
    "RateLimitConfig",
    "RateLimitMetrics",
    "RateLimitServicer",
    "RateLimitSettings",
    "RateLimiter",
    "RateLimiterStatistics",
    "Reading",
    "RedisCounterStore",
    "UnaryCall",
    "UnaryGrpcConnection",
    "UnaryGrpcServer",
    "UnaryGrpcServerStatistics",
    "UnaryGrpcStatistics",
    "Unit",
    "budget_descriptor_entries",
    "budget_headers",
    "budget_window",
    "build_limiter",
    "build_openapi",
    "decision_to_response",
    "in_flight_descriptor_entries",
    "load_config",
    "parse_config",
    "reset_duration",
    "serve",
    "tenant_usage",
]

"""floodgate: concurrency budgets for I/O-heavy backends, written against anyio.

Every downstream gets a budget (a `Gate` with a bounded, tenant-fair wait), every request a
deadline (a cancel scope), every call one guarded path (`Dependency.call`: gate, rate limit,
circuit breaker, attempt timeout, classified retries within a retry budget), and overload
is an explicit, fast `Overloaded`. The budgets come from one validated file (`load_budget`).

The implementation lives in private modules; this module re-exports the public API. The
PostgreSQL pool (`open_pg_pool`, `PgPool`, `PgPoolStatistics`, `is_transient_pg_error`) is
imported on first use, so ``import floodgate`` needs neither asyncpg nor trio-asyncio (the ``pg`` extra).
"""

import typing as _typing

from ._adaptive import AdaptiveLimit, AdaptiveLimitStatistics
from ._alerts import alert_rules, rules_yaml, slo_bucket_bounds
from ._breaker import BreakerState, BreakerStatistics, CircuitBreaker
from ._budget import (
    AdaptiveConcurrencyPolicy,
    AdmissionPolicy,
    BreakerPolicy,
    Budget,
    BudgetError,
    CachePolicy,
    CooldownPolicy,
    CostPolicy,
    DependencyPolicy,
    DeploymentPolicy,
    EndpointPolicy,
    IngestionPolicy,
    ModelPrice,
    RateLimitPolicy,
    RetryBudgetPolicy,
    RetryPolicy,
    ServiceShape,
    TenantLimits,
    TimeoutPolicy,
    load_budget,
    parse_budget,
)
from ._cache import MISSING, CacheStatistics, CacheStore, Singleflight, SingleflightStatistics, TTLCache
from ._cooldown import Cooldown, CooldownStatistics
from ._deadline import (
    DEADLINE_HEADER,
    ENVOY_TIMEOUT_HEADER,
    deadline_after,
    deadline_from_headers,
    deadline_headers,
    time_left,
)
from ._degrade import Degradation, Degradations, optional
from ._dependency import Dependencies, Dependency, DependencyStatistics
from ._door import Door, DoorStatistics
from ._errors import (
    CircuitOpen,
    CoolingDown,
    DeadlineExceeded,
    DependencyError,
    FloodgateError,
    Overloaded,
    PoolUnavailable,
    RetryBudgetExhausted,
    TenantShareExceeded,
    error_body,
    retry_after_header,
    retry_after_seconds,
)
from ._gate import DEFAULT_TENANT, Gate, GateStatistics
from ._http import parse_retry_after, retry_after_from_headers
from ._lag import LoopLagMonitor, LoopLagStatistics
from ._membership import Membership, MembershipPolicy, MembershipStatistics, MembershipView
from ._membership_pg import PgMembershipStore, open_pg_membership_store
from ._membership_run import open_membership
from ._membership_store import InMemoryMembershipStore, LiveService, MembershipStore
from ._pushback import PushbackLimit, PushbackLimitStatistics
from ._ratelimit import TokenBucket, TokenBucketStatistics
from ._retry import RetryBudget, RetryBudgetStatistics, backoff_ceiling, backoff_delay, retry_after_delay
from ._tenants import TenantPolicy, TenantTable

if _typing.TYPE_CHECKING:
    from ._pg import PgPool, PgPoolStatistics, is_transient_pg_error, open_pg_pool

#: Public names whose module imports asyncpg: loaded by `__getattr__` when first used.
_POSTGRES = frozenset({"PgPool", "PgPoolStatistics", "is_transient_pg_error", "open_pg_pool"})


def __getattr__(name: str) -> object:
    if name in _POSTGRES:
        from . import _pg  # needs the pg extra: asyncpg (and trio-asyncio under trio)

        value = getattr(_pg, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_POSTGRES})


__all__ = [
    "DEADLINE_HEADER",
    "DEFAULT_TENANT",
    "ENVOY_TIMEOUT_HEADER",
    "MISSING",
    "AdaptiveConcurrencyPolicy",
    "AdaptiveLimit",
    "AdaptiveLimitStatistics",
    "AdmissionPolicy",
    "BreakerPolicy",
    "BreakerState",
    "BreakerStatistics",
    "Budget",
    "BudgetError",
    "CachePolicy",
    "CacheStatistics",
    "CacheStore",
    "CircuitBreaker",
    "CircuitOpen",
    "Cooldown",
    "CooldownPolicy",
    "CooldownStatistics",
    "CoolingDown",
    "CostPolicy",
    "DeadlineExceeded",
    "Degradation",
    "Degradations",
    "Dependencies",
    "Dependency",
    "DependencyError",
    "DependencyPolicy",
    "DependencyStatistics",
    "DeploymentPolicy",
    "Door",
    "DoorStatistics",
    "EndpointPolicy",
    "FloodgateError",
    "Gate",
    "GateStatistics",
    "InMemoryMembershipStore",
    "IngestionPolicy",
    "LiveService",
    "LoopLagMonitor",
    "LoopLagStatistics",
    "Membership",
    "MembershipPolicy",
    "MembershipStatistics",
    "MembershipStore",
    "MembershipView",
    "ModelPrice",
    "Overloaded",
    "PgMembershipStore",
    "PgPool",
    "PgPoolStatistics",
    "PoolUnavailable",
    "PushbackLimit",
    "PushbackLimitStatistics",
    "RateLimitPolicy",
    "RetryBudget",
    "RetryBudgetExhausted",
    "RetryBudgetPolicy",
    "RetryBudgetStatistics",
    "RetryPolicy",
    "ServiceShape",
    "Singleflight",
    "SingleflightStatistics",
    "TTLCache",
    "TenantLimits",
    "TenantPolicy",
    "TenantShareExceeded",
    "TenantTable",
    "TimeoutPolicy",
    "TokenBucket",
    "TokenBucketStatistics",
    "alert_rules",
    "backoff_ceiling",
    "backoff_delay",
    "deadline_after",
    "deadline_from_headers",
    "deadline_headers",
    "error_body",
    "is_transient_pg_error",
    "load_budget",
    "open_membership",
    "open_pg_membership_store",
    "open_pg_pool",
    "optional",
    "parse_budget",
    "parse_retry_after",
    "retry_after_delay",
    "retry_after_from_headers",
    "retry_after_header",
    "retry_after_seconds",
    "rules_yaml",
    "slo_bucket_bounds",
    "time_left",
]

"""The budget file: one validated, immutable description of every concurrency budget.

`load_budget` reads ``config/budget.toml`` once at start-up into a frozen `Budget`. Its schema
is written with pydantic (v2, frozen models, unknown keys forbidden); the checks that span
several keys (do the shares fit? do the database pools fit under ``max_connections``?) run
after parsing. Every error names the key path, e.g.
``dependencies.llm.retry.max_attempts: must be >= 1``.

The per-process limits follow from the deployment shape by division: a dependency allows
``global_concurrency`` concurrent calls (for PostgreSQL: ``max_connections - reserve``),
a service gets ``share`` of it, and each of its ``replicas x workers`` processes gets
``floor(global * share / processes)``.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Iterable, Mapping
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from ._tenants import TenantTable

__all__ = [
    "AdaptiveConcurrencyPolicy",
    "AdmissionPolicy",
    "BreakerPolicy",
    "Budget",
    "BudgetError",
    "CachePolicy",
    "CooldownPolicy",
    "CostPolicy",
    "DependencyPolicy",
    "DeploymentPolicy",
    "EndpointPolicy",
    "IngestionPolicy",
    "ModelPrice",
    "RateLimitPolicy",
    "RetryBudgetPolicy",
    "RetryPolicy",
    "ServiceShape",
    "TenantLimits",
    "TimeoutPolicy",
    "load_budget",
    "parse_budget",
]

Seconds = Annotated[float, Field(gt=0)]
NonNegativeSeconds = Annotated[float, Field(ge=0)]
Fraction = Annotated[float, Field(gt=0, le=1)]

# The tenant name rule every service applies (chassis.TENANT_PATTERN, which the toolkit cannot
# import: it is its own distribution); tests/test_loadtest_config.py keeps the two equal.
TENANT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
TenantName = Annotated[str, StringConstraints(pattern=TENANT_PATTERN)]


def _share_of_slots(value: Any) -> float | int:
    """A per-tenant share of a gate's or door's slots: a count (an integer >= 1) or a fraction
    (a float, 0 < x <= 1). TOML keeps the two apart: ``2`` is two slots, ``1.0`` all of them."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be a fraction of the slots (0 < x <= 1) or a count (an integer >= 1)")
    if isinstance(value, int):
        if value < 1:
            raise ValueError("a count of slots must be >= 1")
    elif not 0 < value <= 1:
        raise ValueError("a fraction of the slots must be > 0 and <= 1 (a count is an integer)")
    return value


#: A tenant's share of the slots of a gate or door (`TenantTable.share_limit`).
ShareOfSlots = Annotated[float | int, PlainValidator(_share_of_slots)]


class FileProblems(ValueError):
    """A configuration file is invalid. ``problems`` lists each one as ``"key.path: what is wrong"``;
    each kind of file says which it is (``default_source``)."""

    default_source = "file"

    def __init__(self, problems: list[str], *, source: str | None = None):
        self.problems = list(problems)
        self.source = source or self.default_source
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"invalid {self.source} ({len(self.problems)} problem(s)):\n{lines}")


class BudgetError(FileProblems):
    """The budget file is invalid."""

    default_source = "budget"


class _Policy(BaseModel):
    # Frozen: a budget is loaded once and shared by every task; nobody may edit it in place.
    model_config = ConfigDict(frozen=True, extra="forbid")


class DeploymentPolicy(_Policy):
    """The database side of the deployment shape."""

    database_max_connections: int = Field(ge=1)
    #: connections kept free for migrations, admin sessions and a human with psql
    database_reserve: int = Field(default=10, ge=0)
    #: the traffic's peak over its normal rate (5 QPS normally, 50 at peak: 10); an endpoint's
    #: ``peak_qps`` defaults to ``target_qps`` times it
    burst_factor: Annotated[float, Field(ge=1)] = 1.0

    @model_validator(mode="after")
    def _reserve_fits(self) -> DeploymentPolicy:
        if self.database_reserve >= self.database_max_connections:
            raise ValueError("database_reserve must be < database_max_connections")
        return self

    @property
    def database_available(self) -> int:
        return self.database_max_connections - self.database_reserve


class ServiceShape(_Policy):
    """How many copies of a service run: ``replicas`` (pods/hosts) x ``workers`` (processes each)."""

    replicas: int = Field(ge=1)
    workers: int = Field(ge=1)
    #: CPU cores one process may use (its container's limit divided by its workers); `floodgate
    #: plan` turns the endpoints' ``cpu_ms_per_request`` into a CPU limit with it
    cpu_cores: Annotated[float, Field(gt=0)] = 1.0
    #: memory one process may use (MiB); written into the design document (`floodgate plan --format markdown`)
    memory_mib: Annotated[int, Field(ge=1)] | None = None

    @property
    def processes(self) -> int:
        return self.replicas * self.workers


class TimeoutPolicy(_Policy):
    """Timeouts of one attempt. ``attempt`` bounds the whole attempt (connect + send + read);
    a call never gets more than the time left before the request deadline.

    For a postgres dependency (its pool, `open_pg_pool`): ``connect`` bounds opening a
    connection, ``attempt`` each statement (PostgreSQL's ``statement_timeout`` and asyncpg's
    ``command_timeout``), ``min_time_to_start`` the pool's gate; ``read`` and ``write`` do not
    apply and may not be set."""

    connect: Seconds = 1.0
    read: Seconds = 10.0
    write: Seconds = 5.0
    attempt: Seconds = 15.0
    #: do not start a call (or a retry) with less time than this left: it could not finish
    min_time_to_start: NonNegativeSeconds = 0.05


class RetryPolicy(_Policy):
    """Retries with capped exponential backoff and full jitter, only for idempotent calls
    (plus connect errors and 429s, which the downstream never processed)."""

    max_attempts: int = Field(default=3, ge=1)
    #: give up when the next retry would start later than this after the first attempt
    max_total: Seconds = 10.0
    backoff_base: Seconds = 0.1
    backoff_cap: Seconds = 2.0
    retry_on_status: tuple[int, ...] = (429, 502, 503, 504)
    retry_on_timeout: bool = True
    retry_on_transport_error: bool = True
    #: honour a downstream Retry-After up to this many seconds; longer ones end the call
    retry_after_cap: NonNegativeSeconds = 5.0
    #: wait up to this fraction longer than a Retry-After asks (never less), so the callers it
    #: refused together do not come back together (`floodgate.retry_after_delay`)
    retry_after_jitter: Annotated[float, Field(ge=0, le=1)] = 0.1

    @model_validator(mode="after")
    def _cap_above_base(self) -> RetryPolicy:
        if self.backoff_cap < self.backoff_base:
            raise ValueError("backoff_cap must be >= backoff_base")
        for status in self.retry_on_status:
            if not 400 <= status <= 599:
                raise ValueError(f"retry_on_status: {status} is not an HTTP error status")
        return self


class CooldownPolicy(_Policy):
    """The pause a provider's 429 puts the whole dependency in, for every caller of the process
    (`floodgate.Cooldown`): as long as the provider asked (``retry-after-ms``, else
    ``Retry-After``), ``without_retry_after`` when it named no time, never more than
    ``max_seconds``. New attempts wait for its end (within their ``max_wait`` and deadline) or are
    refused at once. ``enabled = false``: each call honours only its own 429's Retry-After."""

    enabled: bool = True
    without_retry_after: NonNegativeSeconds = 1.0
    max_seconds: Seconds = 10.0


class AdaptiveConcurrencyPolicy(_Policy):
    """``adaptive = true`` (or an ``[dependencies.<name>.adaptive]`` table): each process learns the
    dependency's in-flight limit from the provider's 429s (`floodgate.PushbackLimit`), between
    ``floor`` and the budget's per-process value. On a 429 the limit drops to what the provider
    accepted, at most by ``decrease`` (0.5: halved); after ``increase_interval`` seconds of use
    without one it tries one more (every tenth of that while below the level of the last 429)."""

    floor: int = Field(default=1, ge=1)
    decrease: Annotated[float, Field(gt=0, lt=1)] = 0.5
    increase_interval: Seconds = 30.0


class RetryBudgetPolicy(_Policy):
    """Retries may be at most ``ratio`` of the calls over the last ``window`` seconds (plus
    ``min_retries`` per window so that a quiet dependency can still retry at all)."""

    ratio: Annotated[float, Field(ge=0, le=1)] = 0.2
    window: Seconds = 10.0
    min_retries: int = Field(default=5, ge=0)


class BreakerPolicy(_Policy):
    """Circuit breaker over a sliding time window of ``window`` seconds."""

    window: Seconds = 30.0
    min_calls: int = Field(default=20, ge=1)
    failure_rate: Fraction = 0.5
    slow_call_rate: Fraction = 1.0
    slow_call_duration: Seconds = 5.0
    open_duration: Seconds = 10.0
    half_open_probes: int = Field(default=2, ge=1)


class RateLimitPolicy(_Policy):
    """Client-side token bucket to stay under a provider's published requests per minute.

    ``rpm`` is the provider's limit for the whole deployment; each process gets
    ``rpm * share / processes``. ``burst`` is per process.
    """

    rpm: Annotated[float, Field(gt=0)]
    burst: int = Field(default=1, ge=1)
    #: wait at most this long for a token, then reject with Overloaded
    max_wait: NonNegativeSeconds = 0.5


class CachePolicy(_Policy):
    ttl: Seconds
    max_entries: int = Field(ge=1)


class CostPolicy(_Policy):
    """What the deployment may spend per hour on its providers (``[cost]``, optional): the
    ``FloodgateSpendOverBudget`` alert (`floodgate alerts`) fires above either limit. Dollars are
    the estimate from ``[prices]``; tokens are what the providers report. A limit, not a brake:
    nothing refuses calls over it."""

    max_usd_per_hour: Annotated[float, Field(gt=0)] | None = None
    max_tokens_per_hour: Annotated[float, Field(gt=0)] | None = None

    @model_validator(mode="after")
    def _some_limit(self) -> CostPolicy:
        if self.max_usd_per_hour is None and self.max_tokens_per_hour is None:
            raise ValueError("set max_usd_per_hour, max_tokens_per_hour or both (or leave [cost] out)")
        return self


#: What a postgres dependency may not set, because its pool does not use it: the pool runs each
#: unit of work once (a transaction is not blindly retried: the caller decides), behind the gate
#: alone, with one timeout per statement.
_NOT_FOR_POSTGRES = ("retry", "retry_budget", "breaker", "rate_limit", "cache", "cooldown", "adaptive")
_TIMEOUTS_NOT_FOR_POSTGRES = ("read", "write")


class DependencyPolicy(_Policy):
    """Everything the toolkit needs to call one dependency.

    An http dependency uses all of it (`Dependency`). A postgres one is a pool (`open_pg_pool`):
    its size from the shares, its gate from ``max_waiters``/``max_wait``, its timeouts from
    ``timeouts``; setting a key the pool does not use is an error rather than a silent no-op.
    """

    kind: Literal["http", "postgres"] = "http"
    #: concurrent calls the provider (or database) allows for the whole deployment;
    #: optional for postgres, where it defaults to max_connections - reserve
    global_concurrency: int | None = Field(default=None, ge=1)
    #: the share of global_concurrency each service gets (services not listed do not use it)
    shares: dict[str, Fraction]
    max_waiters: int = Field(default=32, ge=0)
    max_wait: NonNegativeSeconds = 1.0
    #: typical latency of one call, used by `floodgate plan` for Little's law
    typical_latency: Seconds = 0.1
    timeouts: TimeoutPolicy = TimeoutPolicy()
    retry: RetryPolicy = RetryPolicy()
    retry_budget: RetryBudgetPolicy = RetryBudgetPolicy()
    breaker: BreakerPolicy = BreakerPolicy()
    rate_limit: RateLimitPolicy | None = None
    cache: CachePolicy | None = None
    #: the pause after a provider 429, for every caller of the process
    cooldown: CooldownPolicy = CooldownPolicy()
    #: the in-flight limit learned from the provider's 429s (``adaptive = true`` or a table);
    #: None: the budget's per-process value, fixed
    adaptive: AdaptiveConcurrencyPolicy | None = None
    #: one tenant's cap on this dependency's gate in each process: a fraction of its slots or a
    #: count, times the tenant's weight (`TenantTable.share_limit`); None: no per-tenant cap
    tenant_share: ShareOfSlots | None = None

    @field_validator("adaptive", mode="before")
    @classmethod
    def _adaptive_switch(cls, value: Any) -> Any:
        # ``adaptive = true`` turns the defaults on, ``false`` leaves the limit fixed.
        if isinstance(value, bool):
            return {} if value else None
        return value

    @model_validator(mode="after")
    def _http_needs_global(self) -> DependencyPolicy:
        if self.kind == "http" and self.global_concurrency is None:
            raise ValueError("global_concurrency is required for kind = 'http'")
        if not self.shares:
            raise ValueError("shares must name at least one service")
        if self.kind == "postgres":
            unused = [key for key in _NOT_FOR_POSTGRES if key in self.model_fields_set]
            unused += [
                f"timeouts.{key}"
                for key in _TIMEOUTS_NOT_FOR_POSTGRES
                if key in self.timeouts.model_fields_set
            ]
            if unused:
                raise ValueError(
                    f"{', '.join(unused)} has no effect on a postgres dependency (its pool runs each unit "
                    "of work once, behind its gate, with one timeout per statement: timeouts.attempt)"
                )
        return self


class AdmissionPolicy(_Policy):
    """How an endpoint's door follows latency (`floodgate.AdaptiveLimit`).

    The door's ceiling is what the budget implies (Little's law); with ``adaptive`` on it admits
    less while the mean latency of completed requests stays above ``latency_tolerance`` times its
    recent best and requests wait at the gate of the endpoint's bottleneck dependency (a slower
    provider with nothing waiting is not overload), or while more than ``bottleneck_queue`` wait
    there on average for longer than the tolerance allows (a shorter wait is the bottleneck's
    buffer); never less than ``min_fraction`` of the ceiling.
    """

    adaptive: bool = True
    latency_tolerance: float = Field(default=1.2, ge=1.0, le=10.0)
    bottleneck_queue: float = Field(default=1.0, ge=0.0)
    min_fraction: Fraction = 0.25
    baseline_window: Seconds = 60.0
    #: one tenant's cap on the door: a fraction of its current limit or a count, times the
    #: tenant's weight (`TenantTable.share_limit`); None: no per-tenant cap
    tenant_share: ShareOfSlots | None = None


class EndpointPolicy(_Policy):
    """An endpoint's deadline, fan-out, SLO targets, failure policy and limits.

    The online endpoints use all of it; ``omnirag_submit`` (the ingest API's submission) its
    ``deadline`` and ``max_body_bytes``. The SLO targets bound nothing: `floodgate plan` checks
    them against the deadline, and the OpenAPI documents publish them."""

    deadline: Seconds
    #: calls one request may have in flight at once (its parallel steps); 1 unless it says more
    fan_out: int = Field(default=1, ge=1)
    slo_p95_ms: Annotated[float, Field(gt=0)]
    slo_p99_ms: Annotated[float, Field(gt=0)]
    #: dependencies that may fail without failing the request: dependency -> fallback name
    degradable: dict[str, str] = {}
    #: dependencies whose failure fails the request
    required: list[str] = []
    cache_ttl: Seconds | None = None
    max_items: int | None = Field(default=None, ge=1)
    max_body_bytes: int = Field(default=1_048_576, ge=1)
    admission: AdmissionPolicy = AdmissionPolicy()
    #: the service whose processes answer it (its shares and ``cpu_cores`` bound its capacity)
    service: str = "online"
    #: calls one typical request makes to each dependency (`floodgate plan`'s capacity; the online
    #: service refuses to start when its endpoint records say otherwise)
    calls: dict[str, Annotated[int, Field(ge=1)]] = {}
    #: the typical request's critical path over dependency names: ``+``, ``*``, numbers and
    #: ``max(...)``, e.g. ``"max(embed + db, search) + rerank + llm"``; absent: the calls in sequence
    critical_path: str | None = None
    #: the service's own CPU per request, in ms (measured: see the budget file's comment)
    cpu_ms_per_request: Annotated[float, Field(gt=0)] | None = None
    #: requests/s the endpoint must carry normally, and at peak (default: target x burst_factor)
    target_qps: Annotated[float, Field(ge=0)] | None = None
    peak_qps: Annotated[float, Field(ge=0)] | None = None

    def path_latency(self, latencies: Mapping[str, float]) -> float:
        """The typical request's critical path (s) when each dependency takes ``latencies[name]``:
        ``critical_path`` evaluated, or the calls one after another when it has none."""
        if self.critical_path is not None:
            from ._path import evaluate_path

            return evaluate_path(self.critical_path, latencies)
        return sum(n * latencies[name] for name, n in self.calls.items())

    @model_validator(mode="after")
    def _slo_order(self) -> EndpointPolicy:
        if self.slo_p95_ms > self.slo_p99_ms:
            raise ValueError("slo_p95_ms must be <= slo_p99_ms")
        if self.peak_qps is not None and self.target_qps is not None and self.peak_qps < self.target_qps:
            raise ValueError("peak_qps must be >= target_qps")
        if self.critical_path is not None:
            from ._path import PathError, path_names

            try:
                path_names(self.critical_path)
            except PathError as exc:
                raise ValueError(f"critical_path: {exc}") from None
        both = set(self.degradable) & set(self.required)
        if both:
            raise ValueError(f"{sorted(both)} cannot be both degradable and required")
        return self


class IngestionPolicy(_Policy):
    """What one omniRAG document costs the ingest workers (``[ingestion]``, optional): calls per
    document and per embed batch, and the worker's CPU per chunk. `floodgate plan` turns it into
    documents/s and chunks/s for a document size (``--doc-chunks``/``--doc-bytes``)."""

    service: str = "ingest_worker"
    #: chunks per embeddings request (the worker's INGEST_WORKER_EMBED_BATCH_SIZE)
    embed_batch_size: int = Field(default=16, ge=1)
    #: document bytes per chunk, to size a document given in bytes
    bytes_per_chunk: int = Field(default=1024, ge=1)
    #: the document size the plan assumes unless told (chunks)
    doc_chunks: int = Field(default=20, ge=1)
    calls_per_document: dict[str, Annotated[float, Field(ge=0)]] = {}
    calls_per_batch: dict[str, Annotated[float, Field(ge=0)]] = {}
    cpu_ms_per_chunk: Annotated[float, Field(gt=0)] | None = None
    #: jobs one worker process runs at once (INGEST_WORKER_JOB_CONCURRENCY): by Little's law they
    #: carry job_concurrency x processes / a document's latency; None: not counted
    job_concurrency: int | None = Field(default=None, ge=1)
    #: embed batches in flight per job (INGEST_WORKER_EMBED_PARALLELISM): a document's latency
    #: takes ceil(batches / embed_parallelism) rounds of calls_per_batch
    embed_parallelism: int = Field(default=4, ge=1)
    target_documents_per_second: Annotated[float, Field(ge=0)] | None = None


class ModelPrice(_Policy):
    """What a model's tokens cost (``[prices."<model>"]``), in US dollars per 1000 tokens. The
    services turn the providers' reported ``usage`` into ``floodgate_cost_usd_total`` with it; a
    model without a price has token counts but no cost series. An estimate, never a limit."""

    prompt_per_1k_tokens_usd: Annotated[float, Field(ge=0)]
    completion_per_1k_tokens_usd: Annotated[float, Field(ge=0)] = 0.0

    def cost(self, *, prompt_tokens: int, completion_tokens: int) -> float:
        """US dollars for that many tokens."""
        return (
            prompt_tokens * self.prompt_per_1k_tokens_usd
            + completion_tokens * self.completion_per_1k_tokens_usd
        ) / 1000.0


class TenantLimits(_Policy):
    """One ``[tenants.<name>]`` table (``default``: every tenant). Every key is optional: a
    tenant's unset keys come from ``[tenants.default]``, its unset keys from the built-ins
    (`floodgate._tenants.TENANT_DEFAULTS`). Read resolved through `Budget.tenants`."""

    #: paying tiers: multiplies every ``tenant_share`` (capped at the whole) and is the tenant's
    #: turns in the gates' round-robin
    weight: int | None = Field(default=None, ge=1)
    #: omniRAG jobs the tenant may have queued (exact under concurrent submits)
    queued_jobs: int | None = Field(default=None, ge=1)
    #: the tenant's omniRAG jobs running across all ingest workers (0: no cap)
    running_jobs: int | None = Field(default=None, ge=0)
    #: LLM tokens (prompt + completion) per minute and per day, enforced at the edge
    tokens_per_minute: int | None = Field(default=None, ge=1)
    tokens_per_day: int | None = Field(default=None, ge=1)
    #: estimated spend per day (priced with ``[prices]``); absent: no cost budget
    cost_per_day: Annotated[float, Field(gt=0)] | None = None
    #: the tenant's own cap per dependency or endpoint name, in place of its ``tenant_share``
    share: dict[str, ShareOfSlots] = {}


class Budget(_Policy):
    """The whole budget file. Build with `load_budget` / `parse_budget`, which also run the
    cross-key checks; query with `dependency`, `endpoint` and `process_limit`."""

    deployment: DeploymentPolicy
    services: dict[str, ServiceShape]
    dependencies: dict[str, DependencyPolicy]
    endpoints: dict[str, EndpointPolicy] = {}
    #: spending limits per hour (alerts only); None: no spend alert
    cost: CostPolicy | None = None
    #: model name (as the services ask for it) -> its price; models not listed cost nothing here
    prices: dict[str, ModelPrice] = {}
    #: what a document costs the ingest workers (`floodgate plan`'s ingestion capacity)
    ingestion: IngestionPolicy | None = None
    #: ``[tenants.<name>]`` as written; read it resolved through `tenants`
    tenant_limits: dict[TenantName, TenantLimits] = Field(default_factory=dict, alias="tenants")

    @cached_property
    def tenants(self) -> TenantTable:
        """The tenant table: each tenant's limits (``[tenants]``) and its slot cap on every gate
        and door (the dependencies' and endpoints' ``tenant_share``)."""
        shares: dict[str, float | int] = {
            name: dep.tenant_share for name, dep in self.dependencies.items() if dep.tenant_share is not None
        }
        shares.update(
            (name, ep.admission.tenant_share)
            for name, ep in self.endpoints.items()
            if ep.admission.tenant_share is not None
        )
        tables = {name: limits.model_dump(exclude_unset=True) for name, limits in self.tenant_limits.items()}
        return TenantTable(tables, tenant_shares=shares)

    def peak_qps(self, endpoint: str) -> float | None:
        """The endpoint's peak requests/s: ``peak_qps``, else ``target_qps`` x ``burst_factor``."""
        ep = self.endpoint(endpoint)
        if ep.peak_qps is not None:
            return ep.peak_qps
        if ep.target_qps is None:
            return None
        return ep.target_qps * self.deployment.burst_factor

    def price(self, model: str) -> ModelPrice | None:
        """The price of ``model``, or None when the file has none (no cost is estimated for it)."""
        return self.prices.get(model)

    def dependency(self, name: str) -> DependencyPolicy:
        try:
            return self.dependencies[name]
        except KeyError:
            raise LookupError(
                f"unknown dependency {name!r} (budget has {sorted(self.dependencies)})"
            ) from None

    def endpoint(self, name: str) -> EndpointPolicy:
        try:
            return self.endpoints[name]
        except KeyError:
            raise LookupError(f"unknown endpoint {name!r} (budget has {sorted(self.endpoints)})") from None

    def failure_policy_problems(self, endpoint: str, calls: Iterable[str]) -> list[str]:
        """What the failure policy of ``endpoint`` gets wrong about the dependencies it ``calls``
        (its service knows them): one it calls but names neither ``required`` nor ``degradable``,
        or one it names but never calls. A service refuses to start on any: what the file (and
        `floodgate plan`) says about failures must be what the endpoint does."""
        policy = self.endpoint(endpoint)
        called = set(calls)
        named = set(policy.required) | set(policy.degradable)
        problems = []
        if unnamed := sorted(called - named):
            problems.append(
                f"endpoints.{endpoint}: calls {', '.join(unnamed)} but names it neither required nor degradable"
            )
        if uncalled := sorted(named - called):
            problems.append(f"endpoints.{endpoint}: names {', '.join(uncalled)}, which it does not call")
        return problems

    def service(self, name: str) -> ServiceShape:
        try:
            return self.services[name]
        except KeyError:
            raise LookupError(f"unknown service {name!r} (budget has {sorted(self.services)})") from None

    def dependencies_of(self, service: str) -> list[str]:
        """Names of the dependencies ``service`` has a share of."""
        return [name for name, dep in self.dependencies.items() if service in dep.shares]

    def global_limit(self, dependency: str) -> int:
        """Concurrent calls the dependency allows for the whole deployment."""
        dep = self.dependency(dependency)
        if dep.global_concurrency is not None:
            return dep.global_concurrency
        return self.deployment.database_available

    def exact_process_share(self, service: str, dependency: str) -> float:
        """``global * share / processes`` before rounding down (`floodgate plan` shows it)."""
        dep = self.dependency(dependency)
        if service not in dep.shares:
            raise LookupError(f"service {service!r} has no share of dependency {dependency!r}")
        return self.global_limit(dependency) * dep.shares[service] / self.service(service).processes

    def process_limit(self, service: str, dependency: str) -> int:
        """Concurrent calls to ``dependency`` one process of ``service`` may make (for a
        postgres dependency: that process's pool size)."""
        return math.floor(self.exact_process_share(service, dependency) + 1e-9)

    def process_rate(self, service: str, dependency: str) -> float | None:
        """Requests per second one process may send under the provider's RPM, or None."""
        dep = self.dependency(dependency)
        if dep.rate_limit is None:
            return None
        return dep.rate_limit.rpm * dep.shares[service] / self.service(service).processes / 60.0


# -- loading ---------------------------------------------------------------------------------


def read_toml_file(path: Path, error: type[FileProblems]) -> dict[str, Any]:
    """The TOML document at ``path``; a missing or malformed file raises ``error`` naming it."""
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise error([f"file not found: {path}"], source=str(path)) from None
    except tomllib.TOMLDecodeError as exc:
        raise error([f"not valid TOML: {exc}"], source=str(path)) from None


def load_budget(path: str | Path) -> Budget:
    """Read and validate the budget file at ``path`` (TOML). Raises `BudgetError`."""
    path = Path(path)
    return parse_budget(read_toml_file(path, BudgetError), source=str(path))


def parse_budget(data: Mapping[str, Any], *, source: str = "budget") -> Budget:
    """Validate an already-parsed budget mapping. Raises `BudgetError`."""
    try:
        budget = Budget.model_validate(data)
    except ValidationError as exc:
        raise BudgetError([_describe(err) for err in exc.errors()], source=source) from None
    problems = _cross_checks(budget)
    if problems:
        raise BudgetError(problems, source=source)
    return budget


_MESSAGES = {
    "greater_than_equal": "must be >= {ge}",
    "greater_than": "must be > {gt}",
    "less_than_equal": "must be <= {le}",
    "less_than": "must be < {lt}",
    "missing": "is required",
    "extra_forbidden": "unknown key",
}


def _describe(err: Mapping[str, Any]) -> str:
    path = ".".join(str(part) for part in err["loc"]) or "<root>"
    template = _MESSAGES.get(err["type"])
    if template is not None:
        ctx = {
            key: f"{value:g}" if isinstance(value, float) else value
            for key, value in err.get("ctx", {}).items()
        }
        message = template.format(**ctx)
    else:
        message = err["msg"].removeprefix("Value error, ")
    return f"{path}: {message}"


def _cross_checks(budget: Budget) -> list[str]:
    """The checks that span keys: unknown names, shares that cannot fit, pools over the limit."""
    problems: list[str] = []
    services = budget.services
    available = budget.deployment.database_available
    pool_total = 0
    pool_parts: list[str] = []
    for dep_name, dep in budget.dependencies.items():
        key = f"dependencies.{dep_name}"
        total_share = sum(dep.shares.values())
        if total_share > 1.0 + 1e-9:
            problems.append(f"{key}.shares: shares sum to {total_share:g}, more than 1.0 of the dependency")
        if (
            dep.kind == "postgres"
            and dep.global_concurrency is not None
            and dep.global_concurrency > available
        ):
            problems.append(
                f"{key}.global_concurrency: {dep.global_concurrency} exceeds database_max_connections - "
                f"database_reserve = {available}"
            )
        for service in dep.shares:
            if service not in services:
                problems.append(f"{key}.shares.{service}: unknown service (known: {', '.join(services)})")
                continue
            exact = budget.exact_process_share(service, dep_name)
            if exact < 1.0 - 1e-9:
                shape = services[service]
                problems.append(
                    f"{key}.shares.{service}: {dep.shares[service]:g} of {budget.global_limit(dep_name)} over "
                    f"{shape.replicas} replicas x {shape.workers} workers is {exact:.2f} per process "
                    "(shares cannot fit: each process needs at least 1)"
                )
            elif dep.kind == "postgres":
                connections = budget.process_limit(service, dep_name) * services[service].processes
                pool_total += connections
                pool_parts.append(f"{dep_name}.{service}={connections}")
    if pool_total > available:
        problems.append(
            f"dependencies: database pools of all services need {pool_total} connections "
            f"({', '.join(pool_parts)}) but deployment.database_max_connections - database_reserve "
            f"= {available} (shares cannot fit)"
        )
    for ep_name, ep in budget.endpoints.items():
        for field, names in (("degradable", ep.degradable), ("required", ep.required)):
            for dep_name in names:
                if dep_name not in budget.dependencies:
                    problems.append(f"endpoints.{ep_name}.{field}.{dep_name}: unknown dependency")
        if ep.calls or "service" in ep.model_fields_set:  # the default service need not exist otherwise
            problems.extend(_calls_problems(budget, f"endpoints.{ep_name}", ep.service, {"calls": ep.calls}))
        if ep.critical_path is not None and not ep.calls:
            problems.append(f"endpoints.{ep_name}.critical_path: needs calls")
        elif ep.critical_path is not None:
            from ._path import path_names

            for name in sorted(path_names(ep.critical_path) - set(ep.calls)):
                problems.append(f"endpoints.{ep_name}.critical_path: {name} is not one of its calls")
    problems.extend(_tenant_problems(budget))
    if budget.ingestion is not None:
        ing = budget.ingestion
        problems.extend(
            _calls_problems(
                budget,
                "ingestion",
                ing.service,
                {"calls_per_document": ing.calls_per_document, "calls_per_batch": ing.calls_per_batch},
            )
        )
    return problems


def _tenant_problems(budget: Budget) -> list[str]:
    """A tenant's share overrides must name a dependency or an endpoint, and that name must be
    only one of them (a share is looked up by name)."""
    problems = []
    both = set(budget.dependencies) & set(budget.endpoints)
    for tenant, limits in budget.tenant_limits.items():
        for name in limits.share:
            key = f"tenants.{tenant}.share.{name}"
            if name not in budget.dependencies and name not in budget.endpoints:
                known = ", ".join(sorted({*budget.dependencies, *budget.endpoints}))
                problems.append(f"{key}: unknown dependency or endpoint (known: {known})")
            elif name in both:
                problems.append(f"{key}: {name} is both a dependency and an endpoint (rename one)")
    for name in sorted(both):
        if (
            budget.dependencies[name].tenant_share is not None
            or budget.endpoints[name].admission.tenant_share is not None
        ):
            problems.append(
                f"endpoints.{name}: {name} is also a dependency; a tenant_share needs one of them renamed"
            )
    return problems


def _calls_problems(
    budget: Budget, key: str, service: str, tables: Mapping[str, Mapping[str, float]]
) -> list[str]:
    """Calls tables must name dependencies the service has a share of."""
    if service not in budget.services:
        return [f"{key}.service: unknown service {service!r} (known: {', '.join(budget.services)})"]
    problems = []
    for field, calls in tables.items():
        for dep_name in calls:
            if dep_name not in budget.dependencies:
                problems.append(f"{key}.{field}.{dep_name}: unknown dependency")
            elif service not in budget.dependencies[dep_name].shares:
                problems.append(f"{key}.{field}.{dep_name}: {service} has no share of it")
    return problems

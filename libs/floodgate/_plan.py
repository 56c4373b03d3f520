"""What a budget implies: per-process limits, pool sizes, throughput, and warnings.

Pure computation behind ``floodgate plan``. Throughput follows Little's law: a budget of
``L`` concurrent calls that each take ``W`` seconds carries at most ``L / W`` calls per second.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from ._budget import Budget

__all__ = [
    "ADMISSION_HEADROOM",
    "DOOR_LOSS",
    "DOOR_SERVICE",
    "INGESTION_CPU",
    "Capacity",
    "DependencyRow",
    "EndpointRow",
    "IngestionCapacity",
    "Limit",
    "Plan",
    "bottleneck_rate",
    "door_ceiling",
    "door_loss",
    "erlang_b",
    "make_plan",
]


#: the key of `make_plan`'s ``cpu_ms`` that sets the ingestion's CPU per chunk
INGESTION_CPU = "ingestion"

#: the service whose endpoints each have an admission door (services/online/_admission.py); the
#: plan counts the door as one of their limits
DOOR_SERVICE = "online"

#: Little's law on the budget's typical latencies leaves out the service's own time per request
#: (parsing, JSON, scheduling: a request at low load takes a little longer than its critical
#: path), so a door holds each request 5 % longer than that path. More headroom only adds waiting
#: (a higher p99 under overload for no more goodput); less leaves the bottleneck idle. The overload
#: benchmark chose the value (docs/benchmarks.md).
ADMISSION_HEADROOM = 1.05

#: the share of random arrivals a door may refuse at the rate its budget carries. A door refuses
#: when full, so under random (Poisson) arrivals it is a loss system (Erlang B): with exactly
#: Little's-law places it refuses a large share of the load the bottleneck could still take, the
#: more so the fewer places it has. Sized for a small loss, the door sheds only the load beyond the
#: bottleneck, which its gates' queues then absorb.
DOOR_LOSS = 0.01


def erlang_b(servers: int, load: float) -> float:
    """The share of random arrivals a loss system of ``servers`` places refuses at ``load`` Erlangs
    (arrival rate x holding time): Erlang's B formula, by its stable recurrence."""
    blocking = 1.0
    for k in range(1, servers + 1):
        blocking = load * blocking / (k + load * blocking)
    return blocking


def door_ceiling(rps: float, latency: float) -> int:
    """An admission door's ceiling: the fewest places that, for random arrivals at ``rps``
    requests/s each held ``latency`` x `ADMISSION_HEADROOM` seconds, refuse at most `DOOR_LOSS` of
    them (Erlang B). Little's law alone (``rps x latency`` places) is the *mean* in flight; a door
    that refuses when full needs room for the fluctuations around it, relatively more for a small
    door. Exact Erlang B, not square-root staffing: that is an approximation for large loads, and
    doors are small. At least 1, 0 for no rate."""
    if rps <= 0:
        return 0
    load = rps * latency * ADMISSION_HEADROOM
    servers = max(1, math.ceil(load))
    while erlang_b(servers, load) > DOOR_LOSS:
        servers += 1
    return servers


@dataclass(frozen=True)
class DependencyRow:
    service: str
    dependency: str
    kind: str
    global_limit: int
    share: float
    processes: int
    exact: float
    limit: int
    max_waiters: int
    max_wait: float
    latency: float
    rps_per_process: float
    rps_total: float
    rate_limit_rps_total: float | None

    @property
    def binding(self) -> str:
        """What caps this service's throughput: the concurrency budget or the provider's RPM."""
        if self.rate_limit_rps_total is not None and self.rate_limit_rps_total < self.rps_total:
            return "rate limit"
        return "concurrency"


@dataclass(frozen=True)
class EndpointRow:
    endpoint: str
    deadline: float
    fan_out: int
    slo_p95_ms: float
    slo_p99_ms: float
    required: tuple[str, ...]
    degradable: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Limit:
    """One limit on a unit of work (a request, a document), as work per second for the whole
    deployment: a dependency's concurrency (``dependency``; a postgres one is a pool), its
    provider's rate limit (``dependency (rpm)``), the service's CPU (``cpu``), an online endpoint's
    admission door (``door``) or the ingest workers' jobs in flight (``jobs``)."""

    name: str
    rate: float  # units per second, all processes
    detail: str  # how it follows from the budget


@dataclass(frozen=True)
class Capacity:
    """What the budget carries for one endpoint, if it had its service to itself."""

    endpoint: str
    service: str
    limits: tuple[Limit, ...]
    latency: float  # expected latency of a typical request, s (critical path + CPU)
    target_qps: float | None
    peak_qps: float | None

    @property
    def rps(self) -> float:
        return min(limit.rate for limit in self.limits)

    @property
    def bottleneck(self) -> str:
        return min(self.limits, key=lambda limit: limit.rate).name

    @property
    def meets_target(self) -> bool:
        return self.target_qps is None or self.target_qps <= self.rps

    @property
    def meets_peak(self) -> bool:
        return self.peak_qps is None or self.peak_qps <= self.rps


@dataclass(frozen=True)
class IngestionCapacity:
    """What the ingest workers' budgets carry for documents of ``doc_chunks`` chunks."""

    service: str
    doc_chunks: int
    batches: int
    limits: tuple[Limit, ...]  # rates in documents per second
    target_documents_per_second: float | None
    latency: float  # expected time of one document's calls and CPU, s (from its claim to its completion)

    @property
    def documents_per_second(self) -> float:
        return min(limit.rate for limit in self.limits)

    @property
    def chunks_per_second(self) -> float:
        return self.documents_per_second * self.doc_chunks

    @property
    def bottleneck(self) -> str:
        return min(self.limits, key=lambda limit: limit.rate).name

    @property
    def meets_target(self) -> bool:
        t = self.target_documents_per_second
        return t is None or t <= self.documents_per_second


@dataclass(frozen=True)
class Plan:
    database_max_connections: int
    database_reserve: int
    dependencies: tuple[DependencyRow, ...]
    endpoints: tuple[EndpointRow, ...]
    database_pools: tuple[tuple[str, str, int], ...]  # (dependency, service, connections over all processes)
    warnings: tuple[str, ...] = field(default=())
    capacities: tuple[Capacity, ...] = field(default=())
    ingestion: IngestionCapacity | None = None

    @property
    def shortfalls(self) -> tuple[str, ...]:
        """Each target the capacity does not reach (`floodgate plan --check` fails on any)."""
        found = [
            f"{c.endpoint}: target {c.target_qps:g} requests/s exceeds the capacity {c.rps:.1f}/s "
            f"(bottleneck: {c.bottleneck})"
            for c in self.capacities
            if not c.meets_target
        ]
        ing = self.ingestion
        if ing is not None and not ing.meets_target:
            found.append(
                f"ingestion: target {ing.target_documents_per_second:g} documents/s exceeds the capacity "
                f"{ing.documents_per_second:.1f}/s (bottleneck: {ing.bottleneck})"
            )
        return tuple(found)

    @property
    def database_available(self) -> int:
        return self.database_max_connections - self.database_reserve

    @property
    def database_used(self) -> int:
        return sum(n for _, _, n in self.database_pools)


def make_plan(
    budget: Budget,
    latencies: Mapping[str, float] | None = None,
    *,
    doc_chunks: int | None = None,
    cpu_ms: Mapping[str, float] | None = None,
    endpoint_latencies: Mapping[str, float] | None = None,
) -> Plan:
    """The plan for ``budget``; ``latencies`` (seconds) override each dependency's
    ``typical_latency``; ``doc_chunks`` the ingestion's document size; ``cpu_ms`` (measured
    milliseconds) an endpoint's ``cpu_ms_per_request``, or under `INGESTION_CPU` the
    ingestion's ``cpu_ms_per_chunk``; ``endpoint_latencies`` (measured seconds, the mean of an
    endpoint's answers at a low load) an endpoint's expected latency, in place of its critical path
    at ``latencies`` plus its CPU: a path of means misses that parallel calls wait for the slowest."""
    latencies = dict(latencies or {})
    unknown = set(latencies) - set(budget.dependencies)
    if unknown:
        raise LookupError(f"latency given for unknown dependencies: {sorted(unknown)}")
    cpu_ms = dict(cpu_ms or {})
    unknown = set(cpu_ms) - set(budget.endpoints) - {INGESTION_CPU}
    if unknown:
        raise LookupError(
            f"CPU given for unknown endpoints: {sorted(unknown)} (or {INGESTION_CPU!r}, per chunk)"
        )
    endpoint_latencies = dict(endpoint_latencies or {})
    unknown = set(endpoint_latencies) - set(budget.endpoints)
    if unknown:
        raise LookupError(f"latency given for unknown endpoints: {sorted(unknown)}")
    latency_of = {name: latencies.get(name, dep.typical_latency) for name, dep in budget.dependencies.items()}
    rows: list[DependencyRow] = []
    pools: list[tuple[str, str, int]] = []
    warnings: list[str] = []
    for service, shape in budget.services.items():
        for name in budget.dependencies_of(service):
            dep = budget.dependency(name)
            latency = latencies.get(name, dep.typical_latency)
            limit = budget.process_limit(service, name)
            rate = budget.process_rate(service, name)
            row = DependencyRow(
                service=service,
                dependency=name,
                kind=dep.kind,
                global_limit=budget.global_limit(name),
                share=dep.shares[service],
                processes=shape.processes,
                exact=budget.exact_process_share(service, name),
                limit=limit,
                max_waiters=dep.max_waiters,
                max_wait=dep.max_wait,
                latency=latency,
                rps_per_process=limit / latency,
                rps_total=limit / latency * shape.processes,
                rate_limit_rps_total=None if rate is None else rate * shape.processes,
            )
            rows.append(row)
            if dep.kind == "postgres":
                pools.append((name, service, limit * shape.processes))
            warnings.extend(_row_warnings(row))
    for name, dep in budget.dependencies.items():
        key = f"dependencies.{name}"
        if dep.max_wait >= dep.timeouts.attempt:
            warnings.append(
                f"{key}: max_wait {dep.max_wait:g}s >= timeouts.attempt {dep.timeouts.attempt:g}s "
                "(callers may wait longer for a slot than for the call)"
            )
    used = sum(n for _, _, n in pools)
    available = budget.deployment.database_available
    if available and used > 0.9 * available:
        warnings.append(f"database pools use {used} of {available} usable connections (> 90%): no headroom")
    endpoints: list[EndpointRow] = []
    for ep_name, ep in budget.endpoints.items():
        endpoints.append(
            EndpointRow(
                ep_name,
                ep.deadline,
                ep.fan_out,
                ep.slo_p95_ms,
                ep.slo_p99_ms,
                tuple(ep.required),
                tuple(ep.degradable.items()),
            )
        )
        key = f"endpoints.{ep_name}"
        if ep.slo_p99_ms > ep.deadline * 1000:
            warnings.append(
                f"{key}: slo_p99_ms {ep.slo_p99_ms:g} is longer than the deadline {ep.deadline:g}s"
            )
        for dep_name in [*ep.required, *ep.degradable]:
            dep = budget.dependency(dep_name)
            if dep.timeouts.attempt > ep.deadline:
                warnings.append(
                    f"{key}: {dep_name} timeouts.attempt {dep.timeouts.attempt:g}s exceeds the deadline "
                    f"{ep.deadline:g}s (the deadline will cut attempts short)"
                )
            if dep.max_wait >= ep.deadline:
                warnings.append(f"{key}: {dep_name} max_wait {dep.max_wait:g}s >= deadline {ep.deadline:g}s")
    capacities = tuple(
        _endpoint_capacity(
            budget,
            name,
            latency_of,
            cpu_ms.get(name, ep.cpu_ms_per_request),
            endpoint_latencies.get(name),
        )
        for name, ep in budget.endpoints.items()
        if ep.calls
    )
    for capacity in capacities:
        loss = door_loss(budget, capacity)
        if loss is not None and loss > DOOR_LOSS:
            warnings.append(
                f"endpoints.{capacity.endpoint}: its door refuses {loss:.0%} of random arrivals at the "
                f"capacity {capacity.rps:.1f}/s (each request held {_ms(round(capacity.latency, 6))}): the "
                f"work is slower than the dependencies' typical_latency, which size the door"
            )
    return Plan(
        database_max_connections=budget.deployment.database_max_connections,
        database_reserve=budget.deployment.database_reserve,
        dependencies=tuple(rows),
        endpoints=tuple(endpoints),
        database_pools=tuple(pools),
        warnings=tuple(warnings),
        capacities=capacities,
        ingestion=_ingestion_capacity(budget, latency_of, doc_chunks, cpu_ms.get(INGESTION_CPU)),
    )


def _dependency_limits(
    budget: Budget, service: str, calls: Mapping[str, float], latency_of: Mapping[str, float], unit: str
) -> list[Limit]:
    """Little's law per dependency: (limit per process x processes) / (calls x latency); and the
    provider's RPM share over the calls, where it has one."""
    processes = budget.service(service).processes
    limits = []
    for name, n in calls.items():
        if not n:
            continue
        limit = budget.process_limit(service, name)
        what = "pool" if budget.dependency(name).kind == "postgres" else "limit"
        limits.append(
            Limit(
                name,
                limit * processes / (n * latency_of[name]),
                f"{what} {limit} x {processes} procs / ({n:g} calls x {_ms(latency_of[name])})",
            )
        )
        rate = budget.process_rate(service, name)
        if rate is not None:
            limits.append(
                Limit(
                    f"{name} (rpm)", rate * processes / n, f"{rate * processes * 60:g} rpm / {n:g} calls / 60"
                )
            )
    return limits


def _cpu_limit(budget: Budget, service: str, cpu_ms: float | None, unit: str) -> list[Limit]:
    if cpu_ms is None:
        return []
    shape = budget.service(service)
    cores = shape.cpu_cores * shape.processes
    return [Limit("cpu", cores * 1000.0 / cpu_ms, f"{cores:g} cores x 1000 / {cpu_ms:g} ms per {unit}")]


def _endpoint_capacity(
    budget: Budget,
    endpoint: str,
    latency_of: Mapping[str, float],
    cpu_ms: float | None,
    measured_latency: float | None = None,
) -> Capacity:
    ep = budget.endpoint(endpoint)
    limits = _dependency_limits(budget, ep.service, ep.calls, latency_of, "request")
    limits += _cpu_limit(budget, ep.service, cpu_ms, "request")
    latency = measured_latency or ep.path_latency(latency_of) + (cpu_ms or 0.0) / 1000.0
    limits += _door_limit(budget, endpoint, latency)
    return Capacity(endpoint, ep.service, tuple(limits), latency, ep.target_qps, budget.peak_qps(endpoint))


def _door_limit(budget: Budget, endpoint: str, latency: float) -> list[Limit]:
    """The endpoint's admission door: its ceiling (sized, as the online service sizes it, from the
    budget's *typical* latencies) full all the time, each request held the expected latency at the
    latencies given, x processes (Little's law). That is the most it passes, under overload; below
    it random arrivals already find it full now and then (`door_loss` says how often at a rate).
    The ceiling does not follow measured latencies, so where the work is much slower than the
    budget says, the door admits too few to keep its bottleneck busy and binds first."""
    ep = budget.endpoint(endpoint)
    if ep.service != DOOR_SERVICE or latency <= 0:
        return []
    in_flight = _door_places(budget, endpoint)
    processes = budget.service(ep.service).processes
    return [
        Limit(
            "door",
            in_flight * processes / latency,
            f"door {in_flight} x {processes} procs / {_ms(round(latency, 6))} per request",
        )
    ]


def _door_places(budget: Budget, endpoint: str) -> int:
    """The door's ceiling per process, as the online service sizes it (`door_ceiling` at the
    bottleneck's rate and the critical path, both at the budget's typical latencies)."""
    ep = budget.endpoint(endpoint)
    typical = {name: dep.typical_latency for name, dep in budget.dependencies.items()}
    _, rps = bottleneck_rate(budget, ep.service, ep.calls)
    return door_ceiling(rps, ep.path_latency(typical))


def bottleneck_rate(
    budget: Budget, service: str, calls: Mapping[str, float], limits: Mapping[str, int] | None = None
) -> tuple[str, float]:
    """Of the dependencies a request of ``service`` calls (``calls``: dependency -> calls per
    request), the one whose budget carries the fewest requests/s in one process at the typical
    latencies, and that rate: its limit / (calls x typical_latency). ``limits`` (dependency -> the
    process's limit now) replace the planned ones it names. The one rule behind a door's size, in
    the plan and in the online service's doors."""
    live = limits or {}
    rates = {
        name: (live[name] if name in live else budget.process_limit(service, name))
        / (n * budget.dependency(name).typical_latency)
        for name, n in calls.items()
        if n
    }
    bottleneck = min(rates, key=rates.__getitem__)
    return bottleneck, rates[bottleneck]


def door_loss(budget: Budget, capacity: Capacity) -> float | None:
    """The share of random arrivals the endpoint's door refuses at its capacity's rate, each
    request held its expected latency (Erlang B); None for an endpoint without a door. Above
    `DOOR_LOSS` the door turns away load the bottleneck could take: the work is slower than the
    budget's typical latencies, which size the door."""
    if budget.endpoint(capacity.endpoint).service != DOOR_SERVICE or capacity.latency <= 0:
        return None
    processes = budget.service(capacity.service).processes
    load = capacity.rps / processes * capacity.latency
    return erlang_b(_door_places(budget, capacity.endpoint), load)


def _ingestion_capacity(
    budget: Budget, latency_of: Mapping[str, float], doc_chunks: int | None, cpu_ms_per_chunk: float | None
) -> IngestionCapacity | None:
    ing = budget.ingestion
    if ing is None:
        return None
    if cpu_ms_per_chunk is None:
        cpu_ms_per_chunk = ing.cpu_ms_per_chunk
    chunks = doc_chunks or ing.doc_chunks
    batches = math.ceil(chunks / ing.embed_batch_size)
    calls = dict(ing.calls_per_document)
    for name, n in ing.calls_per_batch.items():
        calls[name] = calls.get(name, 0.0) + n * batches
    limits = _dependency_limits(budget, ing.service, calls, latency_of, "document")
    cpu = None if cpu_ms_per_chunk is None else cpu_ms_per_chunk * chunks
    limits += _cpu_limit(budget, ing.service, cpu, "document")
    # A document's calls run in sequence but for its batches, ``embed_parallelism`` at a time.
    rounds = math.ceil(batches / ing.embed_parallelism)
    latency = (
        sum(n * latency_of[d] for d, n in ing.calls_per_document.items())
        + rounds * sum(n * latency_of[d] for d, n in ing.calls_per_batch.items())
        + (cpu or 0.0) / 1000.0
    )
    if ing.job_concurrency is not None and latency > 0:
        processes = budget.service(ing.service).processes
        limits.append(
            Limit(
                "jobs",
                ing.job_concurrency * processes / latency,
                f"{ing.job_concurrency} jobs x {processes} procs / {_ms(round(latency, 6))} per document",
            )
        )
    return IngestionCapacity(
        ing.service, chunks, batches, tuple(limits), ing.target_documents_per_second, latency
    )


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:g}ms" if seconds < 1 else f"{seconds:g}s"


def _row_warnings(row: DependencyRow) -> list[str]:
    key = f"{row.service}.{row.dependency}"
    warnings = []
    if row.exact - row.limit >= 0.5:
        warnings.append(
            f"{key}: rounding down {row.exact:.2f} to {row.limit} wastes "
            f"{(row.exact - row.limit) * row.processes:.0f} slots over {row.processes} processes"
        )
    if row.binding == "rate limit":
        assert row.rate_limit_rps_total is not None
        warnings.append(
            f"{key}: concurrency carries {row.rps_total:.1f}/s but the provider's RPM share allows "
            f"{row.rate_limit_rps_total:.1f}/s: the rate limit binds"
        )
    # A full queue drains at limit / latency per second; waiters beyond what max_wait can drain
    # will mostly time out, so they only add latency before the same rejection.
    drain_time = row.max_waiters * row.latency / row.limit if row.limit else math.inf
    if row.max_waiters and drain_time > 2 * row.max_wait:
        warnings.append(
            f"{key}: {row.max_waiters} waiters need {drain_time:.2f}s to drain at {row.rps_per_process:.1f}/s "
            f"but max_wait is {row.max_wait:g}s (lower max_waiters to about "
            f"{max(1, int(row.max_wait * row.rps_per_process))})"
        )
    return warnings

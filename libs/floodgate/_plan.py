"""What a budget implies: per-process limits, pool sizes, throughput, and warnings.

Pure computation behind ``floodgate plan``. Throughput follows Little's law: a budget of
``L`` concurrent calls that each take ``W`` seconds carries at most ``L / W`` calls per second.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from ._budget import Budget

__all__ = ["DependencyRow", "EndpointRow", "Plan", "make_plan"]


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
class Plan:
    database_max_connections: int
    database_reserve: int
    dependencies: tuple[DependencyRow, ...]
    endpoints: tuple[EndpointRow, ...]
    database_pools: tuple[tuple[str, str, int], ...]  # (dependency, service, connections over all processes)
    warnings: tuple[str, ...] = field(default=())

    @property
    def database_available(self) -> int:
        return self.database_max_connections - self.database_reserve

    @property
    def database_used(self) -> int:
        return sum(n for _, _, n in self.database_pools)


def make_plan(budget: Budget, latencies: Mapping[str, float] | None = None) -> Plan:
    """The plan for ``budget``; ``latencies`` (seconds) override each dependency's
    ``typical_latency``."""
    latencies = dict(latencies or {})
    unknown = set(latencies) - set(budget.dependencies)
    if unknown:
        raise LookupError(f"latency given for unknown dependencies: {sorted(unknown)}")
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
    return Plan(
        database_max_connections=budget.deployment.database_max_connections,
        database_reserve=budget.deployment.database_reserve,
        dependencies=tuple(rows),
        endpoints=tuple(endpoints),
        database_pools=tuple(pools),
        warnings=tuple(warnings),
    )


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

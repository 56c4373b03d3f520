"""Each tenant's ingest limits, from the budget's tenant table (``[tenants]``): its queued-job quota
(``queued_jobs``, checked by the API at submission) and its running cap across all workers
(``running_jobs``, in the workers' claim; 0 is no cap). One home: the budget file; a tenant
without a table of its own has ``[tenants.default]``'s (docs/tenants.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import floodgate

__all__ = ["RunningCaps", "queued_quota", "running_caps"]


@dataclass(frozen=True)
class RunningCaps:
    """Running jobs per tenant across all workers: ``default`` for every tenant, ``overrides`` for
    the tenants the budget names (None: no cap)."""

    default: int | None = 4
    overrides: Mapping[str, int | None] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        for cap in (self.default, *self.overrides.values()):
            if cap is not None and cap < 1:
                raise ValueError("a running cap must be >= 1 (or None for no cap)")

    @property
    def capped(self) -> bool:
        """Whether any tenant has a cap (without one, claims need no per-tenant lock)."""
        return self.default is not None or any(cap is not None for cap in self.overrides.values())

    def of(self, tenant: str) -> int | None:
        return self.overrides.get(tenant, self.default)


def _cap(running_jobs: int) -> int | None:
    return running_jobs or None  # 0 in the budget: no cap


def running_caps(budget: floodgate.Budget) -> RunningCaps:
    """The budget's running caps: ``[tenants.default]``'s for every tenant, and each named tenant's
    own where it differs."""
    table = budget.tenants
    default = _cap(table.policy("default").running_jobs)
    overrides = {
        tenant: cap
        for tenant in sorted(table.configured)
        if (cap := _cap(table.policy(tenant).running_jobs)) != default
    }
    return RunningCaps(default, MappingProxyType(overrides))


def queued_quota(budget: floodgate.Budget, tenant: str) -> int:
    """How many queued jobs ``tenant`` may have (its ``queued_jobs``)."""
    return budget.tenants.policy(tenant).queued_jobs

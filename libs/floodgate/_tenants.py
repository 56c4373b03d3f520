"""The tenant table: what each tenant may use, resolved from the budget file's ``[tenants]``.

``[tenants.default]`` applies to every tenant and a tenant's own table overrides single keys;
keys neither sets take the built-in defaults (`TENANT_DEFAULTS`). `TenantTable.policy` answers
one tenant's limits, `TenantTable.share_limit` its slot cap on one gate or admission door.
Pure data and arithmetic: the gates, doors, ingest queue and token budgets read it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

__all__ = ["DEFAULT_TENANT_KEY", "TENANT_DEFAULTS", "TenantPolicy", "TenantTable"]

#: The ``[tenants.<name>]`` table whose keys apply to every tenant.
DEFAULT_TENANT_KEY = "default"

#: What a tenant gets when neither its own table nor ``[tenants.default]`` sets a key.
TENANT_DEFAULTS: Mapping[str, Any] = MappingProxyType(
    {
        "weight": 1,
        "queued_jobs": 10_000,
        "running_jobs": 4,
        "tokens_per_minute": 60_000,
        "tokens_per_day": 5_000_000,
        "cost_per_day": None,
    }
)


@dataclass(frozen=True)
class TenantPolicy:
    """One tenant's limits, every key resolved.

    ``weight``: paying tiers; multiplies the ``tenant_share`` of every gate and door (capped at
    the whole) and is the tenant's turns in the gates' round-robin. ``queued_jobs``: omniRAG
    jobs it may have queued. ``running_jobs``: its jobs running across all ingest workers (0: no
    cap). ``tokens_per_minute`` / ``tokens_per_day``: LLM tokens (prompt + completion).
    ``cost_per_day``: estimated spend per day (None: no cost budget). ``share``: its own slot
    caps per dependency or endpoint name (a fraction of the slots, or a count), in place of
    their ``tenant_share``.
    """

    name: str
    weight: int = 1
    queued_jobs: int = 10_000
    running_jobs: int = 4
    tokens_per_minute: int = 60_000
    tokens_per_day: int = 5_000_000
    cost_per_day: float | None = None
    share: Mapping[str, float | int] = field(default_factory=lambda: MappingProxyType({}))


def slot_cap(share: float | int | None, slots: int, *, weight: int = 1) -> int:
    """The slots a tenant may hold out of ``slots``: ``share`` is a count (int) or a fraction
    (float) of them, times ``weight``; rounded down but at least 1, at most ``slots``. None:
    the whole."""
    if share is None:
        return slots
    # bool is an int: the budget's validation refuses it; a count is an int, a fraction a float.
    exact = share * weight if isinstance(share, int) else share * slots * weight
    return min(slots, max(1, math.floor(exact + 1e-9)))


class TenantTable:
    """Every tenant's limits (``[tenants]``) and the per-tenant shares of the gates and doors.

    Built by the budget (`Budget.tenants`): ``tables`` are the ``[tenants.<name>]`` tables with
    only the keys the file sets, ``tenant_shares`` each dependency's and endpoint's
    ``tenant_share`` by name (absent: no per-tenant cap)."""

    def __init__(
        self,
        tables: Mapping[str, Mapping[str, Any]] | None = None,
        *,
        tenant_shares: Mapping[str, float | int] | None = None,
    ) -> None:
        tables = dict(tables or {})
        self._default: dict[str, Any] = {**TENANT_DEFAULTS, **tables.pop(DEFAULT_TENANT_KEY, {})}
        self._own = tables
        self._tenant_shares = dict(tenant_shares or {})
        self._policies: dict[str, TenantPolicy] = {}

    @property
    def configured(self) -> frozenset[str]:
        """The tenants with a table of their own (``default`` excluded)."""
        return frozenset(self._own)

    @property
    def tenant_shares(self) -> Mapping[str, float | int]:
        """``tenant_share`` per dependency and endpoint name, for those that set one."""
        return MappingProxyType(self._tenant_shares)

    def policy(self, tenant: str) -> TenantPolicy:
        """``tenant``'s limits: its own keys, else ``[tenants.default]``'s, else the built-ins."""
        policy = self._policies.get(tenant)
        if policy is None:
            own = self._own.get(tenant, {})
            keys = {**self._default, **own}
            # A tenant's share overrides add to the default's, name by name.
            share = {**self._default.get("share", {}), **own.get("share", {})}
            keys["share"] = MappingProxyType(share)
            policy = TenantPolicy(name=tenant, **keys)
            self._policies[tenant] = policy
        return policy

    def share_limit(self, tenant: str, name: str, slots: int) -> int:
        """The slots ``tenant`` may hold of the gate or door ``name`` that has ``slots``.

        The tenant's own override (``share = { name = ... }``) is its cap as written; otherwise
        the ``tenant_share`` of ``name`` times the tenant's weight. At least 1, at most
        ``slots``; with neither, the whole (``slots``)."""
        policy = self.policy(tenant)
        if name in policy.share:
            return slot_cap(policy.share[name], slots)
        return slot_cap(self._tenant_shares.get(name), slots, weight=policy.weight)

    def has_share(self, name: str) -> bool:
        """Whether any tenant is capped on ``name`` (its ``tenant_share``, or an override)."""
        if name in self._tenant_shares or name in self._default.get("share", {}):
            return True
        return any(name in table.get("share", {}) for table in self._own.values())

    def __repr__(self) -> str:
        return (
            f"<TenantTable tenants={sorted(self._own)} default={self.policy(DEFAULT_TENANT_KEY)!r} "
            f"tenant_shares={self._tenant_shares}>"
        )

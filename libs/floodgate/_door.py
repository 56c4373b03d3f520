"""Door: an admission limit that never waits — at most ``limit`` requests inside, the rest refused.

A `Gate` bounds the calls to one dependency, with a short fair wait; it cannot make overload
*fast*. A request refused by a gate deep in its work has already spent its earlier steps, and one
that waits there makes every answer slower. A `Door` stands in front of the whole request: a
request that finds ``limit`` others inside is refused at once (`Overloaded`), before any work,
without waiting and without an await — the refusal is a counter check, because under overload it
is the hottest path of the process.

Its ``limit`` is either fixed (``ceiling``) or an `AdaptiveLimit` under that ceiling, which
lowers it while the dependency that sets the request rate has a queue (``waiting``), or while
completed requests take longer than their recent best (`observe`) and, when ``waiting`` is given,
something waits (a slower dependency with nothing waiting is not overload). Entering and leaving are
synchronous; the caller measures each request and calls `observe`.

With a tenant table whose ``tenant_share`` covers the door (the endpoint's, or a tenant's
override), one tenant holds at most its share of the limit now (`TenantTable.share_limit` of
`limit`); a tenant at its share is refused with `TenantShareExceeded` while the others still
get in.

Metrics (with ``registry``) use the gate families under the label ``admission_<name>``:
``floodgate_gate_in_use``, ``floodgate_gate_capacity`` (the limit now) and
``floodgate_rejections_total{reason="admission"}`` (``reason="tenant_share"`` for a tenant at its share).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING

from ._adaptive import AdaptiveLimit
from ._errors import Overloaded, TenantShareExceeded
from ._gate import DEFAULT_TENANT
from ._metrics import metrics_for

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from ._tenants import TenantTable

__all__ = ["Door", "DoorStatistics"]


@dataclass(frozen=True)
class DoorStatistics:
    """A snapshot of a `Door`: requests inside, its limit now and its ceiling, and the totals."""

    name: str
    in_flight: int
    limit: int
    ceiling: int
    admitted_total: int
    refused_total: int
    #: of ``refused_total``: refused because the tenant held its share
    refused_share_total: int = 0
    in_flight_by_tenant: Mapping[str, int] = field(default_factory=dict)


class Door:
    """At most `limit` requests of one kind inside at once; the rest refused at once.

    ``door.enter()`` raises `Overloaded` (naming ``dependency``, the budget that sets the limit,
    with ``retry_after``) when the door is full; `try_enter` is its twin that answers False
    instead, for callers that render the refusal themselves and want no exception on the hot
    path. Pair every successful entry with one `leave`. Nothing here waits or awaits.

    ``ceiling`` is the limit, or with ``adaptive`` (an `AdaptiveLimit` whose ceiling is
    ``ceiling``) the most it may admit. An adaptive door learns from `observe` (each completed
    request's latency) and, when ``waiting`` is given, from how many wait at the bottleneck
    (read on each entry). ``detail`` ends the refusal's message (what sets the limit, say).

    ``tenants`` (a `TenantTable`) caps each tenant at its share of the door named ``name``;
    pass the tenant to `try_enter`, `enter`, `refusal` and `leave`.
    """

    def __init__(
        self,
        name: str,
        ceiling: int,
        *,
        adaptive: AdaptiveLimit | None = None,
        waiting: Callable[[], int] | None = None,
        dependency: str | None = None,
        retry_after: float = 1.0,
        detail: str | None = None,
        tenants: TenantTable | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        if ceiling < 0:
            raise ValueError(f"ceiling must be >= 0, not {ceiling}")
        if adaptive is not None and adaptive.ceiling != ceiling:
            raise ValueError(
                f"the adaptive limit's ceiling ({adaptive.ceiling}) must be the door's ({ceiling})"
            )
        self.name = name
        #: The static limit, and the adaptive limit's ceiling.
        self.ceiling = ceiling
        #: The adaptive limit, or None for a static door.
        self.adaptive = adaptive
        self.dependency = dependency
        self.retry_after = retry_after
        self.detail = detail
        self._waiting = waiting if adaptive is not None else None
        self._in_flight = 0
        self._in_flight_by_tenant: dict[str, int] = {}
        #: the tenant table when it caps this door (None: any tenant may take every place)
        self._tenants = tenants if tenants is not None and tenants.has_share(name) else None
        self._admitted = 0
        self._refused = 0
        self._refused_share = 0
        metrics = metrics_for(registry)
        self._metered = metrics is not None
        if metrics is not None:
            label = f"admission_{name}"
            self._m_in_use = metrics.gate_in_use.labels(label)
            self._m_refused = metrics.rejections.labels(label, "admission")
            self._m_refused_share = metrics.rejections.labels(label, "tenant_share")
            self._m_capacity = metrics.gate_capacity.labels(label)
            self._m_capacity.set(self.limit)

    @property
    def limit(self) -> int:
        """Requests admitted at once now: the adaptive limit, or the ceiling."""
        adaptive = self.adaptive
        return self.ceiling if adaptive is None else adaptive.limit

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def share_of(self, tenant: str) -> int:
        """The places ``tenant`` may hold now: its share of `limit` (all of it uncapped)."""
        tenants = self._tenants
        limit = self.limit
        return limit if tenants is None else tenants.share_limit(tenant, self.name, limit)

    def try_enter(self, tenant: str = DEFAULT_TENANT) -> bool:
        """Take a place if one is free and ``tenant`` is under its share; False (counted as a
        refusal) otherwise."""
        adaptive = self.adaptive
        if adaptive is not None:
            adaptive.note_in_flight(self._in_flight + 1)
            if self._waiting is not None:
                adaptive.note_queue(self._waiting())
        held = self._in_flight_by_tenant.get(tenant, 0)
        if self._tenants is not None and self._holds_share(held, tenant):
            self._refused += 1
            self._refused_share += 1
            if self._metered:
                self._m_refused_share.inc()
            return False
        if self._in_flight >= self.limit:
            self._refused += 1
            if self._metered:
                self._m_refused.inc()
            return False
        self._in_flight_by_tenant[tenant] = held + 1
        self._in_flight += 1
        self._admitted += 1
        if self._metered:
            self._m_in_use.set(self._in_flight)
        return True

    def enter(self, tenant: str = DEFAULT_TENANT) -> None:
        """Take a place, or raise `refusal()`."""
        if not self.try_enter(tenant):
            raise self.refusal(tenant)

    def _holds_share(self, held: int, tenant: str) -> bool:
        # A share as large as the door is no cap: the door being full refuses that tenant.
        share = self.share_of(tenant)
        return share < self.limit and held >= share

    def at_share(self, tenant: str) -> bool:
        """Whether ``tenant`` holds its whole share (smaller than the door) now: its next entry
        would be refused for its share."""
        return self._tenants is not None and self._holds_share(
            self._in_flight_by_tenant.get(tenant, 0), tenant
        )

    def refusal(self, tenant: str | None = None) -> Overloaded:
        """The error a refused request gets: `TenantShareExceeded` when ``tenant`` holds its
        share, else `Overloaded`, naming the limit and ``dependency``."""
        if tenant is not None and self.at_share(tenant):
            return self.share_refusal(self.share_of(tenant))
        reason = f"{self.name} is at its limit of {self.limit} requests in flight"
        if self.detail:
            reason += f" ({self.detail})"
        return Overloaded(reason, dependency=self.dependency, retry_after=self.retry_after)

    def share_refusal(self, share: int) -> TenantShareExceeded:
        """The error of a tenant refused at its ``share`` of the door (the same for every tenant
        with that share: it names no tenant, so it can be rendered once)."""
        return TenantShareExceeded(
            f"this tenant's share of {self.name} is {share} of the {self.limit} requests in flight, all held",
            dependency=self.name,
            retry_after=self.retry_after,
            share=share,
            limit=self.limit,
        )

    def leave(self, tenant: str = DEFAULT_TENANT) -> None:
        """Give back the place ``tenant`` took with `enter` or a successful `try_enter`."""
        held = self._in_flight_by_tenant.get(tenant, 0)
        if held <= 0:
            raise RuntimeError(f"door {self.name!r}: leave() by tenant {tenant!r} without enter()")
        if held == 1:
            del self._in_flight_by_tenant[tenant]
        else:
            self._in_flight_by_tenant[tenant] = held - 1
        self._in_flight -= 1
        if self._metered:
            self._m_in_use.set(self._in_flight)

    def resize(self, ceiling: int, *, floor: int | None = None) -> None:
        """Set a new ceiling in place — the budget behind it changed, say this process's share of
        the bottleneck when the processes dividing the provider come and go. No one inside is
        turned out: a lower limit takes effect as requests leave (as `Gate.resize`). An adaptive
        door moves its limit with it (`AdaptiveLimit.resize`; ``floor``: its new floor, by default
        the floor it has, or the new ceiling when that is lower). 0 refuses everyone: a process
        that holds no share."""
        if ceiling < 0:
            raise ValueError(f"ceiling must be >= 0, not {ceiling}")
        adaptive = self.adaptive
        if adaptive is not None:
            if floor is None:
                floor = min(max(1, adaptive.floor), ceiling)
            adaptive.resize(ceiling, floor=floor)
        self.ceiling = ceiling
        if self._metered:
            self._m_capacity.set(self.limit)

    def observe(self, latency: float, now: float) -> None:
        """Feed the adaptive limit one completed request's latency (a no-op for a static door).

        ``now`` is any monotonic clock in seconds (trio's, so tests run on a virtual clock).
        Feed only requests whose time says something about capacity: answers and server-side
        failures, not client errors that end before any work.
        """
        adaptive = self.adaptive
        if adaptive is not None and adaptive.observe(latency, now) and self._metered:
            self._m_capacity.set(adaptive.limit)

    def statistics(self) -> DoorStatistics:
        return DoorStatistics(
            self.name,
            self._in_flight,
            self.limit,
            self.ceiling,
            self._admitted,
            self._refused,
            self._refused_share,
            MappingProxyType(dict(self._in_flight_by_tenant)),
        )

    def __repr__(self) -> str:
        kind = "adaptive" if self.adaptive is not None else "static"
        return (
            f"<Door {self.name!r} {kind} in_flight={self._in_flight}/{self.limit} "
            f"admitted={self._admitted} refused={self._refused}>"
        )

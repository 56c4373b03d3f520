"""Dynamic shares: the live processes of a service divide each provider's global limit.

The budget divides a provider's ``global_concurrency x share`` by the ``replicas x workers``
written in the file. When the deployment runs more processes than that, together they exceed
what the provider allows; when it runs fewer, capacity is wasted. With membership, every
process of a service registers in a shared store (`MembershipStore`: PostgreSQL in a
deployment, memory in tests), heartbeats, and sizes its gates from the number of *live*
members: ``floor(global x share / live)``.

**Never over the global limit, even while members come and go.** The store numbers each
membership (a *generation*: its set of members). Each member publishes the generation whose
share its gates already respect (its *ack*: capacity at most the new share *and* calls in
flight drained to it). A member may lower its gates at once; it raises them to a generation's
share only once every other member of that generation has acknowledged it. So a joining
process holds nothing until the others have given their share back, and a process that left
or died is counted out (its lease expired) before anyone takes its share::

    join:     A,B at 8 ─ C registers (gen 2: A,B,C -> 5 each) ─ A,B lower to 5, drain, ack
              ─ C sees every ack, raises 0 -> 5
    crash:    C stops heartbeating ─ its lease expires (gen 3: A,B -> 8) ─ A,B ack ─ raise
    partition: C cannot reach the store ─ after ``fence_after`` C fences itself (0), before
              its lease can expire, so A,B never take a share C still uses

`Membership` is the member's side as a synchronous state machine: it reads no clock (``now``
is passed in) and does no I/O; `run_membership` (``_membership_run``) does the heartbeats.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from types import MappingProxyType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._budget import Budget

__all__ = [
    "Membership",
    "MembershipPolicy",
    "MembershipStatistics",
    "MembershipView",
    "divided_limits",
    "service_totals",
]


@dataclass(frozen=True)
class MembershipPolicy:
    """How often a member heartbeats and how long its registration lasts without one.

    ``expiry``: the lease a heartbeat buys; a member that has not renewed it for this long is
    counted out by the others. ``fence_after``: a member that has not renewed it for this long
    stops taking calls (capacity 0) — shorter than ``expiry``, so that it has stopped, and
    its calls in flight have had ``expiry - fence_after`` seconds to end, before anyone takes
    its share. While a change is under way members heartbeat every ``heartbeat / 4``.
    """

    heartbeat: float = 0.5
    expiry: float = 3.0
    # Default: two thirds of the lease. A loaded process answers late; fencing it too eagerly
    # takes its share away for nothing, too late leaves its calls too little time to end.
    fence_after: float | None = None

    def __post_init__(self) -> None:
        if self.heartbeat <= 0:
            raise ValueError(f"heartbeat must be > 0, not {self.heartbeat}")
        if self.expiry <= 2 * self.heartbeat:
            raise ValueError(f"expiry ({self.expiry}) must be more than two heartbeats ({self.heartbeat})")
        if self.fence_after is None:
            object.__setattr__(self, "fence_after", self.expiry * 2 / 3)
        assert self.fence_after is not None
        if not self.heartbeat < self.fence_after < self.expiry:
            raise ValueError(f"need heartbeat < fence_after < expiry (got {self.fence_after})")

    @property
    def fence(self) -> float:
        assert self.fence_after is not None
        return self.fence_after


@dataclass(frozen=True)
class MembershipView:
    """What the store answered to one heartbeat: the current generation, its members, and the
    generation each of them has acknowledged."""

    generation: int
    members: frozenset[str]
    acked: Mapping[str, int] = field(default_factory=dict)

    def all_acked_but(self, member_id: str) -> bool:
        """Whether every member of this generation other than ``member_id`` acknowledged it."""
        return all(self.acked.get(m, 0) >= self.generation for m in self.members if m != member_id)


def service_totals(budget: Budget, service: str) -> dict[str, Fraction]:
    """``global x share`` of each provider (HTTP dependency) ``service`` has a share of: what
    its live processes divide. PostgreSQL dependencies are left out: their pools are opened at
    start-up with the budget's planned size."""
    totals = {}
    for name in budget.dependencies_of(service):
        dep = budget.dependency(name)
        if dep.kind == "http":
            totals[name] = Fraction(budget.global_limit(name)) * Fraction(dep.shares[service])
    return totals


def divided_limits(totals: Mapping[str, Fraction], live: int) -> dict[str, int]:
    """``floor(total / live)`` for each dependency (0 for every one when nobody is live)."""
    if live < 1:
        return {name: 0 for name in totals}
    return {name: math.floor(total / live) for name, total in totals.items()}


@dataclass(frozen=True)
class MembershipStatistics:
    """A snapshot of a `Membership`."""

    member_id: str
    service: str
    generation: int
    live_members: int
    acked_generation: int
    limits: Mapping[str, int]
    targets: Mapping[str, int]
    fenced: bool
    heartbeats_ok: int
    heartbeats_failed: int


class Membership:
    """One member's side of dynamic shares: from heartbeat answers to gate capacities.

    ``totals`` is `service_totals`. Start with every limit at 0 (a joiner holds nothing).
    Each round: send `ack` (given the gates' calls in flight), then pass the store's answer to
    `on_view` or its failure to `on_failure`; both return the capacity each gate must have now.
    """

    def __init__(
        self, member_id: str, service: str, totals: Mapping[str, Fraction], policy: MembershipPolicy
    ):
        self.member_id = member_id
        self.service = service
        self.policy = policy
        self._totals = dict(totals)
        self._limits = {name: 0 for name in totals}
        self._targets = dict(self._limits)
        self._generation = 0
        self._live = 0
        self._acked = 0
        self._last_ok: float | None = None
        self._fenced = False
        self._ok = 0
        self._failed = 0

    @property
    def limits(self) -> dict[str, int]:
        """The capacity each gate must have now."""
        return dict(self._limits)

    @property
    def last_ok(self) -> float | None:
        """When the last heartbeat the store answered was sent (None before the first)."""
        return self._last_ok

    def ack(self, in_use: Mapping[str, int]) -> int:
        """The generation to acknowledge in the next heartbeat: the latest seen, once every gate
        is at most its share there and its calls in flight have drained to it."""
        if self._acked < self._generation and all(
            in_use.get(name, 0) <= target and self._limits[name] <= target
            for name, target in self._targets.items()
        ):
            self._acked = self._generation
        return self._acked

    def on_view(self, view: MembershipView, started_at: float) -> dict[str, int]:
        """The store answered a heartbeat sent at ``started_at``: lower at once, raise only once
        every other member acknowledged this generation."""
        self._ok += 1
        self._last_ok = started_at
        self._fenced = False
        if view.generation < self._generation:
            return self.limits  # an answer older than one already applied: nothing to learn
        self._generation = view.generation
        if self.member_id not in view.members:
            # Counted out (our lease expired before this heartbeat got through): hold nothing.
            self._live = len(view.members)
            self._targets = {name: 0 for name in self._totals}
            self._limits = dict(self._targets)
            return self.limits
        self._live = len(view.members)
        self._targets = divided_limits(self._totals, self._live)
        may_raise = view.all_acked_but(self.member_id)
        for name, target in self._targets.items():
            self._limits[name] = target if may_raise else min(self._limits[name], target)
        return self.limits

    def on_failure(self, now: float) -> dict[str, int]:
        """A heartbeat failed (or took too long): after ``fence_after`` without one, hold nothing."""
        self._failed += 1
        if self._last_ok is None or now - self._last_ok >= self.policy.fence:
            self._fenced = True
            self._limits = {name: 0 for name in self._totals}
        return self.limits

    def check_fence(self, now: float) -> dict[str, int]:
        """Between heartbeats: fence if the last good one is ``fence_after`` old."""
        if not self._fenced and (self._last_ok is None or now - self._last_ok >= self.policy.fence):
            self._fenced = True
            self._limits = {name: 0 for name in self._totals}
        return self.limits

    @property
    def settled(self) -> bool:
        """Whether this member holds its full share of the latest generation it saw."""
        return not self._fenced and self._limits == self._targets and self._acked >= self._generation

    def statistics(self) -> MembershipStatistics:
        return MembershipStatistics(
            member_id=self.member_id,
            service=self.service,
            generation=self._generation,
            live_members=self._live,
            acked_generation=self._acked,
            limits=MappingProxyType(dict(self._limits)),
            targets=MappingProxyType(dict(self._targets)),
            fenced=self._fenced,
            heartbeats_ok=self._ok,
            heartbeats_failed=self._failed,
        )

    def __repr__(self) -> str:
        return (
            f"<Membership {self.service}/{self.member_id} gen={self._generation} live={self._live} "
            f"acked={self._acked} fenced={self._fenced} limits={self._limits}>"
        )

"""Where the members of a service register: the store's contract, and an in-memory store.

A heartbeat is one atomic step on the store's side (PostgreSQL: one transaction holding the
service's row lock): renew (or create) the member's lease and its ack, count out every member
whose lease has expired, and when the live set differs from the current generation's, start a
new generation with it. The answer is a `MembershipView`. The store's clock alone decides
expiry, so members' clocks never have to agree.

`InMemoryMembershipStore` keeps this in a dict, on ``anyio.current_time()`` (the virtual clock
in tests); `partition` makes it refuse one member, for split-brain tests. The PostgreSQL store
is `PgMembershipStore` (``_membership_pg``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import anyio

from ._errors import DependencyError
from ._membership import MembershipView

__all__ = ["InMemoryMembershipStore", "LiveService", "MembershipStore"]


@dataclass(frozen=True)
class LiveService:
    """The live members of one service, as `floodgate plan` shows them."""

    service: str
    generation: int
    members: int
    acked: int  # members that acknowledged the current generation


class MembershipStore(Protocol):
    async def heartbeat(
        self, service: str, member_id: str, *, acked_generation: int, expiry: float, info: str = ""
    ) -> MembershipView:
        """Renew ``member_id``'s lease for ``expiry`` seconds (registering it if absent), count out
        expired members, start a new generation if the live set changed; return the view."""
        ...

    async def leave(self, service: str, member_id: str) -> None:
        """Remove ``member_id`` now (a clean shutdown), starting a new generation without it."""
        ...

    async def live(self) -> list[LiveService]:
        """Every service's current generation and live members (read only)."""
        ...


@dataclass
class _Service:
    generation: int = 0
    members: frozenset[str] = frozenset()
    leases: dict[str, float] = field(default_factory=dict)  # member -> expires at
    acked: dict[str, int] = field(default_factory=dict)


class InMemoryMembershipStore:
    """A `MembershipStore` in memory, for tests on the virtual clock."""

    def __init__(self) -> None:
        self._services: dict[str, _Service] = {}
        self._partitioned: set[str] = set()
        self.heartbeats = 0

    def partition(self, member_id: str, cut: bool = True) -> None:
        """Make every call from ``member_id`` fail (``cut=False`` heals it)."""
        if cut:
            self._partitioned.add(member_id)
        else:
            self._partitioned.discard(member_id)

    def expires_at(self, service: str, member_id: str) -> float | None:
        """When ``member_id``'s lease ends (None: not a member)."""
        state = self._services.get(service)
        return None if state is None else state.leases.get(member_id)

    def _reachable(self, member_id: str) -> None:
        if member_id in self._partitioned:
            raise DependencyError("membership store unreachable (partitioned)", dependency="membership")

    @staticmethod
    def _recount(state: _Service, now: float) -> None:
        for member, expires_at in list(state.leases.items()):
            if expires_at < now:
                del state.leases[member]
                state.acked.pop(member, None)
        live = frozenset(state.leases)
        if live != state.members:
            state.generation += 1
            state.members = live

    async def heartbeat(
        self, service: str, member_id: str, *, acked_generation: int, expiry: float, info: str = ""
    ) -> MembershipView:
        await anyio.lowlevel.checkpoint()
        self._reachable(member_id)
        now = anyio.current_time()
        state = self._services.setdefault(service, _Service())
        state.leases[member_id] = now + expiry
        state.acked[member_id] = acked_generation
        self._recount(state, now)
        self.heartbeats += 1
        return MembershipView(state.generation, state.members, dict(state.acked))

    async def leave(self, service: str, member_id: str) -> None:
        await anyio.lowlevel.checkpoint()
        self._reachable(member_id)
        state = self._services.setdefault(service, _Service())
        state.leases.pop(member_id, None)
        state.acked.pop(member_id, None)
        self._recount(state, anyio.current_time())

    async def live(self) -> list[LiveService]:
        await anyio.lowlevel.checkpoint()
        now = anyio.current_time()
        answer = []
        for service, state in sorted(self._services.items()):
            alive = [m for m, expires_at in state.leases.items() if expires_at >= now]
            acked = sum(state.acked.get(m, 0) >= state.generation for m in alive)
            answer.append(LiveService(service, state.generation, len(alive), acked))
        return answer

"""The membership store in PostgreSQL (the ``pg`` extra): two small tables, one transaction a heartbeat.

``floodgate_membership`` has a row per service (its generation and members), locked ``FOR
UPDATE`` by each heartbeat (one call of ``floodgate_membership_heartbeat``, migration 0005);
``floodgate_members`` a row per live process (its lease and ack).
Leases are stamped with the database's ``clock_timestamp()``, so expiry never depends on the
members' clocks. The store runs on a pool of its own (one connection, `open_pg_pool`): a
heartbeat must not wait behind the service's queries, or a busy process would fence itself.
This module imports no asyncpg: the functions below run on the asyncio side of the pool.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from ._budget import TimeoutPolicy
from ._membership import MembershipView
from ._membership_store import LiveService

if TYPE_CHECKING:
    from ._pg import PgPool

__all__ = ["PgMembershipStore", "open_pg_membership_store"]


async def _heartbeat(
    conn: Any, service: str, member_id: str, acked_generation: int, expiry: float, info: str
) -> tuple[int, list[str], dict[str, int]]:
    # One round trip (migration 0005): a loaded process gets few turns of its event loop.
    rows = await conn.fetch(
        "SELECT * FROM floodgate_membership_heartbeat($1, $2, $3, $4, $5)",
        service,
        member_id,
        acked_generation,
        expiry,
        info,
    )
    acked = {r["member_id"]: r["acked_generation"] for r in rows if r["member_id"] is not None}
    return rows[0]["generation"], sorted(acked), acked


async def _leave(conn: Any, service: str, member_id: str) -> None:
    await conn.execute("SELECT floodgate_membership_leave($1, $2)", service, member_id)


async def _live(conn: Any) -> list[Any]:
    return await conn.fetch(
        """
        SELECT s.service, s.generation,
               count(m.member_id) FILTER (WHERE m.expires_at >= clock_timestamp()) AS members,
               count(m.member_id) FILTER (WHERE m.expires_at >= clock_timestamp()
                                            AND m.acked_generation >= s.generation) AS acked
          FROM floodgate_membership s LEFT JOIN floodgate_members m USING (service)
         GROUP BY s.service, s.generation ORDER BY s.service
        """
    )


class PgMembershipStore:
    """A `MembershipStore` in PostgreSQL (migrations ``0004_membership.sql`` and
    ``0005_membership_heartbeat.sql``), over a `PgPool`."""

    def __init__(self, pool: PgPool):
        self.pool = pool

    async def heartbeat(
        self, service: str, member_id: str, *, acked_generation: int, expiry: float, info: str = ""
    ) -> MembershipView:
        generation, live, acked = await self.pool.run(
            _heartbeat, service, member_id, acked_generation, expiry, info
        )
        return MembershipView(generation, frozenset(live), acked)

    async def leave(self, service: str, member_id: str) -> None:
        await self.pool.run(_leave, service, member_id)

    async def live(self) -> list[LiveService]:
        rows = await self.pool.run(_live)
        return [LiveService(r["service"], r["generation"], r["members"], r["acked"]) for r in rows]

    def __repr__(self) -> str:
        return f"<PgMembershipStore {self.pool!r}>"


@asynccontextmanager
async def open_pg_membership_store(
    dsn: str, *, statement_seconds: float = 1.0
) -> AsyncIterator[PgMembershipStore]:
    """A `PgMembershipStore` on a one-connection pool of its own; ``statement_seconds`` bounds connecting
    and each statement. Raises `PoolUnavailable` when the database does not answer."""
    from ._pg import open_pg_pool  # the pg extra

    async with open_pg_pool(
        dsn,
        min_size=1,
        max_size=1,
        name="membership",
        max_waiters=4,
        max_wait=statement_seconds,
        timeouts=TimeoutPolicy(connect=statement_seconds, attempt=statement_seconds),
    ) as pool:
        yield PgMembershipStore(pool)

"""The membership store in PostgreSQL (the ``pg`` extra): two small tables, one transaction a heartbeat.

``floodgate_membership`` has a row per service (its generation and members), locked ``FOR
UPDATE`` by each heartbeat; ``floodgate_members`` a row per live process (its lease and ack).
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

_LOCK_SERVICE = """
INSERT INTO floodgate_membership (service) VALUES ($1) ON CONFLICT (service) DO NOTHING;
"""
_RENEW = """
INSERT INTO floodgate_members (service, member_id, info, acked_generation, expires_at)
VALUES ($1, $2, $3, $4, clock_timestamp() + make_interval(secs => $5::double precision))
ON CONFLICT (service, member_id) DO UPDATE
   SET acked_generation = EXCLUDED.acked_generation,
       heartbeat_at = clock_timestamp(),
       expires_at = EXCLUDED.expires_at
"""


async def _recount(conn: Any, service: str) -> tuple[int, list[str], dict[str, int]]:
    # The caller holds the service row's lock: count out the expired, start a generation if needed.
    row = await conn.fetchrow(
        "SELECT generation, members FROM floodgate_membership WHERE service = $1 FOR UPDATE", service
    )
    await conn.execute(
        "DELETE FROM floodgate_members WHERE service = $1 AND expires_at < clock_timestamp()", service
    )
    rows = await conn.fetch(
        "SELECT member_id, acked_generation FROM floodgate_members WHERE service = $1", service
    )
    acked = {r["member_id"]: r["acked_generation"] for r in rows}
    live = sorted(acked)
    generation = row["generation"]
    if live != sorted(row["members"]):
        generation += 1
        await conn.execute(
            "UPDATE floodgate_membership SET generation = $2, members = $3, changed_at = clock_timestamp() "
            "WHERE service = $1",
            service,
            generation,
            live,
        )
    return generation, live, acked


async def _heartbeat(
    conn: Any, service: str, member_id: str, acked_generation: int, expiry: float, info: str
) -> tuple[int, list[str], dict[str, int]]:
    async with conn.transaction():
        await conn.execute(_LOCK_SERVICE, service)
        # Lock first, so that renewing and recounting see one consistent membership.
        await conn.execute("SELECT 1 FROM floodgate_membership WHERE service = $1 FOR UPDATE", service)
        await conn.execute(_RENEW, service, member_id, info, acked_generation, expiry)
        return await _recount(conn, service)


async def _leave(conn: Any, service: str, member_id: str) -> None:
    async with conn.transaction():
        await conn.execute(_LOCK_SERVICE, service)
        await conn.execute("SELECT 1 FROM floodgate_membership WHERE service = $1 FOR UPDATE", service)
        await conn.execute(
            "DELETE FROM floodgate_members WHERE service = $1 AND member_id = $2", service, member_id
        )
        await _recount(conn, service)


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
    """A `MembershipStore` in PostgreSQL (migration ``0004_membership.sql``), over a `PgPool`."""

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

"""`floodgate plan --live DSN`: the division in force now, next to the planned one.

Reads the live members of each service from the membership tables (`PgMembershipStore.live`)
and divides each provider's ``global x share`` by them, as the members themselves do
(`divided_limits`); a service with no live member shows the planned figure only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, TextIO

from ._membership import divided_limits, service_totals

if TYPE_CHECKING:
    from ._budget import Budget
    from ._membership_store import LiveService

__all__ = ["LiveRow", "live_division", "read_live", "render_live"]


@dataclass(frozen=True)
class LiveRow:
    service: str
    dependency: str
    planned_processes: int
    planned_limit: int
    live_processes: int
    live_limit: int | None  # None: nobody of the service is live
    generation: int
    settled: bool  # every live member acknowledged the current generation


def live_division(budget: Budget, live: list[LiveService]) -> list[LiveRow]:
    by_service = {s.service: s for s in live}
    rows = []
    for service in budget.services:
        totals = service_totals(budget, service)
        now = by_service.get(service)
        members = now.members if now is not None else 0
        limits = divided_limits(totals, members) if members else {}
        for dependency in totals:
            rows.append(
                LiveRow(
                    service,
                    dependency,
                    budget.service(service).processes,
                    budget.process_limit(service, dependency),
                    members,
                    limits.get(dependency),
                    now.generation if now is not None else 0,
                    now is not None and now.acked >= members,
                )
            )
    return rows


def read_live(dsn: str) -> list[LiveService]:
    """The live members in the database at ``dsn`` (asyncio; raises `PoolUnavailable` or an
    asyncpg error when it cannot read them)."""
    import anyio

    from ._membership_pg import open_pg_membership_store

    async def read() -> list[LiveService]:
        async with open_pg_membership_store(dsn, statement_seconds=3.0) as store:
            return await store.live()

    return anyio.run(read, backend="asyncio")


def render_live(rows: list[LiveRow], *, out: TextIO) -> None:
    print("Live division (dynamic shares): limit = floor(global x share / live processes)", file=out)
    width = max([len(f"{r.service} {r.dependency}") for r in rows] + [10])
    for r in rows:
        name = f"{r.service} {r.dependency}".ljust(width)
        if r.live_limit is None:
            now = "no live process (the plan applies when one starts)"
        else:
            state = "settled" if r.settled else "changing"
            now = f"{r.live_processes} live -> {r.live_limit} each (generation {r.generation}, {state})"
        print(f"  {name}  planned {r.planned_processes} -> {r.planned_limit} each; now {now}", file=out)

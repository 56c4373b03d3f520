"""Helpers of the ingest tests: a toolkit pool on the trio-asyncio loop, job insertion, row counts."""

from __future__ import annotations

import functools
import hashlib
import tomllib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import floodgate
import trio_asyncio

from services.ingest import _queue as q

REPO_BUDGET = Path(__file__).resolve().parents[2] / "config" / "budget.toml"


@asynccontextmanager
async def open_db(dsn: str, *, max_size: int = 10) -> AsyncIterator[floodgate.PgPool]:
    """A trio-asyncio loop plus the toolkit's pool (generous gate: tests measure the queue, not it)."""
    async with trio_asyncio.open_loop():
        async with floodgate.open_pg_pool(
            dsn, min_size=1, max_size=max_size, max_waiters=1000, max_wait=30.0
        ) as pool:
            yield pool


async def submit(
    db: Any, tenant: str, doc_id: str, text: str | None = "hello world", **overrides: Any
) -> q.SubmitResult:
    args: dict[str, Any] = dict(
        tenant=tenant,
        doc_id=doc_id,
        content_hash=hashlib.sha256((text or "").encode()).hexdigest(),
        source="text",
        text=text,
        url=None,
        metadata={},
        priority=100,
        max_attempts=5,
        idempotency_key=None,
        max_queued=100_000,
    )
    args.update(overrides)
    return await db.run(functools.partial(q.submit_job, **args))


async def claim(
    db: Any,
    worker: str = "w",
    *,
    limit: int = 10,
    lease: float = 30.0,
    cap: int | None = None,
    caps: dict[str, int | None] | None = None,
) -> list[q.ClaimedJob]:
    return await db.run(
        functools.partial(
            q.claim_jobs, worker_id=worker, limit=limit, lease_seconds=lease, tenant_cap=cap, tenant_caps=caps
        )
    )


def budget_with_tenants(tenants: dict[str, Any]) -> floodgate.Budget:
    """The repository's budget with ``tenants`` as its ``[tenants]`` table."""
    data = tomllib.loads(REPO_BUDGET.read_text())
    data["tenants"] = tenants
    return floodgate.parse_budget(data)


async def states(db: Any) -> dict[str, int]:
    rows = await db.fetch("SELECT state, count(*) AS n FROM ingest_jobs GROUP BY state")
    return {r["state"]: r["n"] for r in rows}

"""Each tenant's ingest limits from the tenant table, on the real PostgreSQL: the queued-job quota is
exact under concurrent submits, and the claim keeps every tenant at its own running cap."""

from __future__ import annotations

import trio

from services.ingest import _queue as q
from services.ingest._quotas import RunningCaps, queued_quota, running_caps

from ._helpers import budget_with_tenants, claim, open_db, states, submit


async def test_the_queued_quota_is_exact_under_concurrent_submits(fresh_database_url: str) -> None:
    quota, concurrent = 5, 24
    async with open_db(fresh_database_url, max_size=concurrent) as db:
        created, refused = [], []

        async def one(tenant: str, i: int) -> None:
            try:
                result = await submit(db, tenant, f"doc-{i}", f"text {i}", max_queued=quota)
                created.append((tenant, result.job_id))
            except q.QuotaExceeded as exc:
                refused.append((tenant, exc.queued))

        # Without the tenant's lock every one of these would count 0 queued and insert.
        async with trio.open_nursery() as nursery:
            for i in range(concurrent):
                nursery.start_soon(one, "acme", i)
                nursery.start_soon(one, "globex", i)
        for tenant in ("acme", "globex"):
            assert sum(1 for t, _ in created if t == tenant) == quota
            assert sorted(n for t, n in refused if t == tenant) == [quota] * (concurrent - quota)
        assert await states(db) == {"queued": 2 * quota}


async def test_each_tenant_is_claimed_up_to_its_own_running_cap(fresh_database_url: str) -> None:
    budget = budget_with_tenants(
        {"default": {"running_jobs": 1}, "acme": {"running_jobs": 3}, "globex": {"running_jobs": 0}}
    )
    caps = running_caps(budget)
    assert caps == RunningCaps(1, {"acme": 3, "globex": None})
    async with open_db(fresh_database_url) as db:
        for tenant in ("acme", "globex", "initech"):
            for i in range(6):
                await submit(db, tenant, f"{tenant}-{i}", f"{tenant} text {i}")
        running: dict[str, int] = {}
        for _ in range(4):  # several claims: the caps hold across them, not only within one
            for job in await claim(db, limit=5, cap=caps.default, caps=dict(caps.overrides)):
                running[job.tenant_id] = running.get(job.tenant_id, 0) + 1
        assert running == {"acme": 3, "globex": 6, "initech": 1}


def test_the_quota_and_caps_come_from_the_tenant_table() -> None:
    budget = budget_with_tenants(
        {"default": {"queued_jobs": 7, "running_jobs": 0}, "acme": {"queued_jobs": 9}}
    )
    assert (queued_quota(budget, "acme"), queued_quota(budget, "anyone")) == (9, 7)
    caps = running_caps(budget)
    assert (caps.default, dict(caps.overrides), caps.capped) == (None, {}, False)  # 0: no cap for anyone
    assert RunningCaps(None, {"acme": 2}).capped and RunningCaps(None, {"acme": 2}).of("acme") == 2

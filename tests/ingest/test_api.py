"""The jobs API in-process (quart test client) on a real PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import floodgate
from prometheus_client import CollectorRegistry

from services.ingest import IngestApiSettings
from services.ingest import _queue as q
from services.ingest._bootstrap import build_api_app

from ._helpers import budget_with_tenants, claim, open_db

T1 = {"x-floodgate-tenant": "acme"}
T2 = {"x-floodgate-tenant": "globex"}


@asynccontextmanager
async def api(
    dsn: str, budget: floodgate.Budget | None = None, **settings: object
) -> AsyncIterator[tuple[object, object]]:
    async with open_db(dsn) as db:
        app = build_api_app(
            IngestApiSettings(database_url=dsn, **settings), db, CollectorRegistry(), budget=budget
        )
        yield app.test_client(), db


async def test_submit_status_and_idempotent_resubmit(fresh_database_url: str) -> None:
    async with api(fresh_database_url) as (client, _db):
        body = {"doc_id": "handbook", "text": "Employees get 30 days of leave.", "metadata": {"lang": "en"}}
        first = await client.post("/v1/omnirag/jobs", json=body, headers=T1)
        assert first.status_code == 202
        created = await first.get_json()
        assert (
            created["state"] == "queued" and created["status_url"] == f"/v1/omnirag/jobs/{created['job_id']}"
        )
        assert first.headers["Location"] == created["status_url"]
        again = await client.post("/v1/omnirag/jobs", json=body, headers=T1)
        assert again.status_code == 200 and (await again.get_json())["job_id"] == created["job_id"]

        status = await client.get(created["status_url"], headers=T1)
        job = await status.get_json()
        assert job["state"] == "queued" and job["attempts"] == 0
        assert job["progress"] == {"chunks_total": None, "chunks_done": 0, "percent": 0.0}
        assert job["timestamps"]["queued"] and job["timestamps"]["started"] is None
        # another tenant cannot see it, and gets the same answer as for a job that does not exist
        other = await client.get(created["status_url"], headers=T2)
        missing = await client.get("/v1/omnirag/jobs/999999", headers=T1)
        assert other.status_code == missing.status_code == 404
        assert (await other.get_json())["error"]["code"] == "job_not_found"


async def test_validation_names_the_field(fresh_database_url: str) -> None:
    async with api(fresh_database_url, max_text_bytes=100) as (client, _db):

        async def error(body: object, headers: dict = T1) -> tuple[int, dict]:
            response = await client.post("/v1/omnirag/jobs", json=body, headers=headers)
            return response.status_code, (await response.get_json())["error"]

        status, err = await error({"doc_id": "d"})
        assert status == 422 and {d["field"] for d in err["details"]} == {"text", "url"}
        status, err = await error({"doc_id": "d", "text": "x", "url": "https://a.test/"})
        assert status == 422
        status, err = await error({"doc_id": "d", "text": "x" * 101})
        assert status == 413 and err["details"][0]["field"] == "text"
        status, err = await error({"doc_id": "d", "url": "ftp://a.test/x"})
        assert status == 422 and err["details"][0]["field"] == "url"
        status, err = await error({"doc_id": "d", "text": "nul \u0000 byte"})
        assert status == 422 and err["details"][0]["field"] == "text"
        status, err = await error({"doc_id": "d", "text": "x", "metadata": {"k": "\u0000"}})
        assert status == 422 and err["details"][0]["field"] == "metadata"
        status, err = await error({"text": "x"})
        assert status == 422 and err["details"][0]["field"] == "doc_id"
        status, err = await error({"doc_id": "d", "text": "x", "priority": 5000})
        assert status == 422 and err["details"][0]["field"] == "priority"
        status, err = await error({"doc_id": "d", "text": "x", "surprise": 1})
        assert status == 422 and err["details"][0]["field"] == "surprise"
        status, err = await error({"doc_id": "d", "text": "x"}, headers={})
        assert status == 401 and err["code"] == "missing_tenant"
        response = await client.post(
            "/v1/omnirag/jobs", data=b"{not json", headers={**T1, "content-type": "application/json"}
        )
        assert response.status_code == 400
        response = await client.get("/v1/omnirag/jobs/abc", headers=T1)
        assert (
            response.status_code == 400
            and (await response.get_json())["error"]["details"][0]["field"] == "job_id"
        )


async def test_quota_is_a_429_with_retry_after(fresh_database_url: str) -> None:
    # the quota is the tenant table's queued_jobs (docs/tenants.md); globex has one of its own
    budget = budget_with_tenants({"default": {"queued_jobs": 2}, "globex": {"queued_jobs": 3}})
    async with api(fresh_database_url, budget, quota_retry_after=7) as (client, _db):
        for i in range(2):
            assert (
                await client.post("/v1/omnirag/jobs", json={"doc_id": f"d{i}", "text": "x"}, headers=T1)
            ).status_code == 202
        refused = await client.post("/v1/omnirag/jobs", json={"doc_id": "d9", "text": "x"}, headers=T1)
        assert refused.status_code == 429 and refused.headers["Retry-After"] == "7"
        assert (await refused.get_json())["error"]["details"] == {"queued": 2, "limit": 2}
        for i in range(3):
            assert (
                await client.post("/v1/omnirag/jobs", json={"doc_id": f"d{i}", "text": "x"}, headers=T2)
            ).status_code == 202
        refused = await client.post("/v1/omnirag/jobs", json={"doc_id": "d9", "text": "x"}, headers=T2)
        assert (await refused.get_json())["error"]["details"] == {"queued": 3, "limit": 3}


async def test_idempotency_key(fresh_database_url: str) -> None:
    async with api(fresh_database_url) as (client, _db):
        headers = {**T1, "Idempotency-Key": "batch-7-item-1"}
        first = await client.post("/v1/omnirag/jobs", json={"doc_id": "d", "text": "one"}, headers=headers)
        again = await client.post("/v1/omnirag/jobs", json={"doc_id": "d", "text": "one"}, headers=headers)
        assert (first.status_code, again.status_code) == (202, 200)
        reused = await client.post("/v1/omnirag/jobs", json={"doc_id": "d", "text": "two"}, headers=headers)
        assert reused.status_code == 422
        assert (await reused.get_json())["error"]["details"][0]["field"] == "Idempotency-Key"


async def test_list_with_keyset_pagination_and_filters(fresh_database_url: str) -> None:
    async with api(fresh_database_url) as (client, db):
        ids = []
        for i in range(5):
            response = await client.post(
                "/v1/omnirag/jobs", json={"doc_id": f"d{i}", "text": f"t{i}"}, headers=T1
            )
            ids.append((await response.get_json())["job_id"])
        await client.post("/v1/omnirag/jobs", json={"doc_id": "x", "text": "x"}, headers=T2)
        page = await (await client.get("/v1/omnirag/jobs?limit=3", headers=T1)).get_json()
        assert [j["job_id"] for j in page["jobs"]] == ids[::-1][:3] and page["next_cursor"]
        rest = await (
            await client.get(f"/v1/omnirag/jobs?limit=3&cursor={page['next_cursor']}", headers=T1)
        ).get_json()
        assert [j["job_id"] for j in rest["jobs"]] == ids[::-1][3:] and rest["next_cursor"] is None
        await claim(db, limit=1)
        running = await (await client.get("/v1/omnirag/jobs?state=running", headers=T1)).get_json()
        assert len(running["jobs"]) <= 1
        for query, field in (("state=bogus", "state"), ("limit=0", "limit"), ("cursor=zzz", "cursor")):
            response = await client.get(f"/v1/omnirag/jobs?{query}", headers=T1)
            assert response.status_code == 400, query
            assert (await response.get_json())["error"]["details"][0]["field"] == field


async def test_cancel_and_requeue(fresh_database_url: str) -> None:
    async with api(fresh_database_url) as (client, db):

        async def new(doc: str) -> int:
            response = await client.post("/v1/omnirag/jobs", json={"doc_id": doc, "text": doc}, headers=T1)
            return (await response.get_json())["job_id"]

        queued = await new("q")
        response = await client.post(f"/v1/omnirag/jobs/{queued}/cancel", headers=T1)
        assert response.status_code == 200 and (await response.get_json())["state"] == "cancelled"
        assert (
            await client.post(f"/v1/omnirag/jobs/{queued}/cancel", headers=T1)
        ).status_code == 200  # idempotent
        assert (await client.post(f"/v1/omnirag/jobs/{queued}/cancel", headers=T2)).status_code == 404
        # the queued job reached its final state here: its submit-to-finish latency, observed once
        latency = client.app.extensions["ingest"].metrics.job_latency
        counts = {
            s.labels["outcome"]: s.value
            for f in latency.collect()
            for s in f.samples
            if s.name.endswith("_count")
        }
        assert counts == {"cancelled": 1}

        running_id = await new("r")
        [running] = await claim(db)
        assert running.job_id == running_id
        response = await client.post(f"/v1/omnirag/jobs/{running_id}/cancel", headers=T1)
        assert response.status_code == 202 and (await response.get_json())["state"] == "running"
        status = await (await client.get(f"/v1/omnirag/jobs/{running_id}", headers=T1)).get_json()
        assert status["cancel_requested"] is True

        done_id = await new("d")
        [done] = await claim(db)
        await db.run(q.complete_noop_jobs, [done.fence])
        response = await client.post(f"/v1/omnirag/jobs/{done_id}/cancel", headers=T1)
        assert response.status_code == 409 and (await response.get_json())["error"]["code"] == "job_finished"
        assert (await client.post(f"/v1/omnirag/jobs/{done_id}/requeue", headers=T1)).status_code == 409


async def test_readiness_checks_the_database(fresh_database_url: str) -> None:
    async with api(fresh_database_url) as (client, _db):
        response = await client.get("/readyz")
        assert response.status_code == 200 and (await response.get_json())["checks"] == {"db": "ok"}

"""End to end over real sockets: the online service and the simulator served by hypercorn on free
ports, dealBrain's vector search on the real PostgreSQL (pgvector), tenants kept apart.

Real time here (sockets and asyncpg cannot run on a virtual clock); the simulator answers at once,
so the module stays well under a second per test.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import asyncpg
import chassis
import floodgate
import httpx
import pytest
import trio
import trio_asyncio
from prometheus_client import CollectorRegistry
from providers import load_provider_settings, vector_literal

from services.online._wiring import open_downstreams
from services.online.app import create_app
from services.online.settings import PROVIDER_DEPENDENCIES, OnlineSettings
from services.simulator import SimulatorSettings, embed
from services.simulator import create_app as create_simulator

from .conftest import make_budget

QUESTION = "How much did Aldercrest Robotics pay to acquire Norfield Analytics?"

DOCUMENTS = {
    "acme": {
        "acme-memo": [
            "Aldercrest Robotics agreed to acquire Norfield Analytics for 420 million dollars.",
            "The acquisition of Norfield Analytics is expected to close in May.",
        ],
        "acme-notes": ["Our board approved the Norfield Analytics integration plan."],
    },
    "globex": {
        "globex-secret": [
            "Globex internal: Aldercrest Robotics will pay 999 million dollars to acquire Norfield Analytics.",
        ],
    },
}


async def _insert(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        for tenant, docs in DOCUMENTS.items():
            for doc_id, chunks in docs.items():
                digest = hashlib.sha256("".join(chunks).encode()).hexdigest()
                for number, text in enumerate(chunks):
                    await conn.execute(
                        "INSERT INTO chunks (tenant_id, doc_id, chunk_no, content, embedding, content_hash, metadata)"
                        " VALUES ($1, $2, $3, $4, $5::text::vector, $6, $7::jsonb)"
                        " ON CONFLICT (tenant_id, doc_id, chunk_no) DO NOTHING",
                        tenant,
                        doc_id,
                        number,
                        text,
                        vector_literal(embed(text)),
                        digest,
                        json.dumps({"title": doc_id}),
                    )
    finally:
        await conn.close()


@asynccontextmanager
async def served_cluster(database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """Simulator and online service on free loopback ports; yields a client for the online one."""
    async with trio_asyncio.open_loop():
        await trio_asyncio.aio_as_trio(_insert)(database_url)
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            serve = partial(
                chassis.serve, host="127.0.0.1", port=0, grace_period=1.0, shutdown_trigger=stop.wait
            )
            simulator = create_simulator(SimulatorSettings())
            [simulator_url] = await nursery.start(partial(serve, simulator))
            providers = load_provider_settings(
                PROVIDER_DEPENDENCIES, environ={}, default_base_url=simulator_url
            )
            settings = OnlineSettings(database_url=database_url)
            registry = CollectorRegistry()
            budget = make_budget()
            async with open_downstreams(settings, providers, budget, registry=registry) as wired:
                pool = wired.pool
                app = create_app(
                    settings,
                    budget=budget,
                    downstreams=wired.downstreams,
                    registry=registry,
                    readiness={"database": lambda: pool.fetchval("SELECT 1")},
                    doors=wired.doors,
                )
                [online_url] = await nursery.start(partial(serve, app))
                async with httpx.AsyncClient(base_url=online_url, timeout=10) as client:
                    yield client
                stop.set()


async def ask(client: httpx.AsyncClient, tenant: str, **body) -> httpx.Response:
    return await client.post(
        "/v1/deal-brain/answers", json={"question": QUESTION, **body}, headers={"x-floodgate-tenant": tenant}
    )


async def test_deal_brain_over_http_with_pgvector(database_url) -> None:
    async with served_cluster(database_url) as client:
        response = await ask(client, "acme", top_k=5)
        ready = await client.get("/readyz")
        metrics = (await client.get("/metrics")).text
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["degraded"] == []
    assert body["passages"][0]["doc_id"] == "acme-memo"
    assert body["passages"][0]["title"] == "acme-memo"
    assert "420 million" in body["answer"]
    assert response.headers["x-request-id"]
    assert "vector_search;dur=" in response.headers["server-timing"]
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok"}
    assert 'floodgate_gate_capacity{gate="llm"}' in metrics
    # served by chassis.serve, as in the process: its loop-lag monitor and the pool's metrics are there
    for family in ("floodgate_loop_lag_seconds_count", "process_cpu_seconds_total", "process_open_fds"):
        assert f"\n{family} " in metrics
    for family in (
        "floodgate_pool_in_use",
        "floodgate_pool_size",
        "floodgate_pool_acquire_wait_seconds_count",
    ):
        assert f'\n{family}{{pool="db"}} ' in metrics


@pytest.mark.parametrize(("tenant", "other"), [("acme", "globex"), ("globex", "acme")])
async def test_deal_brain_never_returns_another_tenants_passages(database_url, tenant, other) -> None:
    async with served_cluster(database_url) as client:
        response = await ask(client, tenant, top_k=20)
        unknown = await ask(client, "initech", web=False)
    assert response.status_code == 200
    body = response.json()
    theirs = set(DOCUMENTS[other])
    mine = {p["doc_id"] for p in body["passages"] if p["source"] == "document"}
    assert mine and mine <= set(DOCUMENTS[tenant])
    assert not theirs & {p["doc_id"] for p in body["passages"]}
    foreign_text = [c for chunks in DOCUMENTS[other].values() for c in chunks]
    assert not any(text in (body["answer"] or "") for text in foreign_text)
    assert "999 million" not in str(body) or tenant == "globex"
    # A tenant with no documents gets none of anybody's.
    assert unknown.status_code == 200
    assert unknown.json()["passages"] == []
    assert unknown.json()["answer"] is None


async def test_pooled_sessions_use_pgvector_iterative_scan(database_url) -> None:
    async with trio_asyncio.open_loop():
        budget = make_budget()
        async with open_downstreams(
            OnlineSettings(database_url=database_url),
            load_provider_settings(PROVIDER_DEPENDENCIES, environ={}),
            budget,
            registry=CollectorRegistry(),
        ) as wired:
            assert await wired.pool.fetchval("SHOW hnsw.iterative_scan") == "relaxed_order"


async def test_pooled_sessions_have_the_budgets_db_statement_timeout(database_url) -> None:
    budget = make_budget({"dependencies": {"db": {"timeouts": {"attempt": 0.75}}}})
    async with trio_asyncio.open_loop():
        async with open_downstreams(
            OnlineSettings(database_url=database_url),
            load_provider_settings(PROVIDER_DEPENDENCIES, environ={}),
            budget,
            registry=CollectorRegistry(),
        ) as wired:
            assert await wired.pool.fetchval("SHOW statement_timeout") == "750ms"
            with pytest.raises(floodgate.DeadlineExceeded) as caught:
                await wired.pool.execute("SELECT pg_sleep(5)")
            assert caught.value.dependency == "db"

"""Workers as real processes on a real PostgreSQL and the simulator: exactly-once under concurrency,
a SIGKILLed worker, a frozen ("zombie") worker whose late writes are fenced off."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trio

from harness.processes import Proc
from harness.ready import wait_until_async
from harness.services import metric, set_behaviour, start_ingest_worker, start_simulator
from services.ingest import ChunkingConfig, split_into_chunks

from ._helpers import open_db, states, submit

CHUNKING = ChunkingConfig(chunk_tokens=20, overlap_tokens=5)
WORKER_CHUNKING = {"chunk_tokens": 20, "chunk_overlap": 5, "embed_batch_size": 2}


@pytest.fixture(scope="module")
def simulator(tmp_path_factory: pytest.TempPathFactory, realtime) -> Iterator[Proc]:
    child = start_simulator(tmp_path_factory.mktemp("sim"))
    try:
        yield child
    finally:
        child.stop()


@pytest.fixture
def children() -> Iterator[list[Proc]]:
    started: list[Proc] = []
    try:
        yield started
    finally:
        for child in started:
            child.stop(timeout=5)


def document(i: int, words: int = 45) -> str:
    return " ".join(f"term{(i * 7 + k) % 97}" for k in range(words)) + f" doc{i}"


@pytest.mark.timeout(90)  # waits up to 60 s for the jobs
async def test_three_workers_300_jobs_each_succeeds_exactly_once(
    fresh_database_url: str, simulator: Proc, children: list[Proc], tmp_path: Path
) -> None:
    set_behaviour(simulator, {"embeddings": {"latency": {"fixed_ms": 2}}})
    tenants = ["acme", "globex", "initech", "umbrella", "hooli"]
    async with open_db(fresh_database_url) as db:
        texts = {}
        for i in range(300):
            tenant = tenants[i % len(tenants)]
            texts[(tenant, f"doc{i}")] = document(i)
            await submit(db, tenant, f"doc{i}", texts[(tenant, f"doc{i}")])
        # plus two url jobs, fetched by the workers from the simulator's corpus
        async with httpx.AsyncClient(base_url=simulator.url, timeout=5) as client:
            hits = (await client.get("/v1/search", params={"q": "market growth", "count": 2})).json()
        urls = [hit["url"] for hit in hits["results"]]
        assert len(urls) == 2
        for n, url in enumerate(urls):
            await submit(db, "acme", f"web{n}", None, source="url", url=url, content_hash=f"url:{url}")
        for name in ("w1", "w2", "w3"):
            # one chunk per document: the test is about the queue, not about embedding volume
            children.append(
                start_ingest_worker(
                    name,
                    fresh_database_url,
                    simulator,
                    tmp_path,
                    job_concurrency=8,
                    tenant_running_cap=6,
                    chunk_tokens=64,
                    chunk_overlap=8,
                )
            )
        for child in children:
            child.wait_http()
        started = time.monotonic()

        async def all_done() -> bool:
            return await states(db) == {"succeeded": 302}

        await wait_until_async(all_done, within=60)
        elapsed = time.monotonic() - started

        # each job ran once (no second attempt anywhere) and its chunks are complete, with no extras
        assert await db.fetchval("SELECT count(*) FROM ingest_jobs WHERE attempts <> 1") == 0
        rows = await db.fetch(
            "SELECT tenant_id, doc_id, count(*) AS n FROM chunks GROUP BY tenant_id, doc_id"
        )
        got = {(r["tenant_id"], r["doc_id"]): r["n"] for r in rows}
        one_chunk = ChunkingConfig(chunk_tokens=64, overlap_tokens=8)
        web = {key: got.pop(key) for key in [("acme", "web0"), ("acme", "web1")]}
        assert all(n >= 1 for n in web.values())
        titles = await db.fetch(
            "SELECT DISTINCT metadata->>'url' AS url FROM chunks WHERE doc_id LIKE 'web%'"
        )
        assert sorted(r["url"] for r in titles) == sorted(urls)
        assert got == {key: len(split_into_chunks(text, one_chunk)) for key, text in texts.items()}
        assert set(got.values()) == {1}
        mismatched = await db.fetchval(
            """SELECT count(*) FROM ingest_documents d JOIN ingest_jobs j ON j.id = d.job_id
               WHERE j.tenant_id <> d.tenant_id OR j.doc_id <> d.doc_id"""
        )
        assert mismatched == 0
        assert await db.fetchval("SELECT count(*) FROM ingest_chunk_staging") == 0
        # the workers' own counts agree: 300 completions in total, shared between the three
        done = [metric(c, "ingest_job_outcomes_total", 'outcome="succeeded"') for c in children]
        assert sum(done) == 302 and all(n > 0 for n in done), done
        assert sum(metric(c, "ingest_transitions_refused_total") for c in children) == 0
        # each job's submit-to-finish latency and first queue wait observed once, by the worker
        # that finished or claimed it; the simulator's `usage` counted under the worker's endpoint
        latencies = [metric(c, "ingest_job_latency_seconds_count", 'outcome="succeeded"') for c in children]
        assert sum(latencies) == 302 and latencies == done
        assert sum(metric(c, "ingest_queue_wait_seconds_count") for c in children) == 302
        tokens = 'dependency="embed",endpoint="omnirag_ingest",kind="prompt"'  # labels sorted by name
        assert sum(metric(c, "floodgate_tokens_total", tokens) for c in children) > 0
    print(f"300 jobs on 3 workers in {elapsed:.2f}s; per worker {done}")


@pytest.mark.realtime
async def test_sigkill_mid_job_another_worker_reclaims_and_completes(
    fresh_database_url: str, simulator: Proc, children: list[Proc], tmp_path: Path
) -> None:
    """Worker A is killed while embedding; B reclaims after the 1.5 s lease and finishes. No job lost."""
    set_behaviour(simulator, {"embeddings": {"latency": {"fixed_ms": 150}}})
    lease = {"lease_seconds": 1.5, "embed_parallelism": 1, **WORKER_CHUNKING}
    async with open_db(fresh_database_url) as db:
        texts = {f"doc{i}": document(i, words=120) for i in range(2)}  # 8 chunks -> 4 batches of 150 ms
        for doc_id, text in texts.items():
            await submit(db, "acme", doc_id, text)
        a = start_ingest_worker("wA", fresh_database_url, simulator, tmp_path, **lease)
        children.append(a)

        async def a_is_mid_job() -> bool:
            n = await db.fetchval(
                "SELECT count(*) FROM ingest_jobs WHERE state = 'running' AND chunks_done > 0"
            )
            return n == 2

        await wait_until_async(a_is_mid_job, within=20)
        a.signal(signal.SIGKILL)
        killed_at = time.monotonic()
        b = start_ingest_worker("wB", fresh_database_url, simulator, tmp_path, **lease)
        children.append(b)

        async def done() -> bool:
            return await states(db) == {"succeeded": 2}

        await wait_until_async(done, within=20)
        recovered_in = time.monotonic() - killed_at
        jobs = await db.fetch("SELECT attempts, lease_owner, chunks_total, chunks_done FROM ingest_jobs")
        assert all(j["attempts"] == 2 and j["lease_owner"] == "wB" for j in jobs)
        assert all(j["chunks_total"] == j["chunks_done"] == 8 for j in jobs)
        rows = await db.fetch(
            "SELECT doc_id, array_agg(chunk_no ORDER BY chunk_no) AS nos FROM chunks GROUP BY doc_id"
        )
        assert {r["doc_id"]: list(r["nos"]) for r in rows} == {d: list(range(8)) for d in texts}
        assert metric(b, "ingest_lease_expiries_total") == 2
        # B reused the chunks A had already staged rather than embedding everything again
        assert metric(b, "ingest_chunks_embedded_total") < 16
    print(f"recovered {recovered_in:.2f}s after SIGKILL")


@pytest.mark.realtime
@pytest.mark.slow
@pytest.mark.timeout(60)  # waits up to 2 x 20 s
async def test_a_frozen_worker_that_wakes_up_cannot_overwrite_the_new_attempt(
    fresh_database_url: str, simulator: Proc, children: list[Proc], tmp_path: Path
) -> None:
    """SIGSTOP A mid-job (a long GC pause, a partition); B reclaims and completes; SIGCONT A: every
    write A still attempts is refused by the lease token, and the document stays B's version."""
    set_behaviour(simulator, {"embeddings": {"latency": {"fixed_ms": 150}}})
    lease = {"lease_seconds": 1.5, "embed_parallelism": 1, **WORKER_CHUNKING}
    async with open_db(fresh_database_url) as db:
        await submit(db, "acme", "doc", document(1, words=120))
        a = start_ingest_worker("wA", fresh_database_url, simulator, tmp_path, **lease)
        children.append(a)

        async def a_is_mid_job() -> bool:
            return ((await db.fetchval("SELECT chunks_done FROM ingest_jobs")) or 0) > 0

        await wait_until_async(a_is_mid_job, within=20)
        a.signal(signal.SIGSTOP)
        b = start_ingest_worker("wB", fresh_database_url, simulator, tmp_path, **lease)
        children.append(b)

        async def done() -> bool:
            return await states(db) == {"succeeded": 1}

        await wait_until_async(done, within=20)
        before = await db.fetch("SELECT chunk_no, content, updated_at FROM chunks ORDER BY chunk_no")
        a.signal(signal.SIGCONT)
        await trio.sleep(1.0)  # A resumes: its embed calls return, its heartbeats and writes are fenced off
        after = await db.fetch("SELECT chunk_no, content, updated_at FROM chunks ORDER BY chunk_no")
        assert before == after and len(after) == 8
        job = await db.fetchrow("SELECT state, attempts, lease_owner FROM ingest_jobs")
        assert (job["state"], job["attempts"], job["lease_owner"]) == ("succeeded", 2, "wB")
        assert metric(a, "ingest_job_outcomes_total", 'outcome="lease_lost"') == 1
        assert metric(a, "ingest_job_outcomes_total", 'outcome="succeeded"') == 0


@pytest.mark.realtime
async def test_sigterm_releases_running_jobs_and_exits_cleanly(
    fresh_database_url: str, simulator: Proc, children: list[Proc], tmp_path: Path
) -> None:
    """A deploy: SIGTERM stops claiming, the grace period runs out, the jobs go back to queued at once
    with the attempt not counted, and the process exits 0."""
    set_behaviour(simulator, {"embeddings": {"latency": {"fixed_ms": 3000}}})
    async with open_db(fresh_database_url) as db:
        for i in range(2):
            await submit(db, "acme", f"doc{i}", document(i))
        worker = start_ingest_worker(
            "wT", fresh_database_url, simulator, tmp_path, shutdown_grace=0.3, **WORKER_CHUNKING
        )
        children.append(worker)

        async def both_running() -> bool:
            return await states(db) == {"running": 2}

        await wait_until_async(both_running, within=20)
        await trio.sleep(0.2)  # inside the embed calls
        worker.signal(signal.SIGTERM)
        started = time.monotonic()
        while worker.process.poll() is None:
            assert time.monotonic() - started < 5, "worker did not exit after SIGTERM"
            await trio.sleep(0.05)
        assert worker.process.returncode == 0
        rows = await db.fetch("SELECT state, attempts, lease_token FROM ingest_jobs")
        assert [(r["state"], r["attempts"], r["lease_token"]) for r in rows] == [("queued", 0, None)] * 2
        assert '"event": "job_released"' in worker.log_text()
    set_behaviour(simulator, {"embeddings": {"latency": {"fixed_ms": 0}}})

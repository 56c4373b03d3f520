"""The queue's SQL against a real PostgreSQL: idempotency, fairness under concurrent claimers, fencing,
retries, cancellation, chunk versions, retention."""

from __future__ import annotations

import functools

import pytest
import trio

from services.ingest import JobState
from services.ingest import _queue as q

from ._helpers import claim, open_db, states, submit

VEC = [0.0] * 383 + [1.0]


async def test_twenty_concurrent_identical_submits_make_one_job(fresh_database_url: str) -> None:
    async with open_db(fresh_database_url, max_size=20) as db:
        results: list[q.SubmitResult] = []

        async def one() -> None:
            results.append(await submit(db, "t1", "doc", "same text"))

        async with trio.open_nursery() as nursery:
            for _ in range(20):
                nursery.start_soon(one)
        assert len({r.job_id for r in results}) == 1
        assert sum(r.created for r in results) == 1
        assert await db.fetchval("SELECT count(*) FROM ingest_jobs") == 1

        # Same with an Idempotency-Key; the key is then bound to that content.
        keyed: list[q.SubmitResult] = []

        async def with_key() -> None:
            keyed.append(await submit(db, "t1", "doc2", "text two", idempotency_key="k-1"))

        async with trio.open_nursery() as nursery:
            for _ in range(20):
                nursery.start_soon(with_key)
        assert len({r.job_id for r in keyed}) == 1 and sum(r.created for r in keyed) == 1
        with pytest.raises(q.IdempotencyKeyReused):
            await submit(db, "t1", "doc2", "other text", idempotency_key="k-1")

        # New content for the same document is a new job; another tenant's identical doc is its own.
        assert (await submit(db, "t1", "doc", "new text")).created
        assert (await submit(db, "t2", "doc", "same text")).created


async def test_queued_quota_refuses_new_jobs_but_not_duplicates(fresh_database_url: str) -> None:
    async with open_db(fresh_database_url) as db:
        for i in range(3):
            await submit(db, "t", f"d{i}", f"text {i}", max_queued=3)
        with pytest.raises(q.QuotaExceeded) as info:
            await submit(db, "t", "d9", "text 9", max_queued=3)
        assert (info.value.queued, info.value.limit) == (3, 3)
        again = await submit(db, "t", "d0", "text 0", max_queued=3)
        assert not again.created  # a retried submission of an existing job is not refused
        assert (await submit(db, "other", "d9", "x", max_queued=3)).created  # quotas are per tenant


async def test_fairness_cap_holds_under_concurrent_claimers(fresh_database_url: str) -> None:
    """One tenant with 200 jobs, five with 1 each; cap 3; eight claimers race in rounds.
    SKIP LOCKED alone would let several claimers take the big tenant's 3rd slot at once."""
    cap = 3
    async with open_db(fresh_database_url, max_size=12) as db:
        await db.execute(
            """INSERT INTO ingest_jobs (tenant_id, doc_id, content_hash, source)
               SELECT 'big', 'd' || g, 'h' || g, 'text' FROM generate_series(1, 200) g"""
        )
        for i in range(5):
            await submit(db, f"small{i}", "only", f"text {i}")
        claimed: list[q.ClaimedJob] = []
        for _round in range(6):
            async with trio.open_nursery() as nursery:
                for w in range(8):

                    async def claimer(w: int = w) -> None:
                        claimed.extend(await claim(db, f"w{w}", limit=10, cap=cap))

                    nursery.start_soon(claimer)
            running = await db.fetch(
                "SELECT tenant_id, count(*) AS n FROM ingest_jobs WHERE state = 'running' GROUP BY tenant_id"
            )
            per_tenant = {r["tenant_id"]: r["n"] for r in running}
            assert max(per_tenant.values()) <= cap, per_tenant
            # finish one of the big tenant's jobs so the next round competes for a freed slot
            big = [j for j in claimed if j.tenant_id == "big"]
            if big:
                job = big.pop(0)
                claimed.remove(job)
                assert await db.run(q.complete_noop_jobs, [job.fence]) == 1
        assert per_tenant["big"] == cap
        assert all(per_tenant.get(f"small{i}") == 1 for i in range(5))  # the small tenants were not starved


async def test_claim_respects_priority_run_at_and_round_robins_tenants(fresh_database_url: str) -> None:
    async with open_db(fresh_database_url) as db:
        for i in range(4):
            await submit(db, "a", f"a{i}", f"a {i}")
        await submit(db, "b", "b0", "b 0")
        await submit(db, "a", "urgent", "urgent", priority=1)
        await submit(db, "a", "later", "later")
        await db.execute("UPDATE ingest_jobs SET run_at = now() + interval '1 hour' WHERE doc_id = 'later'")
        jobs = await claim(db, limit=3, cap=None)
        assert {j.doc_id for j in jobs} == {"urgent", "b0", "a0"}  # rank 1 of each tenant, then a's 2nd
        rest = await claim(db, limit=10, cap=None)
        assert sorted(j.doc_id for j in rest) == ["a1", "a2", "a3"]  # 'later' is not runnable yet


async def test_fencing_a_stale_attempt_cannot_write(fresh_database_url: str) -> None:
    async with open_db(fresh_database_url) as db:
        await submit(db, "t", "doc", "some text")
        [first] = await claim(db, "crashed", lease=30)
        assert await db.run(q.start_chunks, first.fence, ["x"]) == set()
        assert await db.run(q.stage_chunks, first.fence, [0], ["old content"], [VEC])
        # the worker stops heartbeating; its lease runs out
        await db.execute("UPDATE ingest_jobs SET lease_expires_at = now() - interval '1 second'")
        reaped = await db.run(q.reap_expired)
        assert [(r.job_id, r.state, r.latency) for r in reaped] == [(first.job_id, JobState.QUEUED, None)]
        [second] = await claim(db, "healthy")
        assert second.job_id == first.job_id and second.fence.token != first.fence.token
        assert second.attempts == 2
        # every write of the stale attempt changes nothing
        assert not (await db.run(q.heartbeat, first.fence, 30.0)).alive
        assert await db.run(q.start_chunks, first.fence, ["x"]) is None
        assert not await db.run(q.stage_chunks, first.fence, [0], ["stale"], [VEC])
        complete = functools.partial(q.complete_job, document_hash="h", metadata={})
        assert not await db.run(complete, first.fence)
        assert await db.run(functools.partial(q.retry_or_bury, delay=1, error="x"), first.fence) is None
        assert not await db.run(q.release_job, first.fence)
        # the current attempt completes normally
        reusable = await db.run(
            q.start_chunks, second.fence, [__import__("hashlib").md5(b"some text").hexdigest()]
        )
        assert reusable == set()  # the stale staged chunk has different content: not reused
        assert await db.run(q.stage_chunks, second.fence, [0], ["some text"], [VEC])
        assert await db.run(complete, second.fence)
        rows = await db.fetch("SELECT content FROM chunks WHERE tenant_id = 't' AND doc_id = 'doc'")
        assert [r["content"] for r in rows] == ["some text"]
        assert await states(db) == {"succeeded": 1}


async def test_reclaimed_job_reuses_chunks_staged_by_its_predecessor(fresh_database_url: str) -> None:
    from services.ingest._chunking import chunk_digest

    async with open_db(fresh_database_url) as db:
        await submit(db, "t", "doc", "a b c")
        [first] = await claim(db)
        digests = [chunk_digest(c) for c in ("a", "b", "c")]
        await db.run(q.start_chunks, first.fence, digests)
        await db.run(q.stage_chunks, first.fence, [0, 1], ["a", "b"], [VEC, VEC])
        await db.execute("UPDATE ingest_jobs SET lease_expires_at = now() - interval '1 second'")
        await db.run(q.reap_expired)
        [second] = await claim(db)
        assert await db.run(q.start_chunks, second.fence, digests) == {0, 1}
        job = await db.run(q.get_job, "t", second.job_id)
        assert (job.chunks_total, job.chunks_done) == (3, 2)


async def test_binary_vectors_stage_fenced_with_exact_progress(fresh_database_url: str) -> None:
    """The binary path (the worker's pool registers the vector codec) stores the same vectors as the
    float4[] path; progress counts batches of one attempt exactly; a stale attempt writes nothing."""
    import floodgate
    import trio_asyncio

    from services.ingest._db import register_vector_codec

    vec_a = [float(i) / 384 for i in range(384)]
    vec_b = [0.0] * 383 + [1.0]
    async with (
        trio_asyncio.open_loop(),
        floodgate.open_pg_pool(fresh_database_url, min_size=1, max_size=4, init=register_vector_codec) as db,
    ):
        await submit(db, "t", "doc", "a b c")
        [job] = await claim(db)
        await db.run(q.start_chunks, job.fence, ["d0", "d1", "d2"])
        binary = functools.partial(q.stage_chunks, binary_vectors=True)
        assert await db.run(binary, job.fence, [0, 1], ["a", "b"], [vec_a, vec_b])
        assert (await db.run(q.get_job, "t", job.job_id)).chunks_done == 2
        assert await db.run(binary, job.fence, [2], ["c"], [vec_b])
        assert (await db.run(q.get_job, "t", job.job_id)).chunks_done == 3
        stale = q.Fence(job.job_id, __import__("uuid").uuid4())
        assert not await db.run(binary, stale, [0], ["x"], [vec_b])
        assert await db.run(functools.partial(q.complete_job, document_hash="h", metadata={}), job.fence)
        rows = await db.fetch("SELECT chunk_no, content, embedding FROM chunks ORDER BY chunk_no")
        assert [(r["chunk_no"], r["content"]) for r in rows] == [(0, "a"), (1, "b"), (2, "c")]
        assert rows[0]["embedding"] == pytest.approx(vec_a)  # read back through the same codec
        assert rows[2]["embedding"] == vec_b


async def test_retry_with_backoff_then_dead_with_last_error(fresh_database_url: str) -> None:
    async with open_db(fresh_database_url) as db:
        await submit(db, "t", "doc", "text", max_attempts=2)
        [job] = await claim(db)
        retry = functools.partial(q.retry_or_bury, delay=60.0, error="DependencyError: HTTP 503")
        assert await db.run(retry, job.fence) == q.Settled(JobState.QUEUED, None)
        assert await claim(db) == []  # run_at is a minute away
        delay = await db.fetchval("SELECT extract(epoch FROM run_at - now()) FROM ingest_jobs")
        assert 55 < delay <= 60
        await db.execute("UPDATE ingest_jobs SET run_at = now()")
        [again] = await claim(db)
        assert again.attempts == 2
        last = functools.partial(q.retry_or_bury, delay=60.0, error="DependencyError: HTTP 429")
        dead = await db.run(last, again.fence)
        assert dead.state == JobState.DEAD and dead.latency > 0
        record = await db.run(q.get_job, "t", job.job_id)
        assert record.state == JobState.DEAD and record.finished_at is not None
        assert record.to_json()["last_error"] == {"kind": "retryable", "message": "DependencyError: HTTP 429"}
        # an operator requeues it: a fresh attempt count
        assert await db.run(q.requeue_job, "t", job.job_id)
        assert (await db.run(q.get_job, "t", job.job_id)).attempts == 0


async def test_permanent_failure_and_release(fresh_database_url: str) -> None:
    async with open_db(fresh_database_url) as db:
        await submit(db, "t", "bad", "x")
        await submit(db, "t", "good", "y")
        jobs = {j.doc_id: j for j in await claim(db)}
        assert await db.run(functools.partial(q.fail_job, error="BadDocument: empty"), jobs["bad"].fence)
        assert await db.run(q.release_job, jobs["good"].fence)
        released = await db.run(q.get_job, "t", jobs["good"].job_id)
        assert (released.state, released.attempts) == (JobState.QUEUED, 0)  # not counted
        assert (await db.run(q.get_job, "t", jobs["bad"].job_id)).state == JobState.FAILED


async def test_cancel_queued_running_and_finished(fresh_database_url: str) -> None:
    async with open_db(fresh_database_url) as db:
        queued = await submit(db, "t", "q", "q")
        outcome = await db.run(q.cancel_job, "t", queued.job_id)
        assert outcome == q.CancelOutcome(JobState.CANCELLED, changed=True)
        assert await db.run(q.cancel_job, "other-tenant", queued.job_id) is None

        await submit(db, "t", "r", "r")
        [running] = await claim(db)
        assert await db.run(q.cancel_job, "t", running.job_id) == q.CancelOutcome(JobState.RUNNING, True)
        assert (await db.run(q.heartbeat, running.fence, 30.0)).cancel_requested
        assert await db.run(q.cancel_running, running.fence)
        assert await db.run(q.cancel_job, "t", running.job_id) == q.CancelOutcome(JobState.CANCELLED, False)
        # a cancelled job cannot be completed by the worker that was running it
        assert not await db.run(
            functools.partial(q.complete_job, document_hash="h", metadata={}), running.fence
        )


async def test_a_late_old_version_never_overwrites_a_newer_one(fresh_database_url: str) -> None:
    async with open_db(fresh_database_url) as db:
        old = await submit(db, "t", "doc", "version one")
        new = await submit(db, "t", "doc", "version two")
        jobs = {j.job_id: j for j in await claim(db)}
        complete = functools.partial(q.complete_job, document_hash="h", metadata={"v": 1})
        # the newer job (3 chunks) finishes first ...
        await db.run(q.start_chunks, jobs[new.job_id].fence, ["a", "b", "c"])
        await db.run(q.stage_chunks, jobs[new.job_id].fence, [0, 1, 2], ["n0", "n1", "n2"], [VEC] * 3)
        assert await db.run(complete, jobs[new.job_id].fence)
        # ... then the older one (1 chunk): it succeeds, superseded, and leaves the chunks alone
        await db.run(q.start_chunks, jobs[old.job_id].fence, ["z"])
        await db.run(q.stage_chunks, jobs[old.job_id].fence, [0], ["o0"], [VEC])
        assert await db.run(complete, jobs[old.job_id].fence)
        rows = await db.fetch("SELECT content FROM chunks WHERE doc_id = 'doc' ORDER BY chunk_no")
        assert [r["content"] for r in rows] == ["n0", "n1", "n2"]
        assert (await db.run(q.get_job, "t", old.job_id)).last_error_kind == "superseded"
        # a newer, shorter version replaces all chunks: no leftovers from the longer one
        newest = await submit(db, "t", "doc", "version three")
        [job] = await claim(db)
        assert job.job_id == newest.job_id
        await db.run(q.start_chunks, job.fence, ["x"])
        await db.run(q.stage_chunks, job.fence, [0], ["v3"], [VEC])
        assert await db.run(complete, job.fence)
        rows = await db.fetch("SELECT content FROM chunks WHERE doc_id = 'doc' ORDER BY chunk_no")
        assert [r["content"] for r in rows] == ["v3"]
        assert await db.fetchval("SELECT count(*) FROM ingest_chunk_staging") == 0


async def test_reaper_buries_a_job_that_keeps_killing_workers(fresh_database_url: str) -> None:
    async with open_db(fresh_database_url) as db:
        await submit(db, "t", "poison", "x", max_attempts=2)
        for expected in (JobState.QUEUED, JobState.DEAD):
            await claim(db)
            await db.execute("UPDATE ingest_jobs SET lease_expires_at = now() - interval '1 second'")
            [reaped] = await db.run(q.reap_expired)
            assert reaped.state == expected
            assert (reaped.latency is not None) == (expected == JobState.DEAD)  # only a final state has one
        record = (await db.run(functools.partial(q.list_jobs, state=None, limit=10, before_id=None), "t"))[0]
        assert record.last_error_kind == "lease_expired"


async def test_retention_purges_old_finished_jobs_only(fresh_database_url: str) -> None:
    async with open_db(fresh_database_url) as db:
        for i in range(3):
            await submit(db, "t", f"d{i}", f"x{i}")
        jobs = await claim(db)
        await db.run(q.complete_noop_jobs, [j.fence for j in jobs[:2]])
        await db.execute("UPDATE ingest_jobs SET finished_at = now() - interval '2 days' WHERE doc_id = 'd0'")
        assert await db.run(functools.partial(q.purge_finished, older_than=86400.0)) == 1
        assert await db.fetchval("SELECT count(*) FROM ingest_jobs") == 2
        assert await db.fetchval("SELECT count(*) FROM ingest_job_inputs") == 2  # cascaded


async def test_keyset_listing(fresh_database_url: str) -> None:
    async with open_db(fresh_database_url) as db:
        ids = [(await submit(db, "t", f"d{i}", f"x{i}")).job_id for i in range(5)]
        await submit(db, "other", "d", "x")
        list_page = functools.partial(q.list_jobs, state=None, limit=2)
        page1 = await db.run(functools.partial(list_page, before_id=None), "t")
        page2 = await db.run(functools.partial(list_page, before_id=page1[-1].job_id), "t")
        assert [r.job_id for r in page1 + page2] == ids[::-1][:4]
        queued = await db.run(
            functools.partial(q.list_jobs, state=JobState.RUNNING, limit=10, before_id=None), "t"
        )
        assert queued == []


async def test_queue_wait_is_measured_at_a_jobs_first_claim_only(fresh_database_url: str) -> None:
    async with open_db(fresh_database_url) as db:
        await submit(db, "t", "doc", "x")
        await db.execute("UPDATE ingest_jobs SET created_at = now() - interval '30 seconds'")
        [first] = await claim(db)
        assert first.queue_wait is not None and first.queue_wait >= 30
        assert await db.run(q.release_job, first.fence)  # a shutdown: the attempt does not count
        [again] = await claim(db)
        assert again.attempts == 1 and again.queue_wait is None  # waited once, observed once


async def test_queue_depth_counts_running_jobs_whose_lease_expired(fresh_database_url: str) -> None:
    from prometheus_client import CollectorRegistry

    from services.ingest._metrics import WorkerMetrics

    async with open_db(fresh_database_url) as db:
        for doc in ("a", "b", "c"):
            await submit(db, "t", doc, doc)
        [stuck, _] = await claim(db, limit=2)  # t: two running, one queued
        await submit(db, "u", "d", "d")  # u: one queued
        expire = "UPDATE ingest_jobs SET lease_expires_at = now() - interval '1 second' WHERE id = $1"
        await db.execute(expire, stuck.job_id)
        depth = {d.tenant_id: d for d in await db.run(q.queue_depth)}
        assert (depth["t"].queued, depth["t"].running, depth["t"].expired_leases) == (1, 2, 1)
        assert (depth["u"].queued, depth["u"].running, depth["u"].expired_leases) == (1, 0, 0)
        registry = CollectorRegistry()
        metrics = WorkerMetrics(registry)
        metrics.set_depth(depth.values())
        assert registry.get_sample_value("ingest_jobs_expired_leases") == 1
        assert registry.get_sample_value("ingest_queue_depth", {"tenant": "t", "state": "running"}) == 2
        await db.run(q.reap_expired)
        metrics.set_depth(await db.run(q.queue_depth))
        assert registry.get_sample_value("ingest_jobs_expired_leases") == 0

"""The worker in-process against a real PostgreSQL, with fake providers at the edge (the process-level
tests in test_processes.py use the simulator): pipeline, retries, cancel, graceful shutdown."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import floodgate
import pytest
import trio
from prometheus_client import CollectorRegistry
from providers import FetchedDocument

from services.ingest import (
    ChunkingConfig,
    JobPipeline,
    JobState,
    PipelineConfig,
    RetryBackoff,
    Worker,
    WorkerConfig,
)
from services.ingest import _queue as q
from services.ingest._listener import PgListener
from services.ingest._metrics import WorkerMetrics

from ._helpers import open_db, states, submit


class FakeEmbedder:
    def __init__(
        self,
        *,
        block: bool = False,
        fail_status: int | None = None,
        retry_after: float | None = None,
        delay: float = 0.005,
    ) -> None:
        self.block = block
        self.delay = delay
        self.fail_status = fail_status
        self.retry_after = retry_after
        self.calls = 0
        self.in_flight = 0
        self.peak = 0
        self.started = trio.Event()

    async def embed(self, texts: Sequence[str], *, tenant: str, endpoint: str) -> list[list[float]]:
        self.calls += 1
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        self.started.set()
        try:
            if self.block:
                await trio.sleep_forever()
            await trio.sleep(self.delay)
            if self.fail_status is not None:
                raise floodgate.DependencyError(
                    f"HTTP {self.fail_status}",
                    dependency="embed",
                    status=self.fail_status,
                    retry_after=self.retry_after,
                )
            return [[float(len(t) % 7)] + [0.0] * 382 + [1.0] for t in texts]
        finally:
            self.in_flight -= 1


class FakeFetcher:
    async def fetch(self, url: str, *, tenant: str) -> FetchedDocument:
        if "missing" in url:  # the pipeline makes it a bad document (failed, not retried)
            raise floodgate.DependencyError("HTTP 404", dependency="fetch", status=404)
        return FetchedDocument(url=url, title="T", text=f"fetched words of {url} " * 30)


def make_worker(
    db,
    embedder,
    *,
    dsn: str | None = None,
    embed_limit: int = 4,
    metrics: WorkerMetrics | None = None,
    **config,
) -> Worker:
    pipeline = JobPipeline(
        PipelineConfig(
            chunking=ChunkingConfig(chunk_tokens=20, overlap_tokens=5),
            embed_batch_size=4,
            embed_parallelism=2,
        ),
        db=db,
        embedder=embedder,
        fetcher=FakeFetcher(),
        embed_limiter=trio.CapacityLimiter(embed_limit),
    )
    defaults = dict(
        worker_id="w1",
        job_concurrency=4,
        claim_batch=4,
        lease_seconds=5.0,
        poll_interval=0.05,
        reap_interval=0.1,
        shutdown_grace=0.5,
        backoff=RetryBackoff(base=0.02, cap=0.05),
    )
    defaults.update(config)
    listener = (lambda wake, cancel: PgListener(dsn, on_jobs=wake, on_cancel=cancel)) if dsn else None
    return Worker(
        WorkerConfig(**defaults), db=db, runner=pipeline, metrics=metrics, listener_factory=listener
    )


async def wait_for_states(db, expected: dict[str, int], within: float = 10.0) -> None:
    with trio.fail_after(within):
        while (got := await states(db)) != expected:  # noqa: ASYNC110 - polling the database
            await trio.sleep(0.02)
    assert got == expected


async def test_jobs_run_through_the_pipeline(fresh_database_url: str) -> None:
    async with open_db(fresh_database_url) as db:
        text = " ".join(f"word{i}" for i in range(100))  # 100 tokens -> 7 chunks of 20 with overlap 5
        for i in range(6):
            await submit(db, f"t{i % 2}", f"doc{i}", text + f" v{i}", metadata={"n": i})
        await submit(db, "t0", "web", None, source="url", url="https://example.com/a", content_hash="u1")
        await submit(
            db, "t0", "gone", None, source="url", url="https://example.com/missing", content_hash="u2"
        )
        embedder = FakeEmbedder()
        worker = make_worker(db, embedder, embed_limit=3)
        shutdown = trio.Event()
        async with trio.open_nursery() as nursery:
            await nursery.start(functools.partial(worker.run, shutdown=shutdown))
            await wait_for_states(db, {"succeeded": 7, "failed": 1})
            shutdown.set()
        assert embedder.peak <= 3  # the process-wide embed limit holds across jobs
        counts = await db.fetch(
            "SELECT doc_id, count(*) AS n, max(metadata->>'n') AS m FROM chunks GROUP BY doc_id"
        )
        by_doc = {r["doc_id"]: r["n"] for r in counts}
        assert by_doc["doc0"] == 7 and len(by_doc) == 7
        failed = await db.fetchrow(
            "SELECT last_error, last_error_kind FROM ingest_jobs WHERE doc_id = 'gone'"
        )
        assert failed["last_error_kind"] == "permanent" and "404" in failed["last_error"]
        assert worker.statistics().outcomes == {"succeeded": 7, "failed": 1}


async def test_a_finished_job_has_its_submit_to_finish_latency_and_queue_wait(
    fresh_database_url: str,
) -> None:
    """The latencies come from the job rows and the database's clock: jobs submitted "100 s ago"
    (created_at moved back) show at least 100 s, which no clock of the worker's could know."""
    async with open_db(fresh_database_url) as db:
        await submit(db, "t", "good", "some words worth embedding")
        await submit(db, "t", "empty", "   ")  # no text: a bad document, failed at once
        await db.execute("UPDATE ingest_jobs SET created_at = now() - interval '100 seconds'")
        registry = CollectorRegistry()
        worker = make_worker(db, FakeEmbedder(), metrics=WorkerMetrics(registry))
        shutdown = trio.Event()
        async with trio.open_nursery() as nursery:
            await nursery.start(functools.partial(worker.run, shutdown=shutdown))
            await wait_for_states(db, {"succeeded": 1, "failed": 1})
            shutdown.set()
        finished = await db.fetch(
            "SELECT state, extract(epoch FROM finished_at - created_at)::float8 AS took FROM ingest_jobs"
        )

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    for row in finished:  # one sample per final state, the row's own finished_at - created_at
        assert value("ingest_job_latency_seconds_count", outcome=row["state"]) == 1
        assert value("ingest_job_latency_seconds_sum", outcome=row["state"]) == pytest.approx(row["took"])
        assert row["took"] >= 100
    assert value("ingest_job_latency_seconds_count", outcome="dead") is None
    assert value("ingest_queue_wait_seconds_count") == 2
    assert value("ingest_queue_wait_seconds_sum") >= 200
    assert value("ingest_queue_wait_seconds_bucket", le="60.0") == 0


async def test_retryable_errors_retry_then_bury(fresh_database_url: str) -> None:
    async with open_db(fresh_database_url) as db:
        await submit(db, "t", "doc", "some words to embed", max_attempts=3)
        worker = make_worker(db, FakeEmbedder(fail_status=503))
        shutdown = trio.Event()
        async with trio.open_nursery() as nursery:
            await nursery.start(functools.partial(worker.run, shutdown=shutdown))
            await wait_for_states(db, {"dead": 1})
            shutdown.set()
        row = await db.fetchrow("SELECT attempts, last_error FROM ingest_jobs")
        assert row["attempts"] == 3 and "HTTP 503" in row["last_error"]
        assert worker.statistics().outcomes == {"retried": 2, "dead": 1}


@pytest.mark.parametrize(("status", "at_least", "at_most"), [(429, 30.0, 33.0), (503, 0.0, 0.06)])
async def test_a_provider_429_schedules_the_retry_no_earlier_than_its_retry_after(
    fresh_database_url: str, status: int, at_least: float, at_most: float
) -> None:
    # The provider answered "retry after 30 s": the job's next attempt is due in 30 s (plus up to
    # 10 % jitter), not after the worker's own 20-50 ms backoff. A 503 with the same Retry-After
    # is an outage, not the provider's pushback: the backoff decides.
    async with open_db(fresh_database_url) as db:
        await submit(db, "t", "doc", "some words to embed", max_attempts=3)
        worker = make_worker(db, FakeEmbedder(fail_status=status, retry_after=30.0))
        shutdown = trio.Event()
        async with trio.open_nursery() as nursery:
            await nursery.start(functools.partial(worker.run, shutdown=shutdown))
            with trio.fail_after(10):
                while worker.statistics().outcomes.get("retried", 0) < 1:  # noqa: ASYNC110 - polling the worker
                    await trio.sleep(0.01)
            shutdown.set()
        row = await db.fetchrow(
            """SELECT state, attempts, extract(epoch FROM run_at - updated_at)::float8 AS due_in,
                      last_error FROM ingest_jobs"""
        )
        assert f"HTTP {status}" in row["last_error"]
        if status == 429:
            assert (row["state"], row["attempts"]) == ("queued", 1)  # waiting: nothing ran it early
        assert at_least <= row["due_in"] <= at_most


async def test_cancel_a_running_job_by_notify(fresh_database_url: str) -> None:
    """Lease 30 s (heartbeat every 10 s): stopping within a second proves the NOTIFY path."""
    async with open_db(fresh_database_url) as db:
        job = await submit(db, "t", "doc", "words " * 50)
        embedder = FakeEmbedder(block=True)
        worker = make_worker(db, embedder, dsn=fresh_database_url, lease_seconds=30.0)
        shutdown = trio.Event()
        async with trio.open_nursery() as nursery:
            await nursery.start(functools.partial(worker.run, shutdown=shutdown))
            with trio.fail_after(5):
                await embedder.started.wait()
            outcome = await db.run(q.cancel_job, "t", job.job_id)
            assert outcome.state == JobState.RUNNING
            await wait_for_states(db, {"cancelled": 1}, within=1.0)
            shutdown.set()


async def test_cancel_a_running_job_by_heartbeat(fresh_database_url: str) -> None:
    """No listener (as behind a transaction pooler): the next heartbeat carries the request."""
    async with open_db(fresh_database_url) as db:
        job = await submit(db, "t", "doc", "words " * 50)
        embedder = FakeEmbedder(block=True)
        worker = make_worker(db, embedder, lease_seconds=0.9)
        shutdown = trio.Event()
        async with trio.open_nursery() as nursery:
            await nursery.start(functools.partial(worker.run, shutdown=shutdown))
            with trio.fail_after(5):
                await embedder.started.wait()
            await db.run(q.cancel_job, "t", job.job_id)
            await wait_for_states(db, {"cancelled": 1}, within=1.5)
            shutdown.set()


async def test_graceful_shutdown_lets_running_jobs_finish_within_the_grace(fresh_database_url: str) -> None:
    async with open_db(fresh_database_url) as db:
        for i in range(2):
            await submit(db, "t", f"doc{i}", "words " * 50)
        worker = make_worker(db, FakeEmbedder(delay=0.3), shutdown_grace=5.0)
        shutdown = trio.Event()
        async with trio.open_nursery() as nursery:
            await nursery.start(functools.partial(worker.run, shutdown=shutdown))
            await wait_for_states(db, {"running": 2})
            shutdown.set()  # the run returns only once the worker has drained
        assert await states(db) == {"succeeded": 2}
        assert worker.statistics().outcomes == {"succeeded": 2}


async def test_graceful_shutdown_releases_jobs_still_running_after_the_grace(fresh_database_url: str) -> None:
    async with open_db(fresh_database_url) as db:
        for i in range(3):
            await submit(db, "t", f"doc{i}", "words " * 50)
        embedder = FakeEmbedder(block=True)
        worker = make_worker(db, embedder, shutdown_grace=0.2)
        shutdown = trio.Event()
        async with trio.open_nursery() as nursery:
            await nursery.start(functools.partial(worker.run, shutdown=shutdown))
            await wait_for_states(db, {"running": 3})
            shutdown.set()
            with trio.fail_after(3):
                while worker.statistics().running:  # noqa: ASYNC110 - a test watching a counter
                    await trio.sleep(0.01)
        rows = await db.fetch("SELECT state, attempts, lease_token FROM ingest_jobs")
        assert [(r["state"], r["attempts"], r["lease_token"]) for r in rows] == [("queued", 0, None)] * 3
        assert worker.statistics().outcomes == {"released": 3}


class FailingClaims:
    """The worker's db, with its first ``n`` claims raising ``error`` (other calls go through)."""

    def __init__(self, db, error: BaseException, n: int) -> None:
        self._db = db
        self._error = error
        self.left = n

    async def run(self, fn, /, *args):
        if getattr(fn, "__name__", "") == "_claim" and self.left > 0:
            self.left -= 1
            raise self._error
        return await self._db.run(fn, *args)


async def test_an_unexpected_claim_error_does_not_stop_the_claim_loop(fresh_database_url: str) -> None:
    # Such an error once ended the claim loop and with it the worker process (asyncpg's
    # InternalClientError during a PostgreSQL restart, before it was known as transient). An error of a
    # kind no list knows is logged and the claim retried.
    async with open_db(fresh_database_url) as db:
        await submit(db, "t", "doc1", "some words to embed")
        await submit(db, "t", "doc2", "other words to embed")
        failing = FailingClaims(db, RuntimeError("an error no one foresaw"), 2)
        worker = make_worker(failing, FakeEmbedder())
        shutdown = trio.Event()
        async with trio.open_nursery() as nursery:
            await nursery.start(functools.partial(worker.run, shutdown=shutdown))
            await wait_for_states(db, {"succeeded": 2})
            shutdown.set()
        assert failing.left == 0
        stats = worker.statistics()
        assert stats.claim_errors == 2 and stats.outcomes == {"succeeded": 2}

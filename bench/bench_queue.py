#!/usr/bin/env python
"""Benchmark: Floodgate's job queue vs pgqueuer and procrastinate on one PostgreSQL, in alternating rounds.

Two figures per system, in each of ``--rounds`` rounds, on the same embedded PostgreSQL 18 (a fresh
database each run):

* **throughput** — a queue pre-filled with 20,000 no-op jobs, drained by N workers in one process
  (claim + complete; each system's own worker loop, tuned as its docs suggest); jobs per second.
  Same PostgreSQL, same worker count and batch size for every system. Each child first drains an
  untimed warm-up queue (``--warmup-jobs``) with its own connections, then the timed queue with
  connections opened before the clock starts. The systems run in turn, the order reversed every
  other round (the machine is shared; procrastinate, far slower, runs in the first round only); the
  load average after each run and the per-round ratios are printed with it.
* **pickup latency** — jobs submitted one by one at a low steady rate into an idle, listening worker;
  the time from submit to the handler starting, p50 and p99; in every round after the throughput
  runs, in the same alternating order (procrastinate again in the first round only).

Floodgate runs the way the service runs it: trio, the toolkit's asyncpg pool through trio-asyncio, the
real ``Worker`` (per-job task, lease keeper, claim loop with LISTEN/NOTIFY), the real claim SQL. Its
no-op handler hands completions to a small batcher (one fenced UPDATE per flush) and returns, as
pgqueuer's buffered acknowledgements do (``--ack awaited`` makes it wait for the write). The drain
is timed until every completion is written. The peers are installed into ``bench/.venv-peers`` (pinned below) and run
there, each in its own child process; every child prints one JSON line.

Per round, T = floodgate's jobs/s over the best peer's in that round (the best peer: the highest
median), and L = floodgate's pickup p50. Each target is judged on its median and spread over the
rounds (bench/_rounds.py: met, missed, or straddles when the spread crosses the target).

Last line: ``{"throughput_ratio_vs_best_peer": T, "pickup_p50_ms": L, "jobs_per_s": J, "..._spread":
[q1, q3], "..._range": [min, max], "verdicts": {...}, "rounds": N, ...}`` (T, L, J: medians).
Targets: T >= 1.0 (stretch 1.5, reported but not in ``verdicts``), L <= 20.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# (stdlib only: the peers' venv imports it too)
from _rounds import Target, alternating, json_fields, judge, percentile

REPO = Path(__file__).resolve().parent.parent
PEERS_VENV = REPO / "bench" / ".venv-peers"
PEER_PINS = ["pgqueuer==1.6.0", "procrastinate==3.10.0", "asyncpg==0.32.0"]
SYSTEMS = ("floodgate", "pgqueuer", "procrastinate")
THROUGHPUT_RATIO = Target("throughput_ratio_vs_best_peer", ">=", 1.0, digits=2)
THROUGHPUT_STRETCH = Target("throughput_ratio_vs_best_peer", ">=", 1.5, digits=2)
PICKUP_P50 = Target("pickup_p50_ms", "<=", 20, unit="ms", digits=2)


def latency_summary(latencies_s: list[float]) -> dict[str, float]:
    ms = [x * 1000 for x in latencies_s]
    return {
        "pickup_p50_ms": round(percentile(ms, 50), 2),
        "pickup_p99_ms": round(percentile(ms, 99), 2),
        "pickup_max_ms": round(max(ms), 2),
    }


# ---------------------------------------------------------------------------------------------------
# Floodgate (child, project venv)
# ---------------------------------------------------------------------------------------------------


def child_floodgate(args: argparse.Namespace) -> dict:
    import functools

    import chassis
    import floodgate
    import trio
    import trio_asyncio

    from cluster.migrate import apply_migrations
    from services.ingest import Worker, WorkerConfig
    from services.ingest import _queue as q
    from services.ingest._db import release_without_session_reset
    from services.ingest._listener import PgListener

    chassis.configure_logging(service="bench", log_format="json", level="warning")

    class BatchCompleter:
        """Completions of no-op jobs, flushed together: one fenced UPDATE per flush of up to
        ``max_batch`` jobs, several flushes in flight at once (bounded by ``parallel``).

        ``awaited``: the handler returns once its completion is written. Otherwise (the default,
        as pgqueuer's buffered acknowledgements) it returns at once and the flush follows within
        ``interval``; a crash in between only means the lease expires and the job runs again."""

        def __init__(
            self,
            pool: floodgate.PgPool,
            *,
            max_batch: int = 128,
            interval: float = 0.005,
            parallel: int = 4,
            awaited: bool = False,
            on_flushed=None,
        ) -> None:
            self._pool, self._max, self._interval = pool, max_batch, interval
            self._limiter = trio.CapacityLimiter(parallel)
            self._pending: list[q.Fence] = []
            self._flushed = trio.Event()
            self._kick = trio.Event()
            self._awaited = awaited
            self._on_flushed = on_flushed or (lambda n: None)

        async def complete(self, fence: q.Fence) -> None:
            flushed = self._flushed
            self._pending.append(fence)
            if len(self._pending) >= self._max:
                self._kick.set()
            if self._awaited:
                await flushed.wait()

        async def _flush(self, batch: list[q.Fence], flushed: trio.Event) -> None:
            async with self._limiter:
                written = await self._pool.run(q.complete_noop_jobs, batch)
            flushed.set()
            self._on_flushed(written)

        async def run(self) -> None:
            async with trio.open_nursery() as nursery:
                while True:
                    with trio.move_on_after(self._interval):
                        await self._kick.wait()
                    self._kick = trio.Event()
                    if self._pending:
                        batch, self._pending = self._pending, []
                        flushed, self._flushed = self._flushed, trio.Event()
                        nursery.start_soon(self._flush, batch, flushed)

    async def throughput(pool: floodgate.PgPool, jobs: int) -> float:
        await pool.execute(
            """WITH job AS (
                   INSERT INTO ingest_jobs (tenant_id, doc_id, content_hash, source)
                   SELECT 'bench', 'd' || g, 'h' || g, 'text' FROM generate_series(1, $1) g RETURNING id)
               INSERT INTO ingest_job_inputs (job_id, text) SELECT id, 'x' FROM job""",
            jobs,
        )
        await pool.execute("VACUUM ANALYZE ingest_jobs")
        done = 0
        drained = trio.Event()

        def flushed(written: int) -> None:
            nonlocal done
            done += written
            if done == jobs:
                drained.set()

        completer = BatchCompleter(pool, awaited=args.ack == "awaited", on_flushed=flushed)

        async def noop(job: q.ClaimedJob) -> None:
            await completer.complete(job.fence)

        batch = args.batch
        workers = [
            Worker(
                WorkerConfig(
                    worker_id=f"bench-{i}",
                    job_concurrency=4 * batch,
                    claim_batch=batch,
                    min_claim=batch,
                    lease_seconds=60,
                    tenant_running_cap=None,
                    poll_interval=0.05,
                ),
                db=pool,
                runner=noop,
            )
            for i in range(args.workers)
        ]
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(completer.run)
            started, cpu, calls = time.perf_counter(), time.process_time(), pool.statistics().crossings_total
            for worker in workers:
                await nursery.start(functools.partial(worker.run, shutdown=stop))
            await drained.wait()
            elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
            stop.set()
            with trio.fail_after(30):
                while any(w.statistics().running for w in workers):  # noqa: ASYNC110 - a benchmark watching counters
                    await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
        assert await pool.fetchval("SELECT count(*) FROM ingest_jobs WHERE state = 'succeeded'") == jobs
        await pool.execute("DELETE FROM ingest_jobs")  # a later drain starts from an empty table again
        result["client_cpu_us_per_job"] = round(cpu / jobs * 1e6, 1)
        result["db_calls_per_1000_jobs"] = round((pool.statistics().crossings_total - calls) * 1000 / jobs, 1)
        return jobs / elapsed

    async def pickup(pool: floodgate.PgPool) -> list[float]:
        latencies: list[float] = []
        all_seen = trio.Event()

        async def record(job: q.ClaimedJob) -> None:
            latencies.append(time.time() - job.metadata["t"])
            await pool.run(q.complete_noop_jobs, [job.fence])
            if len(latencies) == args.latency_jobs:
                all_seen.set()

        worker = Worker(
            WorkerConfig(
                worker_id="bench-latency",
                job_concurrency=16,
                claim_batch=8,
                tenant_running_cap=4,
                poll_interval=1.0,
            ),
            db=pool,
            runner=record,
            listener_factory=lambda wake, cancel: PgListener(args.dsn, on_jobs=wake, on_cancel=cancel),
        )
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            await nursery.start(functools.partial(worker.run, shutdown=stop))
            await trio.sleep(0.5)  # the listener connects
            for i in range(args.latency_jobs):
                submit = functools.partial(
                    q.submit_job,
                    tenant=f"t{i % 4}",
                    doc_id=f"lat{i}",
                    content_hash=f"h{i}",
                    source="text",
                    text="x",
                    url=None,
                    metadata={"t": time.time()},
                    priority=100,
                    max_attempts=3,
                    idempotency_key=None,
                    max_queued=1_000_000,
                )
                await pool.run(submit)
                await trio.sleep(1 / args.rate)
            with trio.fail_after(30):
                await all_seen.wait()
            stop.set()
        return latencies

    result: dict = {}

    async def main() -> None:
        async with trio_asyncio.open_loop():
            await trio_asyncio.aio_as_trio(apply_migrations)(args.dsn)
            size = args.workers * 2 + 4
            # The service's pool settings (no session reset on release, see services/ingest/_db.py).
            # Every connection is opened before the clock starts, as the peers' are.
            open_pool = functools.partial(
                floodgate.open_pg_pool,
                args.dsn,
                min_size=size,
                max_size=size,
                max_waiters=100_000,
                max_wait=60.0,
                reset=release_without_session_reset,
            )
            if args.phase == "throughput":
                if args.warmup_jobs:
                    # Warms the server and this process, not the timed pool's connections (as for the peers).
                    async with open_pool() as warm:
                        await throughput(warm, args.warmup_jobs)
                async with open_pool() as pool:
                    result["jobs_per_s"] = round(await throughput(pool, args.jobs), 1)
            else:
                async with open_pool() as pool:
                    result.update(latency_summary(await pickup(pool)))

    trio.run(main)
    return result


# ---------------------------------------------------------------------------------------------------
# pgqueuer (child, peers venv)
# ---------------------------------------------------------------------------------------------------


def child_pgqueuer(args: argparse.Namespace) -> dict:
    import asyncio
    import logging

    import asyncpg
    from pgqueuer import AsyncpgDriver, Queries, QueueManager
    from pgqueuer.types import QueueExecutionMode

    logging.getLogger("pgqueuer").setLevel(logging.WARNING)

    result: dict = {}

    async def main() -> dict:
        conn = await asyncpg.connect(args.dsn)
        queries = Queries(AsyncpgDriver(conn))
        await queries.install()
        done = 0

        async def make_manager(handler) -> tuple[QueueManager, asyncpg.Connection]:
            c = await asyncpg.connect(args.dsn)
            qm = QueueManager(Queries(AsyncpgDriver(c)))
            qm.entrypoint("noop")(handler)
            return qm, c

        if args.phase == "latency":
            latencies: list[float] = []
            all_seen = asyncio.Event()

            async def record(job) -> None:
                latencies.append(time.time() - float(job.payload.decode()))
                if len(latencies) == args.latency_jobs:
                    all_seen.set()

            qm, c = await make_manager(record)
            task = asyncio.create_task(qm.run(batch_size=8))
            await asyncio.sleep(0.5)
            for _ in range(args.latency_jobs):
                await queries.enqueue("noop", str(time.time()).encode())
                await asyncio.sleep(1 / args.rate)
            await asyncio.wait_for(all_seen.wait(), 30)
            qm.shutdown.set()
            await asyncio.wait_for(task, 30)
            await c.close()
            await conn.close()
            return latency_summary(latencies)

        async def noop(job) -> None:
            nonlocal done
            done += 1

        async def drain(jobs: int) -> float:
            nonlocal done
            done = 0
            for start in range(0, jobs, 1000):
                n = min(1000, jobs - start)
                await queries.enqueue(["noop"] * n, [None] * n, [0] * n)
            await conn.execute("VACUUM ANALYZE")
            # Connected before the clock starts (floodgate's pool is opened in full likewise).
            managers = [await make_manager(noop) for _ in range(args.workers)]
            started, cpu = time.perf_counter(), time.process_time()
            await asyncio.gather(
                *(qm.run(batch_size=args.batch, mode=QueueExecutionMode.drain) for qm, _ in managers)
            )
            elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
            assert done == jobs, done
            for _, c in managers:
                await c.close()
            result["client_cpu_us_per_job"] = round(cpu / jobs * 1e6, 1)
            return jobs / elapsed

        if args.warmup_jobs:
            await drain(args.warmup_jobs)
        jobs_per_s = await drain(args.jobs)
        await conn.close()
        return {"jobs_per_s": round(jobs_per_s, 1), **result}

    return asyncio.run(main())


# ---------------------------------------------------------------------------------------------------
# procrastinate (child, peers venv)
# ---------------------------------------------------------------------------------------------------


def child_procrastinate(args: argparse.Namespace) -> dict:
    import asyncio
    import logging

    from procrastinate import App, PsycopgConnector

    logging.getLogger("procrastinate").setLevel(logging.WARNING)

    async def main() -> dict:
        app = App(
            connector=PsycopgConnector(conninfo=args.dsn, min_size=2, max_size=args.workers * args.batch + 4)
        )
        done = 0
        latencies: list[float] = []
        all_seen = asyncio.Event()

        @app.task(name="noop", queue="bench")
        async def noop(t: float | None = None) -> None:
            nonlocal done
            done += 1
            if t is not None:
                latencies.append(time.time() - t)
                if len(latencies) == args.latency_jobs:
                    all_seen.set()

        async with app.open_async():
            await app.schema_manager.apply_schema_async()
            if args.phase == "latency":
                task = asyncio.create_task(
                    app.run_worker_async(
                        queues=["bench"],
                        concurrency=8,
                        wait=True,
                        install_signal_handlers=False,
                        name="latency",
                    )
                )
                await asyncio.sleep(0.5)
                for _ in range(args.latency_jobs):
                    await noop.defer_async(t=time.time())
                    await asyncio.sleep(1 / args.rate)
                await asyncio.wait_for(all_seen.wait(), 30)
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    pass
                return latency_summary(latencies)

            async def drain(jobs: int) -> float:
                nonlocal done
                done = 0
                for start in range(0, jobs, 1000):
                    await noop.batch_defer_async(*[{} for _ in range(min(1000, jobs - start))])
                started = time.perf_counter()
                await asyncio.gather(
                    *(
                        app.run_worker_async(
                            queues=["bench"],
                            concurrency=args.batch,
                            wait=False,
                            install_signal_handlers=False,
                            name=f"w{i}",
                        )
                        for i in range(args.workers)
                    )
                )
                elapsed = time.perf_counter() - started
                assert done == jobs, done
                return jobs / elapsed

            if args.warmup_jobs:
                await drain(args.warmup_jobs)
            jobs_per_s = await drain(args.jobs)
        return {"jobs_per_s": round(jobs_per_s, 1)}

    return asyncio.run(main())


# ---------------------------------------------------------------------------------------------------
# Orchestrator (project venv)
# ---------------------------------------------------------------------------------------------------


def ensure_peers_venv() -> Path:
    python = PEERS_VENV / "bin" / "python"
    stamp = PEERS_VENV / ".installed"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(PEERS_VENV)], check=True)
    if not stamp.exists() or stamp.read_text() != "\n".join(PEER_PINS):
        print(f"bench-queue: installing {' '.join(PEER_PINS)} into {PEERS_VENV}", file=sys.stderr)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", *PEER_PINS], check=True)
        stamp.write_text("\n".join(PEER_PINS))
    return python


def start_postgres(root: Path):
    sys.path.insert(0, str(REPO))
    from harness.postgres import PostgresServer

    # Same server and settings for every system. Durability is relaxed (a benchmark box, not data we
    # keep): commits do not wait for the disk, so figures measure the queues, not this machine's fsync.
    server = PostgresServer(
        root / "data",
        settings={"synchronous_commit": "off", "max_connections": "200", "shared_buffers": "256MB"},
        log=root / "postgres.log",
    )
    server.start()
    return server


def orchestrate(args: argparse.Namespace) -> None:
    peers_python = ensure_peers_venv()
    root = Path(tempfile.mkdtemp(prefix="bench-queue-"))
    server = start_postgres(root)
    pg = server.pg
    runs: dict[str, list[float]] = {s: [] for s in args.systems}
    loads: dict[str, list[float]] = {s: [] for s in args.systems}
    pickups: dict[str, list[dict]] = {s: [] for s in args.systems}

    def child(system: str, phase: str, n: int) -> dict:
        database = f"bench_{system}_{phase}_{n}"
        subprocess.run(pg.psql_command(f"CREATE DATABASE {database}"), check=True)
        python = sys.executable if system == "floodgate" else str(peers_python)
        cmd = [
            python,
            __file__,
            "--child",
            system,
            "--phase",
            phase,
            "--dsn",
            pg.dsn(database),
            "--jobs",
            str(args.jobs),
            "--workers",
            str(args.workers),
            "--batch",
            str(args.batch),
            "--latency-jobs",
            str(args.latency_jobs),
            "--rate",
            str(args.rate),
            "--ack",
            args.ack,
            "--warmup-jobs",
            str(args.warmup_jobs),
        ]
        print(f"bench-queue: {system} {phase} #{n + 1} ...", file=sys.stderr, flush=True)
        out = subprocess.run(
            cmd, capture_output=True, text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}
        )
        if out.returncode != 0:
            raise SystemExit(f"bench-queue: {system} failed:\n{out.stderr[-4000:]}")
        subprocess.run(pg.psql_command(f"DROP DATABASE {database}"), check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])

    try:
        # Alternating rounds, the median per system: the machine is shared, so every system gets the
        # same spread of quiet and busy moments, and the order reverses every other round so that no
        # system always runs right after another's load. procrastinate is far slower; one round
        # places it.
        for n in range(args.rounds):
            systems = [s for s in alternating(args.systems, n) if s != "procrastinate" or n == 0]
            for system in systems:
                runs[system].append(child(system, "throughput", n)["jobs_per_s"])
                loads[system].append(os.getloadavg()[0])
            for system in systems:
                pickups[system].append(child(system, "latency", n))
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
    report(args, runs, loads, pickups)


def report(
    args: argparse.Namespace,
    runs: dict[str, list[float]],
    loads: dict[str, list[float]],
    pickups: dict[str, list[dict]],
) -> None:
    """The table, a line per target and the JSON line, from every round's jobs/s and pickup figures."""
    print(
        f"\n{args.jobs} no-op jobs after a {args.warmup_jobs}-job warm-up, {args.workers} workers per system, "
        f"batch/concurrency {args.batch}, {args.rounds} alternating rounds (medians); "
        f"pickup at {args.rate}/s x {args.latency_jobs} per round"
    )
    print(
        f"{'system':<15}{'jobs/s':>10}  {'(all runs)':<44}{'pickup p50 ms':>14}{'p99 ms':>9}{'max ms':>9}"
        "  (pickup p50 per round)"
    )
    for system in args.systems:
        all_runs = ", ".join(f"{x:.0f}" for x in runs[system])
        p50s = [p["pickup_p50_ms"] for p in pickups[system]]
        print(
            f"{system:<15}{statistics.median(runs[system]):>10.0f}  {'(' + all_runs + ')':<44}"
            f"{statistics.median(p50s):>14.2f}"
            f"{statistics.median(p['pickup_p99_ms'] for p in pickups[system]):>9.2f}"
            f"{max(p['pickup_max_ms'] for p in pickups[system]):>9.2f}"
            f"  ({', '.join(f'{x:.2f}' for x in p50s)})"
        )
    print(
        "load average (1 min) after each run: "
        + "; ".join(f"{s} " + ", ".join(f"{x:.1f}" for x in loads[s]) for s in args.systems)
    )
    results = []
    stretch = None
    peers = [s for s in args.systems if s != "floodgate"]
    if "floodgate" in args.systems and peers:
        best = max(peers, key=lambda s: statistics.median(runs[s]))
        if len(runs[best]) == len(runs["floodgate"]):
            ratios = [f / p for f, p in zip(runs["floodgate"], runs[best], strict=True)]
        else:  # a peer run in the first round only: each round against its one figure
            ratios = [f / statistics.median(runs[best]) for f in runs["floodgate"]]
        print(f"per-round ratio floodgate / {best} (the best peer): " + ", ".join(f"{x:.2f}" for x in ratios))
        results.append(judge(THROUGHPUT_RATIO, ratios))
        stretch = judge(THROUGHPUT_STRETCH, ratios)
    if "floodgate" in args.systems:
        results.append(judge(PICKUP_P50, [p["pickup_p50_ms"] for p in pickups["floodgate"]]))
    for result in results:
        print(result.line())
    if stretch is not None:
        print(f"stretch: {stretch.line()}")
    fields: dict = {"throughput_ratio_vs_best_peer": None, "pickup_p50_ms": None}
    fields.update(json_fields(results))
    fields["jobs_per_s"] = statistics.median(runs["floodgate"]) if "floodgate" in args.systems else None
    print(json.dumps({**fields, "rounds": args.rounds, "load_average": round(os.getloadavg()[0], 2)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", choices=SYSTEMS)
    parser.add_argument("--phase", choices=("throughput", "latency"), default="throughput")
    parser.add_argument(
        "--ack",
        choices=("buffered", "awaited"),
        default="buffered",
        help="floodgate's no-op handler: return before (as pgqueuer) or after its completion is written",
    )
    parser.add_argument(
        "--rounds", type=int, default=5, help="alternating rounds (median and spread reported)"
    )
    parser.add_argument(
        "--warmup-jobs",
        type=int,
        default=2000,
        help="an untimed drain before the timed one, in the same process, for every system",
    )
    parser.add_argument("--dsn")
    parser.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=SYSTEMS)
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=4, help="worker loops per system, one process")
    parser.add_argument(
        "--batch",
        type=int,
        default=64,
        help="jobs per claim (floodgate, pgqueuer) / concurrency per worker (procrastinate)",
    )
    parser.add_argument("--latency-jobs", type=int, default=200)
    parser.add_argument("--rate", type=float, default=40.0, help="jobs per second for the pickup test")
    args = parser.parse_args()
    if args.child:
        run = {"floodgate": child_floodgate, "pgqueuer": child_pgqueuer, "procrastinate": child_procrastinate}
        print(json.dumps(run[args.child](args)))
    else:
        orchestrate(args)


if __name__ == "__main__":
    main()

"""The ingest worker: claims jobs, runs each in a nursery under a lease it keeps extending, settles it.

Shape of a worker process::

    Worker.run
     ├── listener        LISTEN ingest_jobs / ingest_cancel (optional; polling covers its absence)
     ├── maintenance     reap expired leases, delete finished jobs past retention, queue metrics
     └── jobs nursery    one task per running job (at most job_concurrency)
          └── job        pipeline in a cancel scope  +  lease keeper (heartbeats; stops the job when
                         the lease is lost or a cancel is requested)

Shutdown: stop claiming, give running jobs ``shutdown_grace`` seconds to finish, then stop the rest and
release them (back to queued at once, the attempt not counted). Every settling write is shielded and
bounded: a job whose write cannot be made is recovered by the lease reaper of any worker.
"""

from __future__ import annotations

import enum
import functools
import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TypeVar

import structlog
import trio
from floodgate import is_transient_pg_error

from . import _queue as q
from ._db import Database
from ._errors import FailureKind, LeaseLost, classify_failure, primary_error, provider_retry_after
from ._metrics import WorkerMetrics
from ._pipeline import JobPipeline
from ._states import JobState, Transition, TransitionRefused
from ._timing import ClaimPacer, LeaseClock, RetryBackoff

__all__ = ["JobRunner", "StopReason", "Worker", "WorkerConfig", "WorkerStatistics", "keep_leases"]

log = structlog.get_logger("ingest.worker")


@dataclass(frozen=True)
class WorkerConfig:
    worker_id: str
    job_concurrency: int = 8
    claim_batch: int = 8
    # Claim only once this many slots are free (1: at once). Raising it batches claims when jobs
    # are very short (each claim is one transaction, whatever its size).
    min_claim: int = 1
    lease_seconds: float = 15.0
    tenant_running_cap: int | None = 4  # per tenant, across all workers; None = no cap
    # a tenant's own cap in place of tenant_running_cap (the budget's [tenants]; None = no cap)
    tenant_running_caps: Mapping[str, int | None] = field(default_factory=lambda: MappingProxyType({}))
    poll_interval: float = 1.0
    shutdown_grace: float = 10.0
    backoff: RetryBackoff = field(default_factory=RetryBackoff)
    reap_interval: float = 2.0
    maintenance_interval: float = 15.0
    retention_seconds: float = 7 * 86400.0
    settle_timeout: float = 5.0  # bound on the final write of an attempt (retried while it lasts)
    claim_timeout: float = 10.0

    def __post_init__(self) -> None:
        if self.job_concurrency < 1 or self.claim_batch < 1:
            raise ValueError("job_concurrency and claim_batch must be >= 1")
        if not 1 <= self.min_claim <= min(self.claim_batch, self.job_concurrency):
            raise ValueError("min_claim must be between 1 and min(claim_batch, job_concurrency)")
        for cap in (self.tenant_running_cap, *self.tenant_running_caps.values()):
            if cap is not None and cap < 1:
                raise ValueError("tenant_running_cap(s) must be >= 1 (or None for no cap)")


class StopReason(enum.Enum):
    CANCEL_REQUESTED = "cancel_requested"
    SHUTDOWN = "shutdown"
    LEASE_LOST = "lease_lost"


@dataclass(frozen=True)
class WorkerStatistics:
    running: int
    claimed: int
    outcomes: dict[str, int]
    refused: int
    claim_errors: int
    reaped: int


@dataclass
class _RunningJob:
    job: q.ClaimedJob
    lease: LeaseClock
    started_at: float
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    stop_reason: StopReason | None = None

    def stop(self, reason: StopReason) -> None:
        """First reason wins: a job stopped for shutdown is released even if a cancel arrives after."""
        if self.stop_reason is None:
            self.stop_reason = reason
        self.scope.cancel()


#: The work of one job. It returns the job's latency from submission (`_queue.Settled.latency`) when
#: it finished the job itself (the pipeline's completion does), else None (nothing is observed).
JobRunner = Callable[[q.ClaimedJob], Awaitable[float | None]]
K = TypeVar("K")


async def keep_leases(
    leases: Callable[[], Mapping[K, LeaseClock]],
    send_heartbeats: Callable[[list[K]], Awaitable[Mapping[K, q.Heartbeat]]],
    stop: Callable[[K, StopReason], None],
    *,
    idle: Callable[[], Awaitable[object]],
    is_transient: Callable[[BaseException], bool] = is_transient_pg_error,
) -> None:
    """Keep every running job's lease extended, with one heartbeat statement for all that are due.

    ``leases()`` is the live view of the jobs to keep (job -> its LeaseClock); ``idle()`` returns when
    there may be new ones. A heartbeat covers every lease due within half an interval, so a worker
    sends one statement per interval, not one per job. A job is stopped (``stop``) when the database
    says its lease is gone or a cancel was requested, and when its own clock says the lease ran out
    without a successful extension (the database unreachable) — by then another worker may have
    reclaimed it. A failed heartbeat is retried a quarter interval later.
    """
    while True:
        current = dict(leases())
        if not current:
            await idle()
            continue
        now = trio.current_time()
        for key, lease in current.items():
            if lease.lost(now):
                stop(key, StopReason.LEASE_LOST)
        current = {k: v for k, v in current.items() if not v.lost(now)}
        if not current:
            continue
        due = min(lease.next_heartbeat_at() for lease in current.values())
        if now < due:
            await trio.sleep_until(due)
            continue
        window = min(lease.interval for lease in current.values()) / 2
        batch = [k for k, lease in current.items() if lease.next_heartbeat_at() <= now + window]
        expiry = min(current[k].expires_at for k in batch)
        try:
            with trio.fail_after(max(expiry - now, 0.001)):
                beats = await send_heartbeats(batch)
        except Exception as exc:
            if not (isinstance(exc, trio.TooSlowError) or is_transient(exc)):
                raise
            log.info("heartbeat_failed", jobs=len(batch), error=f"{type(exc).__name__}: {exc}")
            failed_at = trio.current_time()
            for key in batch:
                current[key].heartbeat_failed(failed_at)
            continue
        for key in batch:
            beat = beats.get(key)
            if beat is None or not beat.alive:
                stop(key, StopReason.LEASE_LOST)
                continue
            current[key].extended(sent_at=now)
            if beat.cancel_requested:
                stop(key, StopReason.CANCEL_REQUESTED)


class _JobLog:
    """A job's logger, bound on first use: a successful no-op job at warning level logs nothing, and
    binding costs more than the rest of its bookkeeping."""

    __slots__ = ("_bound", "_fields")

    def __init__(self, **fields: object) -> None:
        self._fields = fields
        self._bound: structlog.typing.FilteringBoundLogger | None = None

    def __getattr__(self, name: str) -> object:
        if self._bound is None:
            self._bound = log.bind(**self._fields)
        return getattr(self._bound, name)


class Worker:
    """Runs ingest jobs from the queue. ``runner`` is the per-job work (the pipeline's ``run``)."""

    def __init__(
        self,
        config: WorkerConfig,
        *,
        db: Database,
        runner: JobRunner | JobPipeline,
        metrics: WorkerMetrics | None = None,
        listener_factory: Callable[[Callable[[], None], Callable[[int], None]], object] | None = None,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.config = config
        self._db = db
        self._runner: JobRunner = runner.run if isinstance(runner, JobPipeline) else runner
        self._metrics = metrics
        self._listener = listener_factory(self.wake, self.cancel_local) if listener_factory else None
        self._rng = rng
        self._running: dict[int, _RunningJob] = {}
        self._wake = trio.Event()
        self._claiming = False
        self._claimed = 0
        self._outcomes: dict[str, int] = {}
        self._refused = 0
        self._claim_errors = 0
        self._reaped = 0
        self._idle = trio.Event()
        self._idle.set()
        self._job_started = trio.Event()
        # Whether each success is logged, decided once per run: asking the lazy module logger costs
        # more than the rest of a no-op job's bookkeeping.
        self._log_successes = True

    # -- signals from outside (listener callbacks, tests) -------------------------------------------

    def wake(self) -> None:
        """Claim now (a job was inserted or released)."""
        self._wake.set()

    def cancel_local(self, job_id: int) -> None:
        """A cancel was requested for ``job_id``; stop it here if this worker runs it."""
        running = self._running.get(job_id)
        if running is not None:
            running.stop(StopReason.CANCEL_REQUESTED)

    def statistics(self) -> WorkerStatistics:
        return WorkerStatistics(
            running=len(self._running),
            claimed=self._claimed,
            outcomes=dict(self._outcomes),
            refused=self._refused,
            claim_errors=self._claim_errors,
            reaped=self._reaped,
        )

    def __repr__(self) -> str:
        return f"<Worker {self.config.worker_id} running={len(self._running)} claimed={self._claimed}>"

    @property
    def accepting(self) -> bool:
        return self._claiming

    # -- the process ------------------------------------------------------------------------------

    async def run(
        self, *, shutdown: trio.Event, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        self._log_successes = log.is_enabled_for(logging.INFO)
        async with trio.open_nursery() as services:
            if self._listener is not None:
                await services.start(self._listener.run)
            services.start_soon(self._maintenance_loop)
            services.start_soon(self._lease_keeper)
            services.start_soon(self._wake_on, shutdown)
            async with trio.open_nursery() as jobs:
                self._claiming = True
                task_status.started()
                await self._claim_loop(jobs, shutdown)
                self._claiming = False
                log.info("claiming_stopped", running=len(self._running))
                with trio.move_on_after(self.config.shutdown_grace):
                    await self._idle.wait()
                for running in list(self._running.values()):
                    running.stop(StopReason.SHUTDOWN)
            services.cancel_scope.cancel()
        log.info("worker_stopped", **self.statistics().outcomes)

    async def _wake_on(self, event: trio.Event) -> None:
        await event.wait()
        self._wake.set()

    async def _claim_loop(self, jobs: trio.Nursery, shutdown: trio.Event) -> None:
        pacer = ClaimPacer(poll_interval=self.config.poll_interval)
        cfg = self.config
        while not shutdown.is_set():
            free = cfg.job_concurrency - len(self._running)
            self._wake = trio.Event()  # armed before the claim: a NOTIFY during it is not lost
            if shutdown.is_set():
                break
            if free < cfg.min_claim:
                await self._wake.wait()  # set when a job ends (or shutdown)
                continue
            asked = min(free, cfg.claim_batch)
            sent_at = trio.current_time()
            try:
                with trio.fail_after(cfg.claim_timeout):
                    claimed = await self._db.run(_claim, cfg, asked)
                delay = pacer.after_claim(claimed=len(claimed), asked=asked)
            except Exception as exc:
                # An error not known as transient is logged with its traceback and retried with the
                # same backoff; it does not end the claim loop. Ending it ended the whole worker process:
                # asyncpg's InternalClientError, raised by a connection the server had just killed, once
                # took down the only worker during a PostgreSQL restart, leaving its jobs `running` until
                # some other worker's reaper came, and the queued ones unclaimed. One odd error in one
                # claim is not worth a process; the heartbeats, reaper and attempt limits stay in force.
                self._claim_errors += 1
                claimed = []
                delay = pacer.after_error()
                if isinstance(exc, trio.TooSlowError) or is_transient_pg_error(exc):
                    log.warning(
                        "claim_failed", error=f"{type(exc).__name__}: {exc}", retry_in=round(delay, 3)
                    )
                else:
                    log.exception("claim_failed_unexpectedly", retry_in=round(delay, 3))
            if self._metrics is not None:
                self._metrics.claim_duration.observe(trio.current_time() - sent_at)
                self._metrics.claimed.inc(len(claimed))
                for job in claimed:
                    if job.queue_wait is not None:
                        self._metrics.queue_wait.observe(job.queue_wait)
            for job in claimed:
                self._start_job(jobs, job, sent_at)
            if delay > 0:
                with trio.move_on_after(delay):
                    await self._wake.wait()

    def _start_job(self, jobs: trio.Nursery, job: q.ClaimedJob, sent_at: float) -> None:
        self._claimed += 1
        running = _RunningJob(
            job=job,
            lease=LeaseClock.granted(duration=self.config.lease_seconds, sent_at=sent_at),
            started_at=trio.current_time(),
        )
        self._running[job.job_id] = running
        if self._idle.is_set():
            self._idle = trio.Event()
        self._job_started.set()
        if self._metrics is not None:
            self._metrics.running.set(len(self._running))
        jobs.start_soon(self._run_job, running)

    async def _run_job(self, running: _RunningJob) -> None:
        job = running.job
        error: BaseException | None = None
        latency: float | None = None
        provider_wait: float | None = None
        try:
            with running.scope:
                try:
                    latency = await self._runner(job)
                except Exception as exc:
                    error = primary_error(exc)
                    provider_wait = provider_retry_after(exc)
            bound = _JobLog(job_id=job.job_id, tenant=job.tenant_id, attempt=job.attempts)
            try:
                await self._settle(running, error, bound, latency, provider_wait)
            except Exception:
                # A bug, not an outage (transient errors are retried inside). The job is not lost:
                # its lease expires and the reaper requeues it.
                bound.exception("settle_failed")
        finally:
            del self._running[job.job_id]
            if self._metrics is not None:
                self._metrics.running.set(len(self._running))
            # Wake the claim loop only when it would claim (short jobs end in quick succession).
            if self.config.job_concurrency - len(self._running) >= self.config.min_claim:
                self._wake.set()
            if not self._running:
                self._idle.set()

    def _leases(self) -> dict[int, LeaseClock]:
        return {job_id: r.lease for job_id, r in self._running.items() if r.stop_reason is None}

    async def _send_heartbeats(self, job_ids: list[int]) -> Mapping[int, q.Heartbeat]:
        fences = [self._running[j].job.fence for j in job_ids if j in self._running]
        return await self._db.run(q.heartbeat_many, fences, self.config.lease_seconds)

    def _stop(self, job_id: int, reason: StopReason) -> None:
        running = self._running.get(job_id)
        if running is not None:
            running.stop(reason)

    async def _wait_for_jobs(self) -> None:
        await self._job_started.wait()
        self._job_started = trio.Event()

    async def _lease_keeper(self) -> None:
        await keep_leases(self._leases, self._send_heartbeats, self._stop, idle=self._wait_for_jobs)

    async def _settle(
        self,
        running: _RunningJob,
        error: BaseException | None,
        bound: _JobLog,
        latency: float | None,
        provider_wait: float | None = None,
    ) -> None:
        """Record how the attempt ended, with one fenced transition (shielded, bounded, retried).
        ``latency``: the runner's, when it completed the job itself; ``provider_wait``: what a
        provider's 429 asked for (the retry is not scheduled earlier)."""
        job = running.job
        fence = job.fence
        reason = running.stop_reason
        if reason is StopReason.LEASE_LOST or isinstance(error, LeaseLost):
            return self._outcome("lease_lost", running, bound, warn=True)
        if reason is StopReason.CANCEL_REQUESTED:
            return await self._transition(
                Transition.CANCEL_RUNNING, q.cancel_running, fence, "cancelled", running, bound
            )
        if reason is StopReason.SHUTDOWN:
            return await self._transition(
                Transition.RELEASE, q.release_job, fence, "released", running, bound
            )
        if error is None:
            return self._outcome("succeeded", running, bound, latency=latency)
        message = f"{type(error).__name__}: {error}"
        if classify_failure(error) is FailureKind.PERMANENT:
            return await self._transition(
                Transition.FAIL, q.fail_job, fence, "failed", running, bound, error=message
            )
        delay = self.config.backoff.delay(job.attempts, provider_retry_after=provider_wait, rng=self._rng)
        settled = await self._write(
            Transition.RETRY, q.retry_or_bury, fence, bound, delay=delay, error=message
        )
        if settled is None:
            return None
        outcome = "dead" if settled.state == JobState.DEAD else "retried"
        if self._metrics is not None:
            (self._metrics.dead if outcome == "dead" else self._metrics.retries).inc()
        self._outcome(
            outcome,
            running,
            bound,
            latency=settled.latency,
            warn=True,
            error=message,
            retry_in=round(delay, 3),
        )
        return None

    async def _transition(
        self,
        transition: Transition,
        fn,
        fence: q.Fence,
        outcome: str,
        running: _RunningJob,
        bound: _JobLog,
        **kwargs: object,
    ) -> None:
        settled = await self._write(transition, fn, fence, bound, **kwargs)
        if settled is not None:
            self._outcome(
                outcome,
                running,
                bound,
                latency=settled.latency,
                **({"error": kwargs["error"]} if "error" in kwargs else {}),
            )

    async def _write(
        self, transition: Transition, fn, fence: q.Fence, bound: _JobLog, **kwargs: object
    ) -> q.Settled | None:
        """Run a settling transition; None if refused (reported) or impossible within the bound."""
        with trio.CancelScope(shield=True), trio.move_on_after(self.config.settle_timeout):
            pacer = ClaimPacer(error_base=0.05, max_error_delay=1.0)
            while True:
                try:
                    result = await self._db.run(functools.partial(fn, **kwargs), fence)
                    break
                except Exception as exc:
                    if not is_transient_pg_error(exc):
                        raise
                    await trio.sleep(pacer.after_error())
            if result is None or result is False:
                refused = TransitionRefused(fence.job_id, transition)
                self._refused += 1
                if self._metrics is not None:
                    self._metrics.refused.labels(str(transition)).inc()
                bound.warning("transition_refused", transition=str(transition), reason=refused.reason)
                return None
            return result
        bound.error(
            "settle_timed_out", transition=str(transition), note="the lease reaper will recover the job"
        )
        return None

    def _outcome(
        self,
        outcome: str,
        running: _RunningJob,
        bound: _JobLog,
        *,
        latency: float | None = None,
        warn: bool = False,
        **fields: object,
    ) -> None:
        """Count how an attempt ended; ``latency``, when the job reached a final state, is its time
        from submission (by the database's clock)."""
        self._outcomes[outcome] = self._outcomes.get(outcome, 0) + 1
        duration = trio.current_time() - running.started_at
        if self._metrics is not None:
            self._metrics.outcomes.labels(outcome).inc()
            self._metrics.job_duration.labels(outcome).observe(duration)
            if latency is not None:
                self._metrics.job_latency.labels(outcome).observe(latency)
        if warn or self._log_successes:
            (bound.warning if warn else bound.info)("job_" + outcome, duration_s=round(duration, 3), **fields)

    # -- housekeeping ---------------------------------------------------------------------------

    async def _maintenance_loop(self) -> None:
        """Every ``reap_interval``: reap expired leases; every ``maintenance_interval``, before that,
        purge old jobs and sample the queue, so the sample's expired leases are those this round's
        reap takes back. Each part is guarded on its own: a failed sample never holds up the reaper."""
        cfg = self.config
        next_full = trio.current_time()
        while True:
            if trio.current_time() >= next_full:
                next_full = trio.current_time() + cfg.maintenance_interval
                await self._housekeep(self._purge_and_sample)
            await self._housekeep(self._reap)
            await trio.sleep(cfg.reap_interval)

    async def _housekeep(self, step: Callable[[], Awaitable[None]]) -> None:
        try:
            with trio.fail_after(self.config.claim_timeout):
                await step()
        except Exception as exc:
            if not (isinstance(exc, trio.TooSlowError) or is_transient_pg_error(exc)):
                log.exception("maintenance_failed")
            else:
                log.info("maintenance_skipped", error=f"{type(exc).__name__}: {exc}")

    async def _purge_and_sample(self) -> None:
        purge = functools.partial(q.purge_finished, older_than=self.config.retention_seconds)
        purged = await self._db.run(purge)
        depth = await self._db.run(q.queue_depth)
        if self._metrics is not None:
            self._metrics.purged.inc(purged)
            self._metrics.set_depth(depth)

    async def _reap(self) -> None:
        reaped = await self._db.run(q.reap_expired)
        if not reaped:
            return
        self._reaped += len(reaped)
        log.warning("leases_expired", jobs=[(r.job_id, str(r.state)) for r in reaped])
        if self._metrics is not None:
            self._metrics.lease_expiries.inc(len(reaped))
            self._metrics.dead.inc(sum(1 for r in reaped if r.state == JobState.DEAD))
            for r in reaped:
                if r.latency is not None:  # dead or cancelled: the job's final state
                    self._metrics.job_latency.labels(str(r.state)).observe(r.latency)
        self._wake.set()


async def _claim(conn: object, cfg: WorkerConfig, asked: int) -> list[q.ClaimedJob]:
    return await q.claim_jobs(
        conn,
        worker_id=cfg.worker_id,
        limit=asked,
        lease_seconds=cfg.lease_seconds,
        tenant_cap=cfg.tenant_running_cap,
        tenant_caps=cfg.tenant_running_caps,
    )

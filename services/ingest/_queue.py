"""The job queue in SQL: every statement the API and the workers run against ``ingest_jobs``.

Each function takes an asyncpg connection and is an asyncio coroutine: callers run a whole function
in one trio-asyncio crossing (``db.run(fn, *args)``), which is also one transaction where a function
needs one. Every state transition is a single guarded UPDATE — ``WHERE state = <source>`` and, for a
running job, ``AND lease_token = <the attempt's token>`` — so it either happens or changes nothing;
"changed nothing" is returned to the caller (``None``/``False``), who reports it. A transition to
a final state returns the job's latency from submission, ``now() - created_at`` computed by the
statement itself: the database's clock stamped both ends, so no clock skew between the API that
created the job and the worker that finished it enters the figure.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from itertools import chain
from typing import Any

from providers import encode_vector

from ._states import JobState

__all__ = [
    "ADVISORY_LOCK_CLASS",
    "CancelOutcome",
    "ClaimedJob",
    "Fence",
    "Heartbeat",
    "IdempotencyKeyReused",
    "JobRecord",
    "QueueDepth",
    "QuotaExceeded",
    "Reaped",
    "Settled",
    "SubmitResult",
    "cancel_job",
    "cancel_running",
    "claim_jobs",
    "complete_job",
    "complete_noop_jobs",
    "fail_job",
    "get_job",
    "heartbeat",
    "heartbeat_many",
    "list_jobs",
    "purge_finished",
    "queue_depth",
    "reap_expired",
    "release_job",
    "requeue_job",
    "retry_or_bury",
    "stage_chunks",
    "start_chunks",
    "submit_job",
]

# First key of the two-key advisory locks that serialise claims per tenant ("FG" + 1).
ADVISORY_LOCK_CLASS = 0x464701
# ... and of those that serialise one tenant's submissions, so its queued-job quota is exact ("FG" + 2).
QUOTA_LOCK_CLASS = 0x464702
# A tenant without a running cap, in the claim statements that take one cap per tenant.
_NO_CAP = 2**31 - 1
_TERMINAL_SQL = "('succeeded', 'failed', 'dead', 'cancelled')"
# Seconds since the job was submitted, by the database's clock (``now()``: the transaction's start).
_LATENCY_SQL = "extract(epoch FROM now() - {t}created_at)::float8"
_LATENCY = _LATENCY_SQL.format(t="")


class QuotaExceeded(Exception):
    """The tenant already has ``limit`` queued jobs; the caller should come back later (429)."""

    def __init__(self, tenant: str, queued: int, limit: int) -> None:
        super().__init__(f"tenant {tenant!r} has {queued} queued jobs (limit {limit})")
        self.tenant, self.queued, self.limit = tenant, queued, limit


class IdempotencyKeyReused(Exception):
    """The Idempotency-Key was already used for a different document or content (422)."""

    def __init__(self, key: str, job_id: int) -> None:
        super().__init__(f"Idempotency-Key {key!r} was already used for job {job_id} with other content")
        self.key, self.job_id = key, job_id


@dataclass(frozen=True)
class Fence:
    """Identifies one attempt of one job. Every write a worker makes for the job carries it."""

    job_id: int
    token: uuid.UUID


@dataclass(frozen=True)
class SubmitResult:
    job_id: int
    state: JobState
    created: bool


@dataclass(frozen=True)
class ClaimedJob:
    job_id: int
    tenant_id: str
    doc_id: str
    content_hash: str
    attempts: int
    max_attempts: int
    fence: Fence
    text: str | None
    url: str | None
    metadata: dict[str, Any]
    #: seconds from submission to this claim, on the job's first claim only (a job released at
    #: shutdown, retried or requeued by an operator was claimed before); None otherwise
    queue_wait: float | None = None


@dataclass(frozen=True)
class JobRecord:
    """A job as the status API shows it."""

    job_id: int
    tenant_id: str
    doc_id: str
    source: str
    state: JobState
    priority: int
    attempts: int
    max_attempts: int
    chunks_total: int | None
    chunks_done: int
    cancel_requested: bool
    last_error: str | None
    last_error_kind: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    run_at: datetime

    def to_json(self) -> dict[str, Any]:
        total = self.chunks_total
        percent = (
            100.0
            if self.state == JobState.SUCCEEDED
            else (round(100.0 * self.chunks_done / total, 1) if total else 0.0)
        )
        iso = lambda t: t.isoformat() if t is not None else None  # noqa: E731
        return {
            "job_id": self.job_id,
            "doc_id": self.doc_id,
            "source": self.source,
            "state": str(self.state),
            "priority": self.priority,
            "attempts": self.attempts,
            "max_attempts": self.max_attempts,
            "cancel_requested": self.cancel_requested,
            "progress": {"chunks_total": total, "chunks_done": self.chunks_done, "percent": percent},
            "timestamps": {
                "queued": iso(self.created_at),
                "started": iso(self.started_at),
                "finished": iso(self.finished_at),
                "next_run": iso(self.run_at) if self.state == JobState.QUEUED else None,
            },
            "last_error": (
                {"kind": self.last_error_kind, "message": self.last_error} if self.last_error else None
            ),
        }


@dataclass(frozen=True)
class CancelOutcome:
    """``state`` after the request; ``changed`` is False when the job had already finished."""

    state: JobState
    changed: bool
    #: seconds from submission to this cancel when it cancelled a queued job (a final state)
    latency: float | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Settled:
    """A settling transition that happened: the job's state after it, and, when that state is final
    (succeeded, failed, dead, cancelled), the job's latency from submission in seconds."""

    state: JobState
    latency: float | None


@dataclass(frozen=True)
class Reaped:
    """A job whose lease had expired, after the reaper: queued again, dead or cancelled (``latency``
    as in `Settled`)."""

    job_id: int
    tenant_id: str
    state: JobState
    latency: float | None


@dataclass(frozen=True)
class QueueDepth:
    tenant_id: str
    queued: int
    running: int
    oldest_runnable_age: float  # seconds the oldest runnable job has waited; 0 if none
    expired_leases: int = 0  # running jobs whose lease has run out and that no reaper took back yet


# --------------------------------------------------------------------------------------------
# Submit, status, cancel (the API)
# --------------------------------------------------------------------------------------------

_SUBMIT = """
WITH quota AS (
    SELECT count(*) AS queued FROM ingest_jobs WHERE tenant_id = $1 AND state = 'queued'
), job AS (
    INSERT INTO ingest_jobs (tenant_id, doc_id, content_hash, idempotency_key, source, priority, max_attempts)
    SELECT $1, $2, $3, $4, $5, $6, $7 FROM quota WHERE quota.queued < $11
    ON CONFLICT DO NOTHING
    RETURNING id, state
), input AS (
    INSERT INTO ingest_job_inputs (job_id, text, url, metadata) SELECT id, $8, $9, $10::jsonb FROM job
)
SELECT job.id, job.state, (SELECT queued FROM quota) AS queued FROM quota LEFT JOIN job ON true
"""

_EXISTING_BY_KEY = """
SELECT id, state, doc_id, content_hash FROM ingest_jobs WHERE tenant_id = $1 AND idempotency_key = $2
"""

_EXISTING_ACTIVE = """
SELECT id, state FROM ingest_jobs
WHERE tenant_id = $1 AND doc_id = $2 AND content_hash = $3 AND state IN ('queued', 'running')
"""


# The tenant's submissions one at a time (a transaction lock: released at commit). Taken in its own
# statement: under READ COMMITTED the next statement's snapshot is taken after the lock is granted,
# so the quota's count sees every job the previous holder inserted.
_LOCK_TENANT_QUOTA = "SELECT pg_advisory_xact_lock($1, hashtext($2))"


async def submit_job(
    conn: Any,
    *,
    tenant: str,
    doc_id: str,
    content_hash: str,
    source: str,
    text: str | None,
    url: str | None,
    metadata: dict[str, Any],
    priority: int,
    max_attempts: int,
    idempotency_key: str | None,
    max_queued: int,
) -> SubmitResult:
    """Insert a job, or return the active one with the same content (or the same Idempotency-Key).

    Race-free without a read-then-write: the partial unique indexes make a concurrent duplicate
    ``INSERT ... ON CONFLICT DO NOTHING`` wait for the first insert and then insert nothing; the
    follow-up select finds the winner. If the winner left the active states in between (it finished),
    the loop inserts again — a finished job does not block new work for the same content.

    The quota (``max_queued`` queued jobs) is exact under concurrent submits: each runs its count and
    insert holding the tenant's advisory transaction lock, so a submission counts every job the ones
    before it inserted (a count and insert in one statement alone would let N concurrent submits see
    the same count and overshoot by N - 1). Other tenants' submissions do not wait for it.
    """
    for _ in range(5):
        async with conn.transaction():
            await conn.execute(_LOCK_TENANT_QUOTA, QUOTA_LOCK_CLASS, tenant)
            row = await conn.fetchrow(
                _SUBMIT,
                tenant,
                doc_id,
                content_hash,
                idempotency_key,
                source,
                priority,
                max_attempts,
                text,
                url,
                json.dumps(metadata),
                max_queued,
            )
        if row["id"] is not None:
            return SubmitResult(row["id"], JobState(row["state"]), created=True)
        if idempotency_key is not None:
            existing = await conn.fetchrow(_EXISTING_BY_KEY, tenant, idempotency_key)
            if existing is not None:
                if (existing["doc_id"], existing["content_hash"]) != (doc_id, content_hash):
                    raise IdempotencyKeyReused(idempotency_key, existing["id"])
                return SubmitResult(existing["id"], JobState(existing["state"]), created=False)
        existing = await conn.fetchrow(_EXISTING_ACTIVE, tenant, doc_id, content_hash)
        if existing is not None:
            return SubmitResult(existing["id"], JobState(existing["state"]), created=False)
        if row["queued"] >= max_queued:
            raise QuotaExceeded(tenant, row["queued"], max_queued)
    raise RuntimeError("submit did not settle after 5 rounds")  # only under pathological churn


_JOB_COLUMNS = """id, tenant_id, doc_id, source, state, priority, attempts, max_attempts, chunks_total,
    chunks_done, cancel_requested, last_error, last_error_kind, created_at, started_at, finished_at, run_at"""


def _record(row: Any) -> JobRecord:
    return JobRecord(
        job_id=row["id"],
        tenant_id=row["tenant_id"],
        doc_id=row["doc_id"],
        source=row["source"],
        state=JobState(row["state"]),
        priority=row["priority"],
        attempts=row["attempts"],
        max_attempts=row["max_attempts"],
        chunks_total=row["chunks_total"],
        chunks_done=row["chunks_done"],
        cancel_requested=row["cancel_requested"],
        last_error=row["last_error"],
        last_error_kind=row["last_error_kind"],
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        run_at=row["run_at"],
    )


async def get_job(conn: Any, tenant: str, job_id: int) -> JobRecord | None:
    """The tenant's job, or None — another tenant's job is indistinguishable from a missing one."""
    row = await conn.fetchrow(
        f"SELECT {_JOB_COLUMNS} FROM ingest_jobs WHERE id = $1 AND tenant_id = $2", job_id, tenant
    )
    return _record(row) if row is not None else None


async def list_jobs(
    conn: Any, tenant: str, *, state: JobState | None, limit: int, before_id: int | None
) -> list[JobRecord]:
    """Newest first, keyset-paginated on id (stable under inserts, no OFFSET scans)."""
    rows = await conn.fetch(
        f"""SELECT {_JOB_COLUMNS} FROM ingest_jobs
            WHERE tenant_id = $1 AND ($2::text IS NULL OR state = $2) AND ($3::bigint IS NULL OR id < $3)
            ORDER BY id DESC LIMIT $4""",
        tenant,
        str(state) if state is not None else None,
        before_id,
        limit,
    )
    return [_record(r) for r in rows]


_CANCEL = f"""
WITH changed AS (
    UPDATE ingest_jobs SET
        state = CASE WHEN state = 'queued' THEN 'cancelled' ELSE state END,
        finished_at = CASE WHEN state = 'queued' THEN now() ELSE finished_at END,
        cancel_requested = true,
        updated_at = now()
    WHERE id = $1 AND tenant_id = $2 AND state IN ('queued', 'running')
    RETURNING id, state, created_at
)
SELECT state, CASE WHEN state = 'running' THEN pg_notify('ingest_cancel', id::text) END AS notified,
       CASE WHEN state = 'cancelled' THEN {_LATENCY} END AS latency
FROM changed
"""


async def cancel_job(conn: Any, tenant: str, job_id: int) -> CancelOutcome | None:
    """Queued: cancelled at once. Running: flagged, and its worker told by NOTIFY (it also sees the
    flag at its next heartbeat). Finished: unchanged. None if the tenant has no such job."""
    row = await conn.fetchrow(_CANCEL, job_id, tenant)
    if row is not None:
        return CancelOutcome(JobState(row["state"]), changed=True, latency=row["latency"])
    current = await conn.fetchval(
        "SELECT state FROM ingest_jobs WHERE id = $1 AND tenant_id = $2", job_id, tenant
    )
    return None if current is None else CancelOutcome(JobState(current), changed=False)


async def requeue_job(conn: Any, tenant: str, job_id: int) -> bool:
    """failed | dead -> queued with a fresh attempt count (an operator fixed the cause)."""
    row = await conn.fetchval(
        """UPDATE ingest_jobs SET state = 'queued', attempts = 0, run_at = now(), finished_at = NULL,
               cancel_requested = false, updated_at = now()
           WHERE id = $1 AND tenant_id = $2 AND state IN ('failed', 'dead')
             AND EXISTS (SELECT 1 FROM ingest_job_inputs WHERE job_id = $1)
           RETURNING id""",
        job_id,
        tenant,
    )
    return row is not None


# --------------------------------------------------------------------------------------------
# Claim (the worker)
# --------------------------------------------------------------------------------------------

# Tenants with queued work, found by a loose index scan (one index probe per tenant instead of a walk
# over every queued row), least-served first. The try-lock is applied on top of the LIMITed list, so
# only those few tenants are ever locked.
_CANDIDATE_TENANTS = """
WITH RECURSIVE heads AS (
    (SELECT tenant_id, priority, run_at FROM ingest_jobs WHERE state = 'queued'
     ORDER BY tenant_id, priority, run_at, id LIMIT 1)
    UNION ALL
    SELECT nxt.tenant_id, nxt.priority, nxt.run_at FROM heads h
    CROSS JOIN LATERAL (
        SELECT tenant_id, priority, run_at FROM ingest_jobs
        WHERE state = 'queued' AND tenant_id > h.tenant_id
        ORDER BY tenant_id, priority, run_at, id LIMIT 1
    ) nxt
), ranked AS (
    SELECT h.tenant_id, h.priority, h.run_at,
           (SELECT count(*) FROM ingest_jobs r WHERE r.tenant_id = h.tenant_id AND r.state = 'running') AS running
    FROM heads h
), chosen AS (
    -- each tenant's own cap ($5/$6), else the default ($1)
    SELECT tenant_id FROM ranked
    WHERE running < coalesce(
        (SELECT c.cap FROM unnest($5::text[], $6::int[]) AS c(tenant_id, cap) WHERE c.tenant_id = ranked.tenant_id),
        $1)
    ORDER BY running, priority, run_at LIMIT $2
)
SELECT tenant_id, CASE WHEN $3 THEN pg_try_advisory_xact_lock($4, hashtext(tenant_id)) ELSE true END AS locked
FROM chosen
"""


def _flip_and_read(owner: str, lease: str) -> str:
    """The end both claim statements share: the picked rows become running with a fresh lease token
    (``owner`` and ``lease`` name the statement's parameters), then their inputs are read."""
    return f"""), claimed AS (
UPDATE ingest_jobs j SET
    state = 'running',
    attempts = j.attempts + 1,
    lease_token = gen_random_uuid(),
    lease_owner = {owner},
    lease_expires_at = now() + make_interval(secs => {lease}),
    started_at = coalesce(j.started_at, now()),
    updated_at = now()
FROM picked p
WHERE j.id = p.id AND j.state = 'queued'
RETURNING j.id, j.tenant_id, j.doc_id, j.content_hash, j.attempts, j.max_attempts, j.lease_token,
    -- RETURNING sees the new row: started_at is this statement's now() only if it was NULL, i.e. on the
    -- job's first claim (a released job gets its attempt back, so attempts alone would count it twice)
    CASE WHEN j.started_at = now() THEN extract(epoch FROM now() - j.created_at)::float8 END AS queue_wait
)
-- The inputs by primary key, one probe per claimed job (a plain join lets the planner hash the whole
-- inputs table).
SELECT c.*, i.text, i.url, i.metadata
FROM claimed c LEFT JOIN LATERAL (
    SELECT text, url, metadata FROM ingest_job_inputs WHERE job_id = c.id LIMIT 1  -- LIMIT: not flattened
) i ON true
"""


# Runs in the same transaction, in a later statement than the tenant locks: under READ COMMITTED each
# statement takes a new snapshot, so the running count below sees every claim committed by a worker
# that held the tenant's lock before us. (Counting in the same statement that takes the lock would
# use a snapshot from before the lock was granted, and two workers could both take the N-th slot.)
_CLAIM = """
WITH slots AS (
    SELECT t.tenant_id,
           t.cap - (SELECT count(*) FROM ingest_jobs r
                    WHERE r.tenant_id = t.tenant_id AND r.state = 'running')::int AS free
    FROM unnest($1::text[], $4::int[]) AS t(tenant_id, cap)
), candidates AS (
    SELECT q.id, q.tenant_id, q.priority, q.run_at, s.free
    FROM slots s
    CROSS JOIN LATERAL (
        SELECT j.id, j.tenant_id, j.priority, j.run_at FROM ingest_jobs j
        WHERE j.tenant_id = s.tenant_id AND j.state = 'queued' AND j.run_at <= now()
        ORDER BY j.priority, j.run_at, j.id
        LIMIT {limit}
        FOR UPDATE SKIP LOCKED
    ) q
    WHERE s.free > 0
), picked AS (
    SELECT id FROM (
        SELECT c.id, c.priority, c.run_at, c.free,
               row_number() OVER (PARTITION BY c.tenant_id ORDER BY c.priority, c.run_at, c.id) AS rank
        FROM candidates c
    ) r
    WHERE r.rank <= r.free
    ORDER BY r.rank, r.priority, r.run_at, r.id   -- round-robin between tenants within one batch
    LIMIT {limit}
""" + _flip_and_read("$2", "$3")


# Without a per-tenant cap nothing needs serialising, so the claim is one statement (no transaction
# block, one round trip): tenants by loose index scan, each tenant's head jobs with SKIP LOCKED,
# interleaved between tenants, flipped to running.
_CLAIM_UNCAPPED = """
WITH RECURSIVE heads AS (
    (SELECT tenant_id FROM ingest_jobs WHERE state = 'queued' ORDER BY tenant_id, priority, run_at, id LIMIT 1)
    UNION ALL
    SELECT nxt.tenant_id FROM heads h
    CROSS JOIN LATERAL (
        SELECT tenant_id FROM ingest_jobs
        WHERE state = 'queued' AND tenant_id > h.tenant_id
        ORDER BY tenant_id, priority, run_at, id LIMIT 1
    ) nxt
), tenants AS (
    SELECT tenant_id FROM heads LIMIT {max_tenants}
), candidates AS (
    SELECT q.id, q.tenant_id, q.priority, q.run_at
    FROM tenants t
    CROSS JOIN LATERAL (
        SELECT j.id, j.tenant_id, j.priority, j.run_at FROM ingest_jobs j
        WHERE j.tenant_id = t.tenant_id AND j.state = 'queued' AND j.run_at <= now()
        ORDER BY j.priority, j.run_at, j.id
        LIMIT {limit}
        FOR UPDATE SKIP LOCKED
    ) q
), picked AS (
    SELECT id FROM (
        SELECT c.id, c.priority, c.run_at,
               row_number() OVER (PARTITION BY c.tenant_id ORDER BY c.priority, c.run_at, c.id) AS rank
        FROM candidates c
    ) r
    ORDER BY r.rank, r.priority, r.run_at, r.id
    LIMIT {limit}
""" + _flip_and_read("$1", "$2")


def _claim_sql(template: str, **limits: int) -> str:
    """A claim statement with its row limits written in as literals, not bound as parameters.

    A prepared statement with ``LIMIT $n`` is re-planned at every execution (PostgreSQL's custom
    plans), and planning this statement is a large part of running it; a generic plan, forced,
    guesses the limit and runs markedly slower. With literal limits the generic plan *is* the custom
    plan, so PostgreSQL keeps it after five executions and a claim is only executed. The texts stay
    few (one per batch size the claim loop asks for), within asyncpg's statement cache.
    """
    return template.format(**{k: int(v) for k, v in limits.items()})


def _claimed(rows: Sequence[Any]) -> list[ClaimedJob]:
    return [
        ClaimedJob(
            job_id=r["id"],
            tenant_id=r["tenant_id"],
            doc_id=r["doc_id"],
            content_hash=r["content_hash"],
            attempts=r["attempts"],
            max_attempts=r["max_attempts"],
            fence=Fence(r["id"], r["lease_token"]),
            text=r["text"],
            url=r["url"],
            metadata=json.loads(m) if (m := r["metadata"]) and m != "{}" else {},
            queue_wait=r["queue_wait"],
        )
        for r in rows
    ]


async def claim_jobs(
    conn: Any,
    *,
    worker_id: str,
    limit: int,
    lease_seconds: float,
    tenant_cap: int | None,
    tenant_caps: Mapping[str, int | None] | None = None,
    max_tenants: int = 32,
    lock_timeout_ms: int = 2000,
) -> list[ClaimedJob]:
    """Claim up to ``limit`` runnable jobs, at most ``tenant_cap`` running per tenant across all workers
    (``tenant_caps``: a tenant's own cap in its place; None: no cap).

    One transaction: (1) pick the least-served tenants with work and try-lock them (a per-tenant
    advisory transaction lock, so claims for one tenant are serialised while different tenants are
    claimed in parallel); if every candidate is locked by another claimer, wait briefly for the first
    one instead of coming back empty; (2) one statement that counts each locked tenant's running jobs,
    takes the free slots with ``FOR UPDATE SKIP LOCKED`` in priority order, and flips them to running
    with a fresh lease token. Without a cap no locks are taken: SKIP LOCKED alone suffices, and the
    claim is a single statement.
    """
    if limit <= 0:
        return []
    own = dict(tenant_caps or {})
    if tenant_cap is None and all(cap is None for cap in own.values()):
        sql = _claim_sql(_CLAIM_UNCAPPED, limit=limit, max_tenants=max_tenants)
        return _claimed(await conn.fetch(sql, worker_id, lease_seconds))
    locking = True

    def cap_of(tenant: str) -> int:
        cap = own.get(tenant, tenant_cap)
        return _NO_CAP if cap is None else cap

    async with conn.transaction():
        rows = await conn.fetch(
            _CANDIDATE_TENANTS,
            _NO_CAP if tenant_cap is None else tenant_cap,
            max_tenants,
            locking,
            ADVISORY_LOCK_CLASS,
            list(own),
            [cap_of(tenant) for tenant in own],
        )
        if not rows:
            return []
        tenants = [r["tenant_id"] for r in rows if r["locked"]]
        if not tenants:
            # Every candidate is being claimed right now; its claim transaction is short.
            await conn.execute(f"SET LOCAL lock_timeout = {int(lock_timeout_ms)}")
            first = rows[0]["tenant_id"]
            await conn.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))", ADVISORY_LOCK_CLASS, first)
            tenants = [first]
        claimed = await conn.fetch(
            _claim_sql(_CLAIM, limit=limit), tenants, worker_id, lease_seconds, [cap_of(t) for t in tenants]
        )
    return _claimed(claimed)


# --------------------------------------------------------------------------------------------
# A running attempt: heartbeat, progress, completion (all fenced by the lease token)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Heartbeat:
    """``alive`` False: the lease is gone (expired and reclaimed, or the job was finished by someone
    else) — stop at once and write nothing more."""

    alive: bool
    cancel_requested: bool


async def heartbeat(conn: Any, fence: Fence, lease_seconds: float) -> Heartbeat:
    """Extend the lease; also tells the worker whether a cancel was requested. A HOT update."""
    row = await conn.fetchrow(
        """UPDATE ingest_jobs SET lease_expires_at = now() + make_interval(secs => $3), updated_at = now()
           WHERE id = $1 AND lease_token = $2 AND state = 'running' RETURNING cancel_requested""",
        fence.job_id,
        fence.token,
        lease_seconds,
    )
    return (
        Heartbeat(alive=False, cancel_requested=False)
        if row is None
        else Heartbeat(True, row["cancel_requested"])
    )


async def heartbeat_many(conn: Any, fences: Sequence[Fence], lease_seconds: float) -> dict[int, Heartbeat]:
    """Extend the leases of all of a worker's running jobs in one statement. A job missing from the
    answer has lost its lease."""
    rows = await conn.fetch(
        """UPDATE ingest_jobs j SET lease_expires_at = now() + make_interval(secs => $3), updated_at = now()
           FROM unnest($1::bigint[], $2::uuid[]) AS f(id, token)
           WHERE j.id = ANY($1::bigint[])  -- a primary-key probe per job, not a scan of running jobs
             AND j.id = f.id AND j.lease_token = f.token AND j.state = 'running'
           RETURNING j.id, j.cancel_requested""",
        [f.job_id for f in fences],
        [f.token for f in fences],
        lease_seconds,
    )
    return {r["id"]: Heartbeat(alive=True, cancel_requested=r["cancel_requested"]) for r in rows}


# One statement: lock the attempt's job row (token in the WHERE), find the chunks an earlier attempt
# already staged with the same content (md5 per chunk, compared in SQL), record the chunk count.
_START_CHUNKS = """
WITH attempt AS (
    SELECT id FROM ingest_jobs WHERE id = $1 AND lease_token = $2 AND state = 'running' FOR NO KEY UPDATE
), reusable AS (
    SELECT s.chunk_no FROM ingest_chunk_staging s JOIN attempt a ON s.job_id = a.id
    WHERE s.chunk_no < cardinality($3::text[]) AND md5(s.content) = ($3::text[])[s.chunk_no + 1]
), recorded AS (
    UPDATE ingest_jobs j SET chunks_total = cardinality($3::text[]),
        chunks_done = (SELECT count(*) FROM reusable), updated_at = now()
    FROM attempt a WHERE j.id = a.id
    RETURNING j.id
)
SELECT coalesce((SELECT array_agg(chunk_no) FROM reusable), '{}'::int[]) AS reusable FROM recorded
"""


async def start_chunks(conn: Any, fence: Fence, chunk_digests: Sequence[str]) -> set[int] | None:
    """Record the job's chunk count; return the chunk numbers already staged with the same content by
    an earlier attempt (to skip re-embedding them), or None if the attempt no longer holds the lease.
    One statement (``_START_CHUNKS``), so one round trip."""
    row = await conn.fetchrow(_START_CHUNKS, fence.job_id, fence.token, list(chunk_digests))
    return None if row is None else set(row["reusable"])


# One statement, so one round trip: lock the attempt's job row (the token in the WHERE), stage the
# batch only if that found the row, and advance progress. The row lock is taken before any staging
# row is written, so the lease cannot be reclaimed halfway. Progress is counted up from the job row
# itself: under READ COMMITTED the UPDATE sees the newest committed ``chunks_done`` even when another
# batch of the same job committed while this statement waited for the lock (a recount of the staging
# table would use this statement's older snapshot and miss that batch). Each chunk of an attempt is
# staged once (``start_chunks`` counted the reused ones), so counting the batch is exact.
def _stage_statement(rows: str) -> str:
    """The staging statement, with ``rows`` (the ``SELECT ... FROM attempt a ...`` that turns the
    parameters into (job_id, chunk_no, content, embedding) rows) as the only part that varies."""
    return f"""
WITH attempt AS (
    SELECT id FROM ingest_jobs WHERE id = $1 AND lease_token = $2 AND state = 'running' FOR NO KEY UPDATE
), staged AS (
    INSERT INTO ingest_chunk_staging (job_id, chunk_no, content, embedding)
    {rows}
    ON CONFLICT (job_id, chunk_no) DO UPDATE SET content = excluded.content, embedding = excluded.embedding
    RETURNING chunk_no
)
UPDATE ingest_jobs j SET updated_at = now(),
    chunks_done = least(coalesce(j.chunks_total, 0),
                        j.chunks_done + (SELECT count(*) FROM staged s WHERE s.chunk_no < coalesce(j.chunks_total, 0)))
FROM attempt a
WHERE j.id = a.id
RETURNING true
"""


# The vectors as one flat ``float4[]`` ($5) of $6 numbers each, sliced per row.
_STAGE = _stage_statement(
    """SELECT a.id, t.n, t.c, (($5::float4[])[((t.o - 1) * $6 + 1):(t.o * $6)])::vector
    FROM attempt a CROSS JOIN unnest($3::int[], $4::text[]) WITH ORDINALITY AS t(n, c, o)"""
)

# The same, with the vectors as ``vector[]`` in binary (a connection set up by ``register_vector_codec``).
_STAGE_BINARY = _stage_statement(
    """SELECT a.id, t.n, t.c, t.v
    FROM attempt a CROSS JOIN unnest($3::int[], $4::text[], $5::vector[]) AS t(n, c, v)"""
)


async def stage_chunks(
    conn: Any,
    fence: Fence,
    chunk_nos: Sequence[int],
    contents: Sequence[str],
    vectors: Sequence[Sequence[float]],
    *,
    binary_vectors: bool = False,
) -> bool:
    """Stage embedded chunks and advance progress, fenced, in one statement (see ``_STAGE``).

    The vectors travel as one flat ``float4[]`` (asyncpg's binary encoding, no text formatting of
    floats in Python) and are sliced back into ``vector(384)`` values by PostgreSQL; or, with
    ``binary_vectors`` on a connection set up by ``_db.register_vector_codec``, as a binary
    ``vector[]`` (cheaper to encode). Returns False (nothing written) if the attempt no
    longer holds the lease.
    """
    if binary_vectors:
        # Packed here: asyncpg would take a list of float lists for a two-dimensional array.
        packed = [encode_vector(v) for v in vectors]
        staged = await conn.fetchval(
            _STAGE_BINARY, fence.job_id, fence.token, list(chunk_nos), list(contents), packed
        )
        return staged is not None
    dims = len(vectors[0]) if vectors else 0
    flat = list(chain.from_iterable(vectors))
    staged = await conn.fetchval(
        _STAGE, fence.job_id, fence.token, list(chunk_nos), list(contents), flat, dims
    )
    return staged is not None


# Fence the job to succeeded and count its staged chunks, in one statement.
_SUCCEED = f"""
WITH done AS (
    UPDATE ingest_jobs SET state = 'succeeded', finished_at = now(), lease_token = NULL,
        lease_expires_at = NULL, chunks_done = coalesce(chunks_total, 0), last_error = NULL,
        last_error_kind = NULL, updated_at = now()
    WHERE id = $1 AND lease_token = $2 AND state = 'running'
    RETURNING tenant_id, doc_id, coalesce(chunks_total, 0) AS total, {_LATENCY} AS latency
)
SELECT d.tenant_id, d.doc_id, d.total, d.latency,
       (SELECT count(*) FROM ingest_chunk_staging s WHERE s.job_id = $1 AND s.chunk_no < d.total) AS staged
FROM done d
"""

# Then, in one statement, the document moves to this version (only if it is newer than the one whose
# chunks it holds): the document row, the chunks past the new count deleted, the new chunks upserted,
# or the job marked superseded; and the staging and input rows dropped. Every part reads the same
# snapshot, so the chunk upsert still sees the staging rows that the same statement deletes.
_PUBLISH = """
WITH newest AS (
    INSERT INTO ingest_documents AS d (tenant_id, doc_id, job_id, content_hash, chunks)
    VALUES ($1, $2, $3, $4, $5)
    ON CONFLICT (tenant_id, doc_id) DO UPDATE
        SET job_id = excluded.job_id, content_hash = excluded.content_hash,
            chunks = excluded.chunks, updated_at = now()
        WHERE d.job_id < excluded.job_id
    RETURNING job_id
), trimmed AS (
    DELETE FROM chunks WHERE tenant_id = $1 AND doc_id = $2 AND chunk_no >= $5 AND EXISTS (SELECT 1 FROM newest)
), written AS (
    INSERT INTO chunks (tenant_id, doc_id, chunk_no, content, embedding, content_hash, metadata, updated_at)
    SELECT $1, $2, s.chunk_no, s.content, s.embedding, $4, $6::jsonb, now()
    FROM ingest_chunk_staging s WHERE s.job_id = $3 AND s.chunk_no < $5 AND EXISTS (SELECT 1 FROM newest)
    ON CONFLICT (tenant_id, doc_id, chunk_no) DO UPDATE SET
        content = excluded.content, embedding = excluded.embedding,
        content_hash = excluded.content_hash, metadata = excluded.metadata, updated_at = now()
), superseded AS (
    UPDATE ingest_jobs SET last_error_kind = 'superseded',
        last_error = 'a newer version of the document was ingested first; chunks left unchanged'
    WHERE id = $3 AND NOT EXISTS (SELECT 1 FROM newest)
), unstaged AS (
    DELETE FROM ingest_chunk_staging WHERE job_id = $3
)
DELETE FROM ingest_job_inputs WHERE job_id = $3
"""


async def complete_job(
    conn: Any, fence: Fence, *, document_hash: str, metadata: dict[str, Any]
) -> Settled | None:
    """running -> succeeded, and the document's chunks replaced by the staged ones, atomically.

    The chunks change only if this job is newer than the one whose chunks the document holds
    (``ingest_documents``), so a late old version never overwrites a newer one; the job still succeeds
    (its work is superseded, not failed). Returns None (nothing written) if the attempt lost its lease.
    Two statements in one transaction (``_SUCCEED``, ``_PUBLISH``): four round trips with BEGIN and
    COMMIT, whatever the number of chunks.
    """
    async with conn.transaction():
        job = await conn.fetchrow(_SUCCEED, fence.job_id, fence.token)
        if job is None:
            return None
        tenant, doc_id, total = job["tenant_id"], job["doc_id"], job["total"]
        if job["staged"] != total:
            raise RuntimeError(f"job {fence.job_id}: {job['staged']} of {total} chunks staged at completion")
        await conn.execute(_PUBLISH, tenant, doc_id, fence.job_id, document_hash, total, json.dumps(metadata))
    return Settled(JobState.SUCCEEDED, job["latency"])


async def complete_noop_jobs(conn: Any, fences: Sequence[Fence]) -> int:
    """running -> succeeded for many jobs that wrote nothing (benchmarks, housekeeping jobs); fenced."""
    return len(
        await conn.fetch(
            """UPDATE ingest_jobs j SET state = 'succeeded', finished_at = now(), lease_token = NULL,
               lease_expires_at = NULL, updated_at = now()
           FROM unnest($1::bigint[], $2::uuid[]) AS f(id, token)
           WHERE j.id = ANY($1::bigint[])  -- a primary-key probe per job, not a scan of running jobs
             AND j.id = f.id AND j.lease_token = f.token AND j.state = 'running'
           RETURNING j.id""",
            [f.job_id for f in fences],
            [f.token for f in fences],
        )
    )


_RETRY_OR_BURY = f"""
UPDATE ingest_jobs SET
    state = CASE WHEN attempts >= max_attempts THEN 'dead' ELSE 'queued' END,
    run_at = CASE WHEN attempts >= max_attempts THEN run_at ELSE now() + make_interval(secs => $3) END,
    finished_at = CASE WHEN attempts >= max_attempts THEN now() END,
    lease_token = NULL, lease_expires_at = NULL,
    last_error = $4, last_error_kind = 'retryable', updated_at = now()
WHERE id = $1 AND lease_token = $2 AND state = 'running'
RETURNING state, CASE WHEN state = 'dead' THEN {_LATENCY} END AS latency
"""


async def retry_or_bury(conn: Any, fence: Fence, *, delay: float, error: str) -> Settled | None:
    """running -> queued (run again after ``delay``) or -> dead when no attempts are left."""
    row = await conn.fetchrow(_RETRY_OR_BURY, fence.job_id, fence.token, delay, error[:2000])
    return Settled(JobState(row["state"]), row["latency"]) if row is not None else None


async def fail_job(conn: Any, fence: Fence, *, error: str) -> Settled | None:
    """running -> failed: the document is at fault (empty, undecodable, fetch said 404...)."""
    latency = await conn.fetchval(
        f"""UPDATE ingest_jobs SET state = 'failed', finished_at = now(), lease_token = NULL,
               lease_expires_at = NULL, last_error = $3, last_error_kind = 'permanent', updated_at = now()
           WHERE id = $1 AND lease_token = $2 AND state = 'running' RETURNING {_LATENCY}""",
        fence.job_id,
        fence.token,
        error[:2000],
    )
    return Settled(JobState.FAILED, latency) if latency is not None else None


async def release_job(conn: Any, fence: Fence) -> Settled | None:
    """running -> queued at once, the attempt not counted (graceful shutdown); wakes another worker."""
    released = await conn.fetchval(
        """WITH released AS (
               UPDATE ingest_jobs SET state = 'queued', attempts = greatest(attempts - 1, 0), run_at = now(),
                   lease_token = NULL, lease_expires_at = NULL, updated_at = now()
               WHERE id = $1 AND lease_token = $2 AND state = 'running' RETURNING id)
           SELECT pg_notify('ingest_jobs', '') IS NOT NULL FROM released""",
        fence.job_id,
        fence.token,
    )
    return Settled(JobState.QUEUED, None) if released is not None else None


async def cancel_running(conn: Any, fence: Fence) -> Settled | None:
    """running -> cancelled: the worker acknowledges a cancel request and stops."""
    latency = await conn.fetchval(
        f"""UPDATE ingest_jobs SET state = 'cancelled', finished_at = now(), lease_token = NULL,
               lease_expires_at = NULL, updated_at = now()
           WHERE id = $1 AND lease_token = $2 AND state = 'running' RETURNING {_LATENCY}""",
        fence.job_id,
        fence.token,
    )
    return Settled(JobState.CANCELLED, latency) if latency is not None else None


# --------------------------------------------------------------------------------------------
# Housekeeping: lease reaper, retention, depth
# --------------------------------------------------------------------------------------------

_REAP = """
WITH expired AS (
    SELECT id FROM ingest_jobs WHERE state = 'running' AND lease_expires_at < now()
    ORDER BY lease_expires_at LIMIT $1 FOR UPDATE SKIP LOCKED
), reaped AS (
    UPDATE ingest_jobs j SET
        state = CASE WHEN j.cancel_requested THEN 'cancelled'
                     WHEN j.attempts >= j.max_attempts THEN 'dead' ELSE 'queued' END,
        finished_at = CASE WHEN j.cancel_requested OR j.attempts >= j.max_attempts THEN now() END,
        run_at = now(), lease_token = NULL, lease_expires_at = NULL,
        last_error = 'lease expired: worker ' || coalesce(j.lease_owner, '?') || ' stopped extending it',
        last_error_kind = 'lease_expired', updated_at = now()
    FROM expired e
    WHERE j.id = e.id AND j.state = 'running' AND j.lease_expires_at < now()
    RETURNING j.id, j.tenant_id, j.state,
        CASE WHEN j.state IN ('dead', 'cancelled') THEN {latency} END AS latency
)
SELECT id, tenant_id, state, latency, pg_notify('ingest_jobs', '') IS NOT NULL AS notified FROM reaped
""".format(latency=_LATENCY_SQL.format(t="j."))


async def reap_expired(conn: Any, *, limit: int = 100) -> list[Reaped]:
    """Jobs whose worker stopped extending the lease (crashed, partitioned): back to queued (the attempt
    counts — a job that crashes its worker every time must end dead, not loop), or dead, or cancelled."""
    rows = await conn.fetch(_REAP, limit)
    return [Reaped(r["id"], r["tenant_id"], JobState(r["state"]), r["latency"]) for r in rows]


async def purge_finished(conn: Any, *, older_than: float, batch: int = 1000) -> int:
    """Delete finished jobs (and, by cascade, their inputs and staging rows) past the retention period."""
    deleted = await conn.fetch(
        f"""WITH old AS (
                SELECT id FROM ingest_jobs
                WHERE state IN {_TERMINAL_SQL} AND finished_at < now() - make_interval(secs => $1)
                ORDER BY finished_at LIMIT $2 FOR UPDATE SKIP LOCKED)
            DELETE FROM ingest_jobs j USING old WHERE j.id = old.id RETURNING j.id""",
        older_than,
        batch,
    )
    return len(deleted)


async def queue_depth(conn: Any) -> list[QueueDepth]:
    """Per tenant: queued and running jobs, how long the oldest runnable job has waited, and how many
    running jobs have a lease that ran out (their worker is gone and no reaper has taken them back)."""
    rows = await conn.fetch(
        """SELECT tenant_id,
                  count(*) FILTER (WHERE state = 'queued') AS queued,
                  count(*) FILTER (WHERE state = 'running') AS running,
                  coalesce(extract(epoch FROM now() - min(run_at) FILTER (
                      WHERE state = 'queued' AND run_at <= now())), 0)::float8 AS oldest,
                  count(*) FILTER (WHERE state = 'running' AND lease_expires_at < now()) AS expired
           FROM ingest_jobs WHERE state IN ('queued', 'running') GROUP BY tenant_id"""
    )
    return [QueueDepth(r["tenant_id"], r["queued"], r["running"], r["oldest"], r["expired"]) for r in rows]

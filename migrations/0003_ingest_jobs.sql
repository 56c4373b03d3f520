-- omniRAG ingestion as durable jobs: a queue table claimed with FOR UPDATE SKIP LOCKED (no broker).
--
-- State machine (enforced here by CHECKs and in services/ingest/_queue.py by guarded UPDATEs):
--
--   queued --claim--> running --ok--------------------------> succeeded
--     ^  \              |  |----bad document (not retryable)-> failed
--     |   \             |  |----retryable, attempts left-----> queued  (run_at = now() + backoff)
--     |    \            |  |----retryable, none left---------> dead
--     |     \           |  |----lease expired (worker died)--> queued | dead (reaper)
--     |      \          |  |----shutdown (released)----------> queued  (attempt not counted)
--     |       \         |  '----cancel requested-------------> cancelled
--     |        '--cancel (at once)---------------------------> cancelled
--     '---- requeue (operator: failed | dead -> queued) ----------'
--
-- A transition is one UPDATE guarded by the state it leaves (and, for a running job, by the lease
-- token of the attempt that makes it), so a transition from a wrong state or by a stale worker
-- changes nothing and the caller sees zero rows.

CREATE TABLE ingest_jobs (
    id               bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id        text        NOT NULL,
    doc_id           text        NOT NULL,
    content_hash     text        NOT NULL,     -- sha256 of the text, or of 'url:' || url for a url job
    idempotency_key  text,
    source           text        NOT NULL CHECK (source IN ('text', 'url')),
    state            text        NOT NULL DEFAULT 'queued'
                     CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'dead', 'cancelled')),
    priority         smallint    NOT NULL DEFAULT 100,   -- lower runs sooner
    run_at           timestamptz NOT NULL DEFAULT now(), -- not before; retries push it out (backoff)
    attempts         integer     NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    max_attempts     integer     NOT NULL DEFAULT 5 CHECK (max_attempts > 0),
    lease_token      uuid,                               -- fencing token of the current attempt
    lease_owner      text,                               -- worker id, for operators
    lease_expires_at timestamptz,
    cancel_requested boolean     NOT NULL DEFAULT false,
    chunks_total     integer,
    chunks_done      integer     NOT NULL DEFAULT 0,
    last_error       text,
    last_error_kind  text,                               -- retryable | permanent | lease_expired | ...
    created_at       timestamptz NOT NULL DEFAULT now(),
    started_at       timestamptz,                        -- first claim
    finished_at      timestamptz,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    -- A running job always has a lease, and only a running job has one.
    CONSTRAINT ingest_jobs_lease_iff_running CHECK ((state = 'running') = (lease_token IS NOT NULL)),
    CONSTRAINT ingest_jobs_finished_iff_terminal
        CHECK ((state IN ('succeeded', 'failed', 'dead', 'cancelled')) = (finished_at IS NOT NULL))
)
WITH (
    -- Why these settings: a queue table churns (every job is inserted, updated 3-10 times, then
    -- deleted), while its live size stays small. With the defaults (vacuum at 20% dead rows) dead
    -- tuples pile up at the head of the runnable index and every claim walks over them — the classic
    -- "claims slow down as the table grows" problem. So:
    fillfactor = 70,                          -- room on each page for HOT updates (heartbeats and
                                              -- progress change no indexed column)
    autovacuum_vacuum_scale_factor = 0.0,     -- vacuum after a fixed number of dead rows,
    autovacuum_vacuum_threshold = 2000,       -- independent of how big the table happens to be
    autovacuum_vacuum_insert_scale_factor = 0.0,
    autovacuum_vacuum_insert_threshold = 5000, -- keep the visibility map fresh under insert bursts
    autovacuum_analyze_scale_factor = 0.0,
    autovacuum_analyze_threshold = 2000,      -- state distribution changes fast: keep plans on the
                                              -- partial indexes
    autovacuum_vacuum_cost_delay = 0          -- the table is small: vacuum it at full speed
);

-- Runnable jobs only (partial): per-tenant claim order, and the loose scan that lists tenants with work.
CREATE INDEX ingest_jobs_runnable ON ingest_jobs (tenant_id, priority, run_at, id) WHERE state = 'queued';
-- Running jobs only: per-tenant running count (fairness cap) and the lease reaper. No lease column is
-- indexed, so a heartbeat stays a HOT update.
CREATE INDEX ingest_jobs_running ON ingest_jobs (tenant_id) WHERE state = 'running';
-- Idempotent submit: one active job per (tenant, document, content); INSERT ... ON CONFLICT DO NOTHING.
CREATE UNIQUE INDEX ingest_jobs_active_doc ON ingest_jobs (tenant_id, doc_id, content_hash)
    WHERE state IN ('queued', 'running');
-- Idempotency-Key header: unique per tenant for as long as the job is retained.
CREATE UNIQUE INDEX ingest_jobs_idempotency_key ON ingest_jobs (tenant_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
-- Listing a tenant's jobs, newest first (keyset pagination on id).
CREATE INDEX ingest_jobs_tenant_list ON ingest_jobs (tenant_id, id);
-- Retention: finished jobs by age.
CREATE INDEX ingest_jobs_finished ON ingest_jobs (finished_at)
    WHERE state IN ('succeeded', 'failed', 'dead', 'cancelled');

-- The document itself, kept out of the queue table so that queue rows stay narrow (claims and
-- heartbeats rewrite small tuples). Deleted with the job; dropped early once a job succeeded.
CREATE TABLE ingest_job_inputs (
    job_id   bigint PRIMARY KEY REFERENCES ingest_jobs (id) ON DELETE CASCADE,
    text     text,
    url      text,
    metadata jsonb  NOT NULL DEFAULT '{}'::jsonb,
    CHECK ((text IS NULL) <> (url IS NULL))
);

-- Chunks an attempt has embedded so far, keyed by job: written while the job runs (fenced by its
-- lease token), moved into `chunks` in the completing transaction, so searches see either the old or
-- the new version of a document, never a mix. A reclaimed job reuses what its predecessor staged.
CREATE TABLE ingest_chunk_staging (
    job_id    bigint      NOT NULL REFERENCES ingest_jobs (id) ON DELETE CASCADE,
    chunk_no  integer     NOT NULL CHECK (chunk_no >= 0),
    content   text        NOT NULL,
    embedding vector(384) NOT NULL,
    PRIMARY KEY (job_id, chunk_no)
)
WITH (autovacuum_vacuum_scale_factor = 0.0, autovacuum_vacuum_threshold = 5000);

-- Which job's content the chunks of a document hold. A job replaces a document's chunks only if it is
-- newer (larger id) than the job that wrote them, so an old version finishing late never overwrites
-- a newer one.
CREATE TABLE ingest_documents (
    tenant_id    text        NOT NULL,
    doc_id       text        NOT NULL,
    job_id       bigint      NOT NULL,
    content_hash text        NOT NULL,
    chunks       integer     NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, doc_id)
);

-- Wake idle workers when jobs arrive, whoever inserts them (API, bulk SQL, a benchmark): one NOTIFY
-- per statement, not per row. Workers also poll, so a lost notification only delays a claim.
CREATE FUNCTION ingest_jobs_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('ingest_jobs', '');
    RETURN NULL;
END
$$;

CREATE TRIGGER ingest_jobs_inserted AFTER INSERT ON ingest_jobs
    FOR EACH STATEMENT EXECUTE FUNCTION ingest_jobs_notify();

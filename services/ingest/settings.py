"""Settings of the ingest API (``INGEST_API_*``), the ingest worker (``INGEST_WORKER_*``) and the
providers the worker calls (``FLOODGATE_*``: `providers.ProviderSettings`, shared with the other
services; unlike the online service's, unset means "none", not the simulator).

==================================  ===========  =============================================================
variable                            default      meaning
==================================  ===========  =============================================================
INGEST_API_PORT                     8082         port of the submit/status API
INGEST_API_MAX_TEXT_BYTES           1048576      largest ``text`` accepted (413 naming the field above it)
INGEST_API_QUOTA_RETRY_AFTER        5            seconds a refused submitter is told to wait
INGEST_API_MAX_ATTEMPTS             5            attempts per job before it is dead
INGEST_API_QUEUE_SAMPLE_INTERVAL    15           seconds between the API's samples of the queue's depth
INGEST_WORKER_PORT                  8083         port of the worker's /healthz, /readyz, /metrics
INGEST_WORKER_JOB_CONCURRENCY       8            jobs one worker runs at once
INGEST_WORKER_CLAIM_BATCH           8            jobs claimed per claim statement (at most the free slots)
INGEST_WORKER_LEASE_SECONDS         15           lease length; heartbeats every third of it
INGEST_WORKER_POLL_INTERVAL         1.0          claim polling when idle (NOTIFY wakes sooner)
INGEST_WORKER_SHUTDOWN_GRACE        10           seconds running jobs get to finish on SIGTERM
INGEST_WORKER_RETRY_BACKOFF_BASE    2.0          first retry after 1-2 s, doubling ...
INGEST_WORKER_RETRY_BACKOFF_CAP     300          ... up to 150-300 s
INGEST_WORKER_RETENTION_SECONDS     604800       finished jobs are deleted after this
INGEST_WORKER_CHUNK_TOKENS          200          tokens per chunk
INGEST_WORKER_CHUNK_OVERLAP         40           tokens shared by consecutive chunks
INGEST_WORKER_EMBED_BATCH_SIZE      16           chunks per embeddings request
INGEST_WORKER_EMBED_PARALLELISM     4            embeddings requests in flight per job (the process-wide
                                                 bound is the budget's embed limit)
FLOODGATE_EMBED_BASE_URL            (none)       embeddings provider (OpenAI-compatible)
FLOODGATE_EMBED_API_KEY / _MODEL    "" / sim-embed-384  its key and model (empty = default)
FLOODGATE_FETCH_BASE_URL / _API_KEY (none)       document fetch API (url jobs)
==================================  ===========  =============================================================

Each tenant's queued-job quota and running cap across all workers are the budget file's
(``[tenants]``: ``queued_jobs``, ``running_jobs``; docs/tenants.md), not settings.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from chassis import BaseServiceSettings
from pydantic import Field

__all__ = ["PROVIDER_DEPENDENCIES", "IngestApiSettings", "IngestWorkerSettings"]

#: The HTTP dependencies of the ingest worker, as named in the budget file (``embed`` required).
PROVIDER_DEPENDENCIES = ("embed", "fetch")


class IngestApiSettings(BaseServiceSettings):
    port: int = Field(default=8082, ge=0, le=65535)
    database_url: str = "postgresql://postgres@127.0.0.1:5433/floodgate"
    budget_file: Path = Path("config/budget.toml")
    max_body_bytes: int = Field(default=5 * 1_048_576, gt=0)
    max_text_bytes: int = Field(default=1_048_576, gt=0)
    max_metadata_bytes: int = Field(default=16_384, gt=0)
    quota_retry_after: float = Field(default=5.0, gt=0)
    max_attempts: int = Field(default=5, ge=1, le=50)
    # The queue's depth gauges (`_sampler.sample_queue`): the API samples them even with no worker.
    queue_sample_interval: float = Field(default=15.0, gt=0)


class IngestWorkerSettings(BaseServiceSettings):
    """The worker serves only probes and metrics on its port."""

    port: int = Field(default=8083, ge=0, le=65535)
    database_url: str = "postgresql://postgres@127.0.0.1:5433/floodgate"
    budget_file: Path = Path("config/budget.toml")
    worker_id: str = Field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    job_concurrency: int = Field(default=8, ge=1, le=1000)
    claim_batch: int = Field(default=8, ge=1, le=1000)
    lease_seconds: float = Field(default=15.0, gt=0)
    poll_interval: float = Field(default=1.0, gt=0)
    shutdown_grace: float = Field(default=10.0, ge=0)
    retry_backoff_base: float = Field(default=2.0, gt=0)
    retry_backoff_cap: float = Field(default=300.0, gt=0)
    reap_interval: float = Field(default=2.0, gt=0)
    maintenance_interval: float = Field(default=15.0, gt=0)
    retention_seconds: float = Field(default=7 * 86400.0, ge=0)
    chunk_tokens: int = Field(default=200, ge=1)
    chunk_overlap: int = Field(default=40, ge=0)
    max_chunks: int = Field(default=5000, ge=1)
    max_text_bytes: int = Field(default=4 * 1_048_576, gt=0)
    embed_batch_size: int = Field(default=16, ge=1, le=2048)
    embed_parallelism: int = Field(default=4, ge=1)
    # Spread embed calls evenly over the observed call latency instead of sending them in bursts
    # (services/ingest/_timing.py::CallSpacer). Off: the limiter alone.
    embed_spacing: bool = True
    #: the worker's CPU priority below the answers users wait for (os.nice at start-up: 0..19, higher
    #: yields more): on cores it shares with the online service, background ingestion runs on the CPU
    #: the answers leave (docs/loadtest.md, isolation)
    nice: int = Field(default=0, ge=0, le=19)
    #: dynamic shares (docs/budget.md, "Dynamic shares"): register in the database and divide the
    #: embed and fetch limits by the live workers; off: the budget's replicas x workers
    membership: bool = True

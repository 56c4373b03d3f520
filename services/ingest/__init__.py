"""omniRAG ingestion as durable jobs: a submit/status API and workers over a PostgreSQL queue table.

Jobs are rows in ``ingest_jobs`` claimed with ``FOR UPDATE SKIP LOCKED`` under a per-tenant running
cap, run under leases that workers extend and that fence every write, retried with backoff, and
never lost to a crash, a deploy or a database restart. See notes/README_ingest.md for the design.
"""

from ._chunking import ChunkingConfig, split_into_chunks
from ._errors import BadDocument, FailureKind, JobError, LeaseLost, classify_failure
from ._openapi import build_openapi
from ._pipeline import DocumentFetcher, JobPipeline, PipelineConfig, TextEmbedder
from ._states import ACTIVE_STATES, TERMINAL_STATES, TRANSITIONS, JobState, Transition, TransitionRefused
from ._timing import CallSpacer, CallSpacerStatistics, ClaimPacer, LeaseClock, RetryBackoff
from ._worker import StopReason, Worker, WorkerConfig, WorkerStatistics, keep_leases
from .settings import IngestApiSettings, IngestWorkerSettings

__all__ = [
    "ACTIVE_STATES",
    "TERMINAL_STATES",
    "TRANSITIONS",
    "BadDocument",
    "CallSpacer",
    "CallSpacerStatistics",
    "ChunkingConfig",
    "ClaimPacer",
    "DocumentFetcher",
    "FailureKind",
    "IngestApiSettings",
    "IngestWorkerSettings",
    "JobError",
    "JobPipeline",
    "JobState",
    "LeaseClock",
    "LeaseLost",
    "PipelineConfig",
    "RetryBackoff",
    "StopReason",
    "TextEmbedder",
    "Transition",
    "TransitionRefused",
    "Worker",
    "WorkerConfig",
    "WorkerStatistics",
    "build_openapi",
    "classify_failure",
    "keep_leases",
    "split_into_chunks",
]

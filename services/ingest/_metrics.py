"""Prometheus metrics of the ingest API and workers, on an explicit registry (never the global one)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

if TYPE_CHECKING:
    from ._queue import QueueDepth

__all__ = ["IngestApiMetrics", "QueueGauges", "WorkerMetrics"]

_DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900)
_CLAIM_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
# Submission to finish, or to first claim: a queue that backs up makes these minutes or hours.
_WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 1800, 3600, 7200, 21600)


def _job_latency(registry: CollectorRegistry) -> Histogram:
    """``ingest_job_latency_seconds{outcome}``: observed where a job reaches a final state (a
    worker's settling write or reaper; the API's cancel of a queued job), with the latency the
    finishing statement computed from the job row (`_queue.Settled`)."""
    return Histogram(
        "ingest_job_latency_seconds",
        "Seconds from a job's submission to its final state (succeeded, failed, dead, cancelled)",
        ["outcome"],
        registry=registry,
        buckets=_WAIT_BUCKETS,
    )


class QueueGauges:
    """The whole queue as one sampler last saw it (`set_depth` with `_queue.queue_depth`'s rows).

    Every worker samples it before each reap, and the API on its own interval (`_sampler`): every
    deployment has an API, while one may run no worker, and a queue nobody works is the one an
    operator must see. Several processes report the same figures: read them with ``max``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.queue_depth = Gauge(
            "ingest_queue_depth",
            "Jobs by tenant and active state (whole queue)",
            ["tenant", "state"],
            registry=registry,
        )
        self.oldest_queued_age = Gauge(
            "ingest_oldest_runnable_job_age_seconds",
            "How long the oldest runnable job of a tenant has waited",
            ["tenant"],
            registry=registry,
        )
        self.expired_leases = Gauge(
            "ingest_jobs_expired_leases",
            "Running jobs whose lease has run out and that no reaper has taken back yet (whole queue)",
            registry=registry,
        )
        self._tenants: set[str] = set()

    def set_depth(self, depths: Iterable[QueueDepth]) -> None:
        seen = set()
        expired = 0
        for d in depths:
            seen.add(d.tenant_id)
            self.queue_depth.labels(d.tenant_id, "queued").set(d.queued)
            self.queue_depth.labels(d.tenant_id, "running").set(d.running)
            self.oldest_queued_age.labels(d.tenant_id).set(d.oldest_runnable_age)
            expired += d.expired_leases
        self.expired_leases.set(expired)
        for gone in self._tenants - seen:  # a drained tenant reads 0 rather than its last value
            self.queue_depth.labels(gone, "queued").set(0)
            self.queue_depth.labels(gone, "running").set(0)
            self.oldest_queued_age.labels(gone).set(0)
        self._tenants = seen


class WorkerMetrics(QueueGauges):
    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__(registry)
        self.job_latency = _job_latency(registry)
        self.queue_wait = Histogram(
            "ingest_queue_wait_seconds",
            "Seconds from a job's submission to its first claim",
            registry=registry,
            buckets=_WAIT_BUCKETS,
        )
        self.claim_duration = Histogram(
            "ingest_claim_duration_seconds",
            "Time of one claim transaction",
            registry=registry,
            buckets=_CLAIM_BUCKETS,
        )
        self.claimed = Counter(
            "ingest_jobs_claimed", "Jobs claimed (attempts started) by this worker", registry=registry
        )
        self.running = Gauge("ingest_jobs_running_here", "Jobs this worker is running now", registry=registry)
        self.outcomes = Counter(
            "ingest_job_outcomes", "Attempts by how they ended on this worker", ["outcome"], registry=registry
        )
        self.job_duration = Histogram(
            "ingest_job_duration_seconds",
            "Duration of one attempt, by outcome",
            ["outcome"],
            registry=registry,
            buckets=_DURATION_BUCKETS,
        )
        self.retries = Counter(
            "ingest_job_retries", "Attempts that failed and were scheduled again", registry=registry
        )
        self.dead = Counter(
            "ingest_jobs_dead", "Jobs moved to dead (retries exhausted or lease expiries)", registry=registry
        )
        self.lease_expiries = Counter(
            "ingest_lease_expiries", "Leases found expired and reclaimed by the reaper", registry=registry
        )
        self.refused = Counter(
            "ingest_transitions_refused",
            "Transitions that changed nothing (wrong state or stale lease token)",
            ["transition"],
            registry=registry,
        )
        self.chunks = Counter("ingest_chunks_embedded", "Chunks embedded and staged", registry=registry)
        self.purged = Counter(
            "ingest_jobs_purged", "Finished jobs deleted after the retention period", registry=registry
        )


class IngestApiMetrics(QueueGauges):
    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__(registry)
        self.submissions = Counter(
            "ingest_submissions", "Job submissions by result", ["result"], registry=registry
        )
        self.cancels = Counter(
            "ingest_cancel_requests", "Cancel requests by the state they found", ["state"], registry=registry
        )
        # A queued job cancelled here reaches its final state in the API, not in a worker.
        self.job_latency = _job_latency(registry)

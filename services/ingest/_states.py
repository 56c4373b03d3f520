"""The job state machine as data: which transitions exist, and what a refused one looks like.

The database enforces it (every transition is one UPDATE guarded by the state it leaves, see
``_queue.py``); this module is the same table in Python, so the API, the worker and the tests name
transitions the same way and a refused transition is reported, never silent.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["ACTIVE_STATES", "TERMINAL_STATES", "TRANSITIONS", "JobState", "Transition", "TransitionRefused"]


class JobState(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # the document is at fault (not retryable): fix the input, then requeue
    DEAD = "dead"  # retryable errors until max_attempts ran out: the downstream is at fault
    CANCELLED = "cancelled"


ACTIVE_STATES = frozenset({JobState.QUEUED, JobState.RUNNING})
TERMINAL_STATES = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.DEAD, JobState.CANCELLED})


class Transition(enum.StrEnum):
    """Every edge of the diagram in the README; the value is the metric/log label."""

    CLAIM = "claim"  # queued -> running
    SUCCEED = "succeed"  # running -> succeeded
    FAIL = "fail"  # running -> failed (not retryable)
    RETRY = "retry"  # running -> queued (retryable, attempts left, run_at = now + backoff)
    BURY = "bury"  # running -> dead (retryable, no attempts left)
    RELEASE = "release"  # running -> queued (graceful shutdown; the attempt is not counted)
    EXPIRE = "expire"  # running -> queued | dead (lease expired: the worker died)
    CANCEL_QUEUED = "cancel_queued"  # queued -> cancelled
    CANCEL_RUNNING = "cancel_running"  # running -> cancelled (the worker acknowledges a request)
    REQUEUE = "requeue"  # failed | dead -> queued (operator)


S = JobState
TRANSITIONS: dict[Transition, tuple[frozenset[JobState], frozenset[JobState]]] = {
    Transition.CLAIM: (frozenset({S.QUEUED}), frozenset({S.RUNNING})),
    Transition.SUCCEED: (frozenset({S.RUNNING}), frozenset({S.SUCCEEDED})),
    Transition.FAIL: (frozenset({S.RUNNING}), frozenset({S.FAILED})),
    Transition.RETRY: (frozenset({S.RUNNING}), frozenset({S.QUEUED})),
    Transition.BURY: (frozenset({S.RUNNING}), frozenset({S.DEAD})),
    Transition.RELEASE: (frozenset({S.RUNNING}), frozenset({S.QUEUED})),
    Transition.EXPIRE: (frozenset({S.RUNNING}), frozenset({S.QUEUED, S.DEAD})),
    Transition.CANCEL_QUEUED: (frozenset({S.QUEUED}), frozenset({S.CANCELLED})),
    Transition.CANCEL_RUNNING: (frozenset({S.RUNNING}), frozenset({S.CANCELLED})),
    Transition.REQUEUE: (frozenset({S.FAILED, S.DEAD}), frozenset({S.QUEUED})),
}


@dataclass(frozen=True)
class TransitionRefused:
    """A transition that changed nothing: the job was not in a state it leaves, or the lease token
    was not the current one (a stale worker). Returned, logged and counted — never raised past the
    worker, because for a stale worker "refused" is the correct, safe outcome."""

    job_id: int
    transition: Transition
    reason: str = "job not in a source state, or lease token not current"

"""What can go wrong with a job, and which failures are worth another attempt.

::

    JobError
     ├── BadDocument        the input is at fault (empty, too many chunks, fetch said 404)  -> failed
     └── LeaseLost          this attempt no longer owns the job; stop and write nothing   -> (nothing)

Everything else is classified by :func:`classify_failure`: downstream 429/5xx, a 2xx answer that
does not parse (``providers.MalformedAnswer``), timeouts, overload and open breakers, transport and
transient database errors (``floodgate.is_transient_pg_error``) are retryable; a downstream 4xx other than
408/409/425/429 means the request (the document) is bad. An unknown exception is treated as
retryable — ``max_attempts`` bounds it, and the job ends ``dead`` with the error kept, visible.
"""

from __future__ import annotations

import enum

import chassis
import floodgate
import httpx
import trio

__all__ = [
    "BadDocument",
    "FailureKind",
    "JobError",
    "LeaseLost",
    "classify_failure",
    "primary_error",
    "provider_retry_after",
]

_RETRYABLE_4XX = frozenset({408, 409, 425, 429})


class JobError(Exception):
    """Base of the ingest worker's own errors."""


class BadDocument(JobError):
    """The document cannot be ingested as it is; retrying cannot help."""


class LeaseLost(JobError):
    """The job's lease expired or was taken over: another attempt owns the job now."""


class FailureKind(enum.StrEnum):
    RETRYABLE = "retryable"
    PERMANENT = "permanent"


def classify_failure(exc: BaseException) -> FailureKind:
    if isinstance(exc, BadDocument):
        return FailureKind.PERMANENT
    if isinstance(exc, floodgate.DependencyError):
        status = exc.status
        if status is not None and 400 <= status < 500 and status not in _RETRYABLE_4XX:
            return FailureKind.PERMANENT
        return FailureKind.RETRYABLE
    if isinstance(exc, floodgate.FloodgateError | trio.TooSlowError | httpx.TransportError):
        return FailureKind.RETRYABLE
    if floodgate.is_transient_pg_error(exc):
        return FailureKind.RETRYABLE
    return FailureKind.RETRYABLE  # unknown: bounded by max_attempts, ends dead with the error shown


def primary_error(exc: BaseException) -> BaseException:
    """The one error that decides an attempt's fate when parallel steps failed together (a nursery's
    exception group): a lost lease first (write nothing), then a bad document, then the first error."""
    leaves = list(chassis.exception_leaves(exc))
    for leaf in leaves:
        if isinstance(leaf, LeaseLost):
            return leaf
    for leaf in leaves:
        if classify_failure(leaf) is FailureKind.PERMANENT:
            return leaf
    return leaves[0] if leaves else exc


def provider_retry_after(exc: BaseException) -> float | None:
    """The longest wait a provider asked for in ``exc`` (seconds), or None when no part of it is a
    provider's 429: a `DependencyError` with status 429 and a Retry-After, a `floodgate.CoolingDown`
    (the dependency pauses after such a 429; its ``retry_after`` is the pause left), or either as
    the cause of another error (a retry budget spent on a 429). Parallel steps that failed together
    (an exception group) are all read: the job must wait for the longest."""
    waits: list[float] = []
    for leaf in chassis.exception_leaves(exc):
        seen: BaseException | None = leaf
        while seen is not None:
            if isinstance(seen, floodgate.CoolingDown) or (
                isinstance(seen, floodgate.DependencyError) and seen.status == 429
            ):
                if seen.retry_after is not None:
                    waits.append(seen.retry_after)
                break
            seen = seen.__cause__
    return max(waits, default=None)

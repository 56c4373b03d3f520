"""Each tenant's LLM requests in flight, and the tokens one of them uses on average: the token
budgets' reservation.

Asking a budget before a request and counting its tokens after leaves the requests already in flight
uncounted: without more, a window could end over its budget by all of them. So the gateway also
tells this service when a request starts and when it ends, as two descriptors of its own with one
hit each: ``[("budget", "requests_started"), ("tenant", <t>)]`` in the call that asks the budgets,
``[("budget", "requests_finished"), ("tenant", <t>)]`` in the report at the end of the stream (sent
for every request, whatever it used). They feed monotonic counters — Envoy's hits are unsigned, so
nothing is ever subtracted — in the same store as the budgets (memory or Redis: shared by every
gateway), together with what the reports carried for each budget window (their number and their
sum). An ask then knows ``in_flight = started - finished`` (this request included) and the mean use
of a request, and a budget refuses when ``used + in_flight x mean`` would pass its limit: the
requests in flight are reserved at their mean, so a window ends over its budget only by how far
they differ from it.

The counters are kept per bucket of `BUCKET_SECONDS` and read over this bucket and the one before,
so a start whose end is never reported (the ask cancelled with its client, the report lost) is
forgotten within two buckets instead of holding a reservation for ever; a request lasts far less
than a bucket (the LLM routes' timeouts are seconds). One store round trip as before: the reads are
increments of zero in the ask's own batch.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import NamedTuple

from ._store import Increment

__all__ = [
    "BUCKET_SECONDS",
    "BUDGET_KEY",
    "REQUESTS_FINISHED",
    "REQUESTS_STARTED",
    "InFlightPlan",
    "in_flight_from",
    "in_flight_keys",
    "plan_in_flight",
]

#: the first entry's key of every budget descriptor
BUDGET_KEY = "budget"
#: the budget descriptors' values that count a tenant's requests starting and ending
REQUESTS_STARTED, REQUESTS_FINISHED = "requests_started", "requests_finished"
#: the in-flight counters' bucket: far longer than a request, short enough to forget a lost end soon
BUCKET_SECONDS = 60

Entries = tuple[tuple[str, str], ...]


class InFlightPlan(NamedTuple):
    """What an ask read of its tenant's in-flight counters: ``windows`` (the budget windows it asks,
    in order) and where its counters start in the plan's increments (`plan_in_flight` lays them out:
    per bucket, started, finished, then per window its reports and their sum)."""

    offset: int
    windows: tuple[str, ...]

    def reservations(self, counts: Sequence[int]) -> dict[str, int]:
        """Budget window name -> the counter units reserved for the tenant's requests in flight
        (this one included) at the mean a report of that window carried; 0 while no report was seen."""
        per_bucket = 2 + 2 * len(self.windows)
        values = counts[self.offset : self.offset + 2 * per_bucket]
        buckets = (values[:per_bucket], values[per_bucket:])
        # at least this request; never negative (an end whose start fell out of the buckets)
        in_flight = max(1, _started_minus_finished(buckets))
        reserved = {}
        for i, window in enumerate(self.windows):
            reports = sum(b[2 + 2 * i] for b in buckets)
            total = sum(b[3 + 2 * i] for b in buckets)
            reserved[window] = math.ceil(in_flight * total / reports) if reports else 0
        return reserved


def _started_minus_finished(buckets: Iterable[Sequence[int]]) -> int:
    """Starts less ends over the buckets, each laid out as `_keys` names its counters."""
    return sum(b[0] - b[1] for b in buckets)


def _buckets(now: float) -> tuple[int, int]:
    """The start of the bucket ``now`` falls in, and of the one before: the two an ask reads."""
    bucket = math.floor(now / BUCKET_SECONDS) * BUCKET_SECONDS
    return bucket, bucket - BUCKET_SECONDS


def _tenant_of(entries: Entries, value: str) -> str | None:
    if len(entries) == 2 and entries[0] == (BUDGET_KEY, value) and entries[1][0] == "tenant":
        return entries[1][1]
    return None


def _budget_window(entries: Entries, tenant: str) -> str | None:
    """The window of a tenant-wide budget descriptor ``[("budget", <window>), ("tenant", <t>)]``."""
    if len(entries) == 2 and entries[0][0] == BUDGET_KEY and entries[1] == ("tenant", tenant):
        window = entries[0][1]
        return None if window in (REQUESTS_STARTED, REQUESTS_FINISHED) else window
    return None


def _keys(stem: str, tenant: str, bucket: int, windows: Iterable[str]) -> list[str]:
    base = f"{stem}{BUDGET_KEY}_in_flight_{tenant}_{bucket}_"
    keys = [base + "started", base + "finished"]
    for window in windows:
        keys += [f"{base}{window}_reports", f"{base}{window}_sum"]
    return keys


def in_flight_keys(key_stem: str, tenant: str, now: float) -> list[str]:
    """The counters of ``tenant``'s starts and ends over the two buckets an ask reads."""
    return [k for start in _buckets(now) for k in _keys(key_stem, tenant, start, ())]


def in_flight_from(values: Sequence[int]) -> int:
    """Requests in flight from the values of `in_flight_keys` (never negative)."""
    return max(0, _started_minus_finished((values[:2], values[2:])))


def plan_in_flight(
    descriptors: Sequence[tuple[Entries, int]], *, now: float, key_stem: str, offset: int
) -> tuple[list[Increment], InFlightPlan | None]:
    """The in-flight counters a call touches, from its ``descriptors`` (entries, hits):

    - a call with ``requests_started`` (the ask before a request): one start, and a read of this
      bucket's and the last one's counters for the windows it asks — an `InFlightPlan` whose
      reservations its decision applies (``offset``: where its increments begin in the batch);
    - a call with ``requests_finished`` (the report at the end of the stream): one end, and for
      each tenant-wide budget descriptor with hits, one report of that many;
    - any other call: nothing (empty, None).
    """
    # every call passes here and most carry neither descriptor: no clock arithmetic before a match
    expire = 2 * BUCKET_SECONDS
    for entries, _ in descriptors:
        tenant = _tenant_of(entries, REQUESTS_STARTED)
        if tenant is None:
            continue
        windows = tuple(
            dict.fromkeys(w for w in (_budget_window(e, tenant) for e, hits in descriptors if hits == 0) if w)
        )
        increments = []
        bucket, previous = _buckets(now)
        for start in (bucket, previous):
            for i, key in enumerate(_keys(key_stem, tenant, start, windows)):
                increments.append(Increment(key, 1 if (i == 0 and start == bucket) else 0, expire))
        return increments, InFlightPlan(offset, windows)
    for entries, _ in descriptors:
        tenant = _tenant_of(entries, REQUESTS_FINISHED)
        if tenant is None:
            continue
        reported: Mapping[str, int] = {
            w: hits for e, hits in descriptors if hits > 0 and (w := _budget_window(e, tenant))
        }
        keys = _keys(key_stem, tenant, _buckets(now)[0], reported)
        increments = [Increment(keys[1], 1, expire)]
        for i, hits in enumerate(reported.values()):
            increments += [Increment(keys[2 + 2 * i], 1, expire), Increment(keys[3 + 2 * i], hits, expire)]
        return increments, None
    return [], None

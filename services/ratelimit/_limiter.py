"""Fixed-window rate-limit decisions, with the arithmetic kept apart from the counter I/O.

A decision is made in three steps, the way the reference service makes it:

1. ``RateLimiter.plan`` (sync, pure): match each request descriptor to a limit, compute its window
   (``floor(now / unit) * unit``) and the counter key ``<prefix><domain>_<k>_<v>_..._<window start>``;
   the result lists the increments the store must make.
2. ``CounterStore.increment`` (the only I/O): add the hits to every counter in one round trip
   and return the new values.
3. ``DecisionPlan.decide`` (sync, pure): compare each new value with its limit; OVER_LIMIT when the
   value passes ``requests_per_unit`` (a descriptor with zero hits asks whether anything is left:
   OVER_LIMIT when the value has reached it); ``limit_remaining`` and ``duration_until_reset`` for
   the ``x-ratelimit-*`` headers Envoy emits. A token budget's question also reserves the tenant's
   requests in flight at their mean (`_in_flight`): OVER_LIMIT when the value plus that would pass it.

Fixed windows let a client send up to 2x the limit across a window boundary; the reference service
accepts that for the price of one counter per window, and so does this one.
"""

from __future__ import annotations

import enum
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import NamedTuple

import floodgate

from ._config import MatchedLimit, RateLimit, RateLimitConfig
from ._in_flight import InFlightPlan, in_flight_from, in_flight_keys, plan_in_flight
from ._store import CounterStore, Increment

__all__ = [
    "Code",
    "Decision",
    "DecisionPlan",
    "Descriptor",
    "DescriptorDecision",
    "RateLimiter",
    "RateLimiterStatistics",
    "Reading",
]

Clock = Callable[[], float]

#: remembered descriptor matches per limiter (tenants x routes in practice)
_MATCH_CACHE_SIZE = 65536
#: no reservations (a call without requests in flight to reserve)
_NOTHING: Mapping[str, int] = MappingProxyType({})


class Code(enum.Enum):
    OK = "ok"
    OVER_LIMIT = "over_limit"


# The per-call value objects are NamedTuples, not frozen dataclasses: equally immutable, and
# cheaper to create (a frozen dataclass sets each field through object.__setattr__), which
# matters on a path every decision takes.


class Descriptor(NamedTuple):
    """One request descriptor: ordered ``(key, value)`` entries, e.g. ``(("tenant", "a"), ("route", "x"))``."""

    entries: tuple[tuple[str, str], ...]
    #: hits for this descriptor only (overrides the request's hits_addend)
    hits_addend: int | None = None


class DescriptorDecision(NamedTuple):
    """The verdict for one descriptor. ``limit`` is None when no configured limit matched."""

    code: Code
    limit: RateLimit | None = None
    limit_remaining: int = 0
    #: seconds until the current window ends (None without a limit)
    duration_until_reset: float | None = None
    #: over the limit, but the limit is in shadow mode, so the request was allowed
    shadow_over_limit: bool = False
    metric_key: str | None = None


class Decision(NamedTuple):
    code: Code
    statuses: tuple[DescriptorDecision, ...]

    @property
    def retry_after(self) -> int | None:
        """Whole seconds until every over-limit window has reset (the ``Retry-After`` value), or None."""
        if self.code is Code.OK:  # the common case, asked on every call: nothing to wait for
            return None
        waits = [
            s.duration_until_reset
            for s in self.statuses
            if s.code is Code.OVER_LIMIT and s.duration_until_reset is not None
        ]
        return floodgate.retry_after_seconds(max(waits)) if waits else None


class Reading(NamedTuple):
    """A descriptor's counter in its current window, read without counting (`RateLimiter.read`)."""

    limit: RateLimit
    used: int
    #: seconds until the window ends
    reset_in: float


class _Slot(NamedTuple):
    """A matched descriptor's counter in the current window."""

    matched: MatchedLimit
    hits: int
    reset_in: float
    counter_index: int  # index into the store's results; -1 for unlimited (nothing counted)


class DecisionPlan(NamedTuple):
    """What one request needs from the counter store, and how to judge what it answers."""

    slots: tuple[_Slot | None, ...]
    increments: tuple[Increment, ...]
    #: a token budget's question with the tenant's requests in flight (`_in_flight`), else None
    in_flight: InFlightPlan | None = None

    def decide(self, counts: Sequence[int]) -> Decision:
        """Judge the store's new counter values (one per increment, in order)."""
        if len(counts) != len(self.increments):
            raise ValueError(f"expected {len(self.increments)} counter values, got {len(counts)}")
        reserved = self.in_flight.reservations(counts) if self.in_flight is not None else _NOTHING
        # list comprehensions, not generators: this runs on every call, often on a cold CPU cache
        statuses = tuple([self._judge(slot, counts, reserved) for slot in self.slots])
        over = Code.OVER_LIMIT in [s.code for s in statuses]
        return Decision(code=Code.OVER_LIMIT if over else Code.OK, statuses=statuses)

    @staticmethod
    def _judge(slot: _Slot | None, counts: Sequence[int], reserved: Mapping[str, int]) -> DescriptorDecision:
        if slot is None:
            return DescriptorDecision(code=Code.OK)
        limit = slot.matched.rate_limit
        if limit.unlimited:
            return DescriptorDecision(code=Code.OK, metric_key=slot.matched.metric_key)
        after = counts[slot.counter_index]
        remaining = max(0, limit.requests_per_unit - after)
        # A descriptor with no hits is a question, not a use: "is anything left?" (a token budget,
        # asked before the request; its tokens are reported once the answer is known). It is over
        # when nothing is left, where a request that adds hits is over only when it passes the limit.
        # A budget's question is also over when the tenant's requests in flight (this one included),
        # reserved at their mean, would take the window past its limit.
        held = reserved.get(limit.name, 0) if not slot.hits and limit.name is not None else 0
        if (after < limit.requests_per_unit and after + held <= limit.requests_per_unit) or (
            slot.hits and after == limit.requests_per_unit
        ):
            return DescriptorDecision(
                Code.OK, limit, remaining, slot.reset_in, metric_key=slot.matched.metric_key
            )
        if slot.matched.shadow_mode:
            # Shadow mode: report as the reference does (OK, nothing left) and let the metric show it.
            return DescriptorDecision(
                Code.OK, limit, 0, slot.reset_in, shadow_over_limit=True, metric_key=slot.matched.metric_key
            )
        return DescriptorDecision(
            Code.OVER_LIMIT, limit, 0, slot.reset_in, metric_key=slot.matched.metric_key
        )


@dataclass(frozen=True)
class RateLimiterStatistics:
    requests: int
    descriptors: int
    over_limit: int
    shadow_over_limit: int
    store_errors: int


class RateLimiter:
    """Decides ``ShouldRateLimit`` requests against a `RateLimitConfig` and a `CounterStore`.

    ``clock`` returns Unix seconds (windows are aligned to the epoch, so every instance sharing a
    Redis agrees on them); tests inject their own. ``key_prefix`` namespaces the counters.
    """

    def __init__(
        self, config: RateLimitConfig, store: CounterStore, *, clock: Clock = time.time, key_prefix: str = ""
    ) -> None:
        self._config = config
        self._store = store
        self._clock = clock
        self._key_prefix = key_prefix
        self._requests = 0
        self._descriptors = 0
        self._over_limit = 0
        self._shadow_over_limit = 0
        self._store_errors = 0
        self._lock = threading.Lock()
        self._matches: dict[tuple[str, tuple[tuple[str, str], ...]], tuple[MatchedLimit | None, str]] = {}

    @property
    def config(self) -> RateLimitConfig:
        return self._config

    @property
    def store(self) -> CounterStore:
        return self._store

    def plan(self, domain: str, descriptors: Sequence[Descriptor], hits_addend: int = 1) -> DecisionPlan:
        """Match descriptors and lay out the counter increments (no I/O)."""
        now = self._clock()
        slots: list[_Slot | None] = []
        increments: list[Increment] = []
        with_hits = []
        for descriptor in descriptors:
            hits = descriptor.hits_addend if descriptor.hits_addend is not None else hits_addend
            with_hits.append((descriptor.entries, hits))
            matched, key_stem = self._match(domain, descriptor.entries)
            if matched is None:
                slots.append(None)
                continue
            if matched.rate_limit.unlimited:
                slots.append(_Slot(matched, hits, 0.0, -1))
                continue
            unit = matched.rate_limit.unit.value
            window_start = math.floor(now / unit) * unit
            increments.append(Increment(f"{key_stem}{window_start}", hits, unit))
            slots.append(_Slot(matched, hits, window_start + unit - now, len(increments) - 1))
        counted, in_flight = plan_in_flight(
            with_hits, now=now, key_stem=f"{self._key_prefix}{domain}_", offset=len(increments)
        )
        return DecisionPlan(slots=tuple(slots), increments=(*increments, *counted), in_flight=in_flight)

    def _match(self, domain: str, entries: tuple[tuple[str, str], ...]) -> tuple[MatchedLimit | None, str]:
        """The limit for ``entries`` and its counter key without the window, remembered.

        Envoy sends the same few descriptors over and over (tenants x routes), and walking the
        tree builds the metric key and the counter key each time; a dict lookup does not. The
        config never changes while the limiter lives, so an entry never goes stale; the dict is
        bounded (emptied when full) so that a flood of distinct values cannot grow it.
        """
        key = (domain, entries)
        found = self._matches.get(key)
        if found is None:
            domain_config = self._config.domain(domain)
            matched = domain_config.find_limit(entries) if domain_config is not None else None
            parts = "".join(f"{k}_{v}_" for k, v in entries)
            found = (matched, f"{self._key_prefix}{domain}_{parts}")
            if len(self._matches) >= _MATCH_CACHE_SIZE:
                self._matches.clear()
            self._matches[key] = found
        return found

    def should_rate_limit(
        self, domain: str, descriptors: Sequence[Descriptor], hits_addend: int = 1
    ) -> Decision:
        """Count the hits and decide. Raises `CounterStoreError` when the store fails.

        Thread-safe (the gRPC server calls it from several threads): the store's increments are
        atomic, and the statistics are updated under a lock."""
        return self.should_rate_limit_many([(domain, descriptors, hits_addend)])[0]

    def should_rate_limit_many(
        self, requests: Sequence[tuple[str, Sequence[Descriptor], int]]
    ) -> list[Decision]:
        """Decide several requests ``(domain, descriptors, hits_addend)`` with **one** store call.

        The single-threaded server hands over every call it read at once: with Redis that is one
        pipelined round trip for the whole batch instead of one each, so a batch costs what one
        call did, and calls that arrive while Redis answers form the next batch. The increments
        are applied in request order, so a batch decides exactly as the same requests one by one
        would. A store failure fails the whole batch (`CounterStoreError`), counted per request.
        """
        plans = [self.plan(domain, descriptors, hits) for domain, descriptors, hits in requests]
        descriptor_count = 0
        increments: list[Increment] = []
        for plan in plans:
            descriptor_count += len(plan.slots)
            increments += plan.increments
        counts: Sequence[int] = ()
        if increments:
            try:
                counts = self._store.increment(increments)
            except Exception:
                with self._lock:
                    self._requests += len(requests)
                    self._descriptors += descriptor_count
                    self._store_errors += len(requests)
                raise
        decisions = []
        offset = 0
        over = shadow = 0
        for plan in plans:
            used = len(plan.increments)
            decision = plan.decide(counts[offset : offset + used])
            offset += used
            for status in decision.statuses:
                over += status.code is Code.OVER_LIMIT
                shadow += status.shadow_over_limit
            decisions.append(decision)
        with self._lock:
            self._requests += len(requests)
            self._descriptors += descriptor_count
            self._over_limit += over
            self._shadow_over_limit += shadow
        return decisions

    def read(self, domain: str, descriptors: Sequence[Descriptor]) -> list[Reading | None]:
        """What the current windows of ``descriptors`` hold, counting nothing (None for a descriptor
        no limit matches, or an unlimited one). Raises `CounterStoreError`."""
        plan = self.plan(domain, descriptors, 0)
        counts = self._store.read([inc.key for inc in plan.increments]) if plan.increments else []
        return [
            None
            if slot is None or slot.counter_index < 0
            else Reading(slot.matched.rate_limit, counts[slot.counter_index], slot.reset_in)
            for slot in plan.slots
        ]

    def requests_in_flight(self, domain: str, tenant: str) -> int:
        """``tenant``'s LLM requests started and not yet ended, as the token budgets reserve them
        (`_in_flight`), counting nothing. Raises `CounterStoreError`."""
        keys = in_flight_keys(f"{self._key_prefix}{domain}_", tenant, self._clock())
        return in_flight_from(self._store.read(keys))

    def statistics(self) -> RateLimiterStatistics:
        return RateLimiterStatistics(
            requests=self._requests,
            descriptors=self._descriptors,
            over_limit=self._over_limit,
            shadow_over_limit=self._shadow_over_limit,
            store_errors=self._store_errors,
        )

    def __repr__(self) -> str:
        s = self.statistics()
        return (
            f"<RateLimiter {self._config!r} store={type(self._store).__name__} requests={s.requests} "
            f"over_limit={s.over_limit} store_errors={s.store_errors}>"
        )

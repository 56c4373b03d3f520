"""Reuse: a TTL cache for results worth keeping, and singleflight for identical calls in flight.

`TTLCache` is in-process (LRU-bounded, per-entry expiry on the anyio clock). It implements
`CacheStore`, the small async interface a shared store (Redis, memcached) can implement later
without changing callers. `Singleflight` makes identical concurrent calls (same key) share one
downstream call.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

import anyio

from ._metrics import metrics_for

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

__all__ = ["MISSING", "CacheStatistics", "CacheStore", "Singleflight", "SingleflightStatistics", "TTLCache"]

T = TypeVar("T")


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False


#: returned by `CacheStore.get` for an absent or expired key (None is a valid cached value)
MISSING: Any = _Missing()


@runtime_checkable
class CacheStore(Protocol):
    """What a cache must do. Implement it over a shared store to share results between
    processes; keys are hashable (a shared store would serialise them)."""

    async def get(self, key: Hashable) -> Any:
        """The value, or `MISSING`."""
        ...

    async def set(self, key: Hashable, value: Any, *, ttl: float | None = None) -> None: ...


@dataclass(frozen=True)
class SingleflightStatistics:
    """A snapshot of a `Singleflight`: keys in flight now, and calls that joined one in all."""

    name: str
    in_flight: int
    shared_total: int


class _Flight:
    __slots__ = ("cancelled", "error", "event", "value")

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.value: Any = None
        self.error: BaseException | None = None
        self.cancelled = False


class Singleflight:
    """Identical concurrent calls share one execution::

        flights = Singleflight("search")
        result = await flights.do(("search", normalised_query), search, query)

    The first caller with a key runs ``fn``; callers with the same key that arrive while it
    runs wait for its result (or its exception). If the first caller is cancelled, one of the
    waiters runs ``fn`` again: a cancelled request never fails the others. Waiters are bounded
    by their own deadlines.
    """

    def __init__(self, name: str = "singleflight", *, registry: CollectorRegistry | None = None):
        metrics = metrics_for(registry)
        self.name = name
        self._flights: dict[Hashable, _Flight] = {}
        self._shared = 0
        self._metric = metrics.singleflight_shared.labels(name) if metrics is not None else None

    async def do(self, key: Hashable, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        joined = False
        while (flight := self._flights.get(key)) is not None:
            if not joined:  # once per call, even if a cancelled leader makes it wait again
                joined = True
                self._shared += 1
                if self._metric is not None:
                    self._metric.inc()
            await flight.event.wait()
            if flight.cancelled:
                continue
            if flight.error is not None:
                raise flight.error
            return flight.value
        flight = self._flights[key] = _Flight()
        try:
            flight.value = await fn(*args)
            return flight.value
        except Exception as exc:
            flight.error = exc
            raise
        except BaseException:
            flight.cancelled = True
            raise
        finally:
            del self._flights[key]
            flight.event.set()

    def statistics(self) -> SingleflightStatistics:
        return SingleflightStatistics(self.name, len(self._flights), self._shared)

    def __repr__(self) -> str:
        return f"<Singleflight {self.name!r} in_flight={len(self._flights)} shared={self._shared}>"


@dataclass(frozen=True)
class CacheStatistics:
    """A snapshot of a `TTLCache`; ``evictions`` counts entries pushed out by ``max_entries``."""

    name: str
    size: int
    max_entries: int
    hits: int
    misses: int
    evictions: int


class TTLCache:
    """An in-process cache: entries live ``ttl`` seconds, at most ``max_entries`` (least
    recently used evicted first). Time comes from ``clock`` (default: the event loop's clock,
    so tests run it on trio's virtual clock)."""

    def __init__(
        self,
        ttl: float,
        max_entries: int,
        *,
        name: str = "cache",
        registry: CollectorRegistry | None = None,
        clock: Callable[[], float] = anyio.current_time,
    ):
        if ttl <= 0 or max_entries < 1:
            raise ValueError("ttl must be > 0 and max_entries >= 1")
        self.ttl = ttl
        self.max_entries = max_entries
        self.name = name
        self._clock = clock
        self._entries: OrderedDict[Hashable, tuple[float, Any]] = OrderedDict()
        self._flights = Singleflight(name, registry=registry)
        self._hits = self._misses = self._evictions = 0
        metrics = metrics_for(registry)
        if metrics is not None:
            self._m_hit = metrics.cache_requests.labels(name, "hit")
            self._m_miss = metrics.cache_requests.labels(name, "miss")
        else:
            self._m_hit = self._m_miss = None

    def get_nowait(self, key: Hashable) -> Any:
        entry = self._entries.get(key)
        if entry is not None:
            expires_at, value = entry
            if self._clock() < expires_at:
                self._entries.move_to_end(key)
                self._hits += 1
                if self._m_hit is not None:
                    self._m_hit.inc()
                return value
            del self._entries[key]
        self._misses += 1
        if self._m_miss is not None:
            self._m_miss.inc()
        return MISSING

    def set_nowait(self, key: Hashable, value: Any, *, ttl: float | None = None) -> None:
        self._entries[key] = (self._clock() + (self.ttl if ttl is None else ttl), value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
            self._evictions += 1

    def invalidate(self, key: Hashable) -> None:
        self._entries.pop(key, None)

    async def get(self, key: Hashable) -> Any:
        return self.get_nowait(key)

    async def set(self, key: Hashable, value: Any, *, ttl: float | None = None) -> None:
        self.set_nowait(key, value, ttl=ttl)

    async def get_or_load(
        self, key: Hashable, fn: Callable[..., Awaitable[T]], *args: Any, ttl: float | None = None
    ) -> T:
        """The cached value, or ``await fn(*args)`` — run once for concurrent misses of the
        same key — cached for ``ttl`` (default: the cache's). Errors are not cached."""
        value = self.get_nowait(key)
        if value is not MISSING:
            return value

        async def load() -> T:
            result = await fn(*args)
            self.set_nowait(key, result, ttl=ttl)
            return result

        return await self._flights.do(key, load)

    def statistics(self) -> CacheStatistics:
        return CacheStatistics(
            self.name, len(self._entries), self.max_entries, self._hits, self._misses, self._evictions
        )

    def __repr__(self) -> str:
        return (
            f"<TTLCache {self.name!r} size={len(self._entries)}/{self.max_entries} ttl={self.ttl:g} "
            f"hits={self._hits} misses={self._misses}>"
        )

"""Where the fixed-window counters live: in this process's memory, or in Redis.

Both stores do the same thing for a batch of increments: add ``hits`` to each key, make sure the key
expires after its window, and return the new values, in one step (memory) or one network round
trip (Redis: a non-transactional pipeline of ``INCRBY`` + ``EXPIRE`` per key, as the reference
service does). The memory store counts for one instance only; run more than one rate-limit service
and the limits must live in Redis to stay global.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

__all__ = [
    "CounterStore",
    "CounterStoreError",
    "Increment",
    "MemoryCounterStore",
    "MemoryStoreStatistics",
    "RedisCounterStore",
]


class CounterStoreError(Exception):
    """The counter store could not count (Redis down, timed out, pool exhausted).

    The service answers such a request with gRPC UNAVAILABLE; Envoy then applies its failure mode
    (here: let the request through and count ``ratelimit.failure_mode_allowed``).
    """


class Increment(NamedTuple):
    key: str
    hits: int
    #: seconds after which the counter may be forgotten (its window is over)
    expire_seconds: int


class CounterStore(Protocol):
    """Called from the gRPC server's worker threads: implementations must be thread-safe."""

    def increment(self, increments: Sequence[Increment]) -> list[int]:
        """Add each increment's hits to its key; return the new values in the same order."""
        ...

    def read(self, keys: Sequence[str]) -> list[int]:
        """The current values of ``keys`` (0 for a key never counted or expired), in order; nothing
        is added. For reports such as ``GET /v1/usage``, never for a decision."""
        ...

    def ping(self) -> None:
        """Raise `CounterStoreError` unless the store answers (readiness)."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class MemoryStoreStatistics:
    keys: int
    increments: int
    expired: int


class MemoryCounterStore:
    """Counters in a dict, for a single rate-limit service instance.

    ``clock`` must be the limiter's clock: expiry is judged with it, so a test's fake clock both
    moves windows and expires keys. Expired keys are swept at most once per ``sweep_interval``
    seconds, when an increment arrives, so memory stays bounded by the keys of recent windows.
    One lock makes each batch atomic: the server's threads never interleave inside a batch.
    """

    def __init__(self, *, clock: Callable[[], float] = time.time, sweep_interval: float = 1.0) -> None:
        self._clock = clock
        self._sweep_interval = sweep_interval
        self._counters: dict[str, list[float]] = {}  # key -> [value, expires_at]
        self._next_sweep = clock() + sweep_interval
        self._increments = 0
        self._expired = 0
        self._lock = threading.Lock()

    def increment(self, increments: Sequence[Increment]) -> list[int]:
        with self._lock:
            now = self._clock()
            if now >= self._next_sweep:
                self._sweep(now)
            values = []
            for inc in increments:
                entry = self._counters.get(inc.key)
                if entry is None or entry[1] <= now:
                    entry = self._counters[inc.key] = [0, now + inc.expire_seconds]
                entry[0] += inc.hits
                values.append(int(entry[0]))
            self._increments += len(increments)
            return values

    def read(self, keys: Sequence[str]) -> list[int]:
        with self._lock:
            now = self._clock()
            values = []
            for key in keys:
                entry = self._counters.get(key)
                values.append(0 if entry is None or entry[1] <= now else int(entry[0]))
            return values

    def _sweep(self, now: float) -> None:
        expired = [key for key, (_, expires_at) in self._counters.items() if expires_at <= now]
        for key in expired:
            del self._counters[key]
        self._expired += len(expired)
        self._next_sweep = now + self._sweep_interval

    def ping(self) -> None:
        return None

    def close(self) -> None:
        return None

    def statistics(self) -> MemoryStoreStatistics:
        return MemoryStoreStatistics(
            keys=len(self._counters), increments=self._increments, expired=self._expired
        )

    def __repr__(self) -> str:
        s = self.statistics()
        return f"<MemoryCounterStore keys={s.keys} increments={s.increments}>"


class RedisCounterStore:
    """Counters in Redis, shared by every rate-limit service instance (limits stay global).

    Uses redis-py's client (thread-safe) on a *blocking* connection pool: at most
    ``max_connections`` connections, and a request waits at most ``pool_timeout`` seconds for one
    before it fails (every wait bounded). ``socket_timeout`` bounds each round trip; keep it well
    under Envoy's rate-limit timeout, so that a slow Redis becomes a counted failure instead of a
    slow gateway. The round trip releases the GIL, so the server's other threads keep deciding.
    """

    def __init__(self, client: object, *, url: str = "") -> None:
        self._client = client
        self._url = url

    @classmethod
    def from_url(
        cls, url: str, *, max_connections: int = 32, pool_timeout: float = 0.1, socket_timeout: float = 0.1
    ) -> RedisCounterStore:
        import redis

        pool = redis.BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=pool_timeout,
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_timeout,
        )
        return cls(redis.Redis(connection_pool=pool), url=url)

    def increment(self, increments: Sequence[Increment]) -> list[int]:
        import redis

        pipe = self._client.pipeline(transaction=False)
        for inc in increments:
            pipe.incrby(inc.key, inc.hits)
            pipe.expire(inc.key, inc.expire_seconds)
        try:
            results = pipe.execute()
        except (redis.RedisError, OSError) as exc:
            raise CounterStoreError(f"redis: {type(exc).__name__}: {exc}") from exc
        return [int(value) for value in results[::2]]

    def read(self, keys: Sequence[str]) -> list[int]:
        import redis

        if not keys:
            return []
        try:
            values = self._client.mget(list(keys))
        except (redis.RedisError, OSError) as exc:
            raise CounterStoreError(f"redis: {type(exc).__name__}: {exc}") from exc
        return [0 if value is None else int(value) for value in values]

    def ping(self) -> None:
        import redis

        try:
            self._client.ping()
        except (redis.RedisError, OSError) as exc:
            raise CounterStoreError(f"redis: {type(exc).__name__}: {exc}") from exc

    def close(self) -> None:
        self._client.close()

    def __repr__(self) -> str:
        return f"<RedisCounterStore {_redact(self._url)}>"


def _redact(url: str) -> str:
    """``redis://user:secret@host`` -> ``redis://user:***@host`` (never log a password)."""
    head, sep, tail = url.rpartition("@")
    if not sep or ":" not in head.split("//", 1)[-1]:
        return url
    scheme, _, creds = head.partition("//")
    user = creds.split(":", 1)[0]
    return f"{scheme}//{user}:***@{tail}"

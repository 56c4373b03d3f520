"""A PostgreSQL pool (asyncpg) behind a gate, usable from trio through trio-asyncio.

asyncpg speaks asyncio only. Under trio the pool lives in the trio-asyncio loop the process
opened (``async with trio_asyncio.open_loop():``) and every use crosses the bridge. A crossing
costs far more than a native asyncio await, so `PgPool.run`
crosses *once per unit of work*: ``fn(conn, *args)`` is an asyncio coroutine function that
runs a whole transaction on the asyncio side. Under asyncio the same API calls asyncpg
directly.

The pool's size comes from the budget (``budget.process_limit(service, "db")``) and a `Gate`
of the same capacity sits in front of it, so waiting for a connection is bounded, fair
between tenants, and rejected with `Overloaded` like any other dependency. The dependency's
``timeouts`` bound opening a connection (``connect``) and every statement (``attempt``: the
server's ``statement_timeout`` and asyncpg's ``command_timeout``); a statement that runs out of
time is a `DeadlineExceeded` naming the pool.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import asyncpg
import sniffio

from ._budget import TimeoutPolicy
from ._errors import DeadlineExceeded, DependencyError, FloodgateError, PoolUnavailable
from ._gate import DEFAULT_TENANT, Gate, GateStatistics
from ._metrics import metrics_for

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

__all__ = ["PgPool", "PgPoolStatistics", "is_transient_pg_error", "open_pg_pool"]

T = TypeVar("T")

# Errors that mean "the database (or the way to it) failed", as opposed to errors in the SQL
# or the data (unique violations, bad input), which callers handle and which pass through.
_CONNECTION_ERRORS = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.TooManyConnectionsError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    # asyncpg's "the protocol is in a state it cannot go on from". The case that matters: a server
    # that stops (fast shutdown, failover, pg_terminate_backend) sends each idle session a FATAL
    # ErrorResponse, then closes its socket. asyncpg reads the message in one loop iteration and
    # the EOF in a later one; a caller that takes the connection in between gets
    # InternalClientError("cannot switch to state 11; another operation (2) is in progress"), not
    # a connection error. It is the same outage, so callers must see the same DependencyError
    # (their "try again later"); `_with_connection` also closes such a connection for good.
    asyncpg.InternalClientError,
)

# The same work may succeed later: the database or the way to it failed (raw where no pool mapped
# it, e.g. on a LISTEN connection of its own), a statement lost a conflict or ran out of time, or
# the pool refused or failed the call (Overloaded, DependencyError, DeadlineExceeded).
_TRANSIENT_ERRORS = (
    *_CONNECTION_ERRORS,
    asyncpg.SerializationError,
    asyncpg.DeadlockDetectedError,
    asyncpg.LockNotAvailableError,  # lock_timeout
    asyncpg.QueryCanceledError,  # statement_timeout
    FloodgateError,
)


def is_transient_pg_error(exc: BaseException) -> bool:
    """Whether running the same database work again later may succeed: the database was
    unreachable, restarting or busy, or the statement lost a conflict or ran out of time; not a
    mistake in the SQL or the data (a unique violation, bad input), which would fail again."""
    return isinstance(exc, _TRANSIENT_ERRORS)


@dataclass(frozen=True)
class PgPoolStatistics:
    """A snapshot of a `PgPool`: connections open/idle/checked out, its gate, and bridge crossings."""

    name: str
    size: int
    idle: int
    in_use: int
    max_size: int
    gate: GateStatistics
    crossings_total: int


class PgPool:
    """The process's asyncpg pool. Build it with `open_pg_pool`."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        name: str,
        gate: Gate,
        max_size: int,
        bridge: Callable[[Callable[..., Awaitable[Any]]], Callable[..., Awaitable[Any]]],
        registry: CollectorRegistry | None = None,
    ):
        self.raw = pool
        self.name = name
        self.gate = gate
        self.max_size = max_size
        self._in_use = 0
        self._crossings = 0
        self._metrics = metrics = metrics_for(registry)
        if metrics is not None:
            self._m_in_use = metrics.pool_in_use.labels(name)
            self._m_size = metrics.pool_size.labels(name)
            self._m_wait = metrics.pool_acquire_wait.labels(name)
        # Wrap once: the bridged callable is reused for every crossing.
        self._cross = bridge(self._with_connection)

    async def _with_connection(self, fn: Callable[..., Awaitable[T]], args: tuple[Any, ...]) -> T:
        # Runs on the asyncio side: everything here is one bridge crossing.
        loop = asyncio.get_running_loop()
        start = loop.time()
        async with self.raw.acquire() as conn:
            self._in_use += 1
            if self._metrics is not None:
                self._m_wait.observe(loop.time() - start)
                self._m_in_use.set(self._in_use)
                self._m_size.set(self.raw.get_size())
            try:
                return await fn(conn, *args)
            except asyncpg.InternalClientError:
                # The connection's protocol state is unknown: never hand it out again. (asyncpg
                # aborts it on most of its paths already; terminate() is idempotent.)
                conn.terminate()
                raise
            finally:
                self._in_use -= 1
                if self._metrics is not None:
                    self._m_in_use.set(self._in_use)

    async def run(self, fn: Callable[..., Awaitable[T]], *args: Any, tenant: str = DEFAULT_TENANT) -> T:
        """Run ``await fn(conn, *args)`` with a pooled connection, in one bridge crossing.

        ``fn`` is an *asyncio* coroutine function (it awaits asyncpg directly); open the
        transaction inside it (``async with conn.transaction():``) or use
        `run_in_transaction`. Waits for the db gate (`Overloaded` when full). Connection
        failures become `DependencyError`, a statement out of time (``command_timeout``, the
        server's ``statement_timeout``) `DeadlineExceeded`; other SQL errors (constraint
        violations...) pass through.
        """
        async with self.gate.slot(tenant):
            self._crossings += 1
            try:
                return await self._cross(fn, args)
            except TimeoutError as exc:  # before OSError, its base class
                raise DeadlineExceeded("database call timed out", dependency=self.name) from exc
            except asyncpg.QueryCanceledError as exc:
                # The server's statement_timeout (or an operator's pg_cancel_backend): either way
                # the database did not answer in time, and the session is fine for the next call.
                raise DeadlineExceeded(f"database statement cancelled: {exc}", dependency=self.name) from exc
            except _CONNECTION_ERRORS as exc:
                raise DependencyError(f"{type(exc).__name__}: {exc}", dependency=self.name) from exc

    async def run_in_transaction(
        self, fn: Callable[..., Awaitable[T]], *args: Any, tenant: str = DEFAULT_TENANT
    ) -> T:
        """`run`, with ``fn`` inside a transaction (committed when it returns)."""
        return await self.run(_in_transaction, fn, args, tenant=tenant)

    async def fetch(self, sql: str, *args: Any, tenant: str = DEFAULT_TENANT) -> list[asyncpg.Record]:
        return await self.run(_fetch, sql, args, tenant=tenant)

    async def fetchrow(self, sql: str, *args: Any, tenant: str = DEFAULT_TENANT) -> asyncpg.Record | None:
        return await self.run(_fetchrow, sql, args, tenant=tenant)

    async def fetchval(self, sql: str, *args: Any, tenant: str = DEFAULT_TENANT) -> Any:
        return await self.run(_fetchval, sql, args, tenant=tenant)

    async def execute(self, sql: str, *args: Any, tenant: str = DEFAULT_TENANT) -> str:
        return await self.run(_execute, sql, args, tenant=tenant)

    def statistics(self) -> PgPoolStatistics:
        return PgPoolStatistics(
            self.name,
            self.raw.get_size(),
            self.raw.get_idle_size(),
            self._in_use,
            self.max_size,
            self.gate.statistics(),
            self._crossings,
        )

    def __repr__(self) -> str:
        return f"<PgPool {self.name!r} in_use={self._in_use}/{self.max_size} crossings={self._crossings}>"


async def _in_transaction(
    conn: asyncpg.Connection, fn: Callable[..., Awaitable[T]], args: tuple[Any, ...]
) -> T:
    async with conn.transaction():
        return await fn(conn, *args)


async def _fetch(conn: asyncpg.Connection, sql: str, args: tuple[Any, ...]) -> list[asyncpg.Record]:
    return await conn.fetch(sql, *args)


async def _fetchrow(conn: asyncpg.Connection, sql: str, args: tuple[Any, ...]) -> asyncpg.Record | None:
    return await conn.fetchrow(sql, *args)


async def _fetchval(conn: asyncpg.Connection, sql: str, args: tuple[Any, ...]) -> Any:
    return await conn.fetchval(sql, *args)


async def _execute(conn: asyncpg.Connection, sql: str, args: tuple[Any, ...]) -> str:
    return await conn.execute(sql, *args)


async def _create_pool(dsn: str, kwargs: dict[str, Any]) -> asyncpg.Pool:
    return await asyncpg.create_pool(dsn, **kwargs)


async def _close_pool(pool: asyncpg.Pool, grace: float) -> None:
    # Runs on the asyncio side of the bridge, hence asyncio's wait_for. Pool.close() waits until
    # every connection is released: one held by a stuck task would hold the process's shutdown
    # forever. After ``grace`` seconds, terminate: close them all at once.
    try:
        await asyncio.wait_for(pool.close(), grace)
    except TimeoutError:
        pool.terminate()


def _with_timeouts(timeouts: TimeoutPolicy, pool_kwargs: dict[str, Any]) -> dict[str, Any]:
    """asyncpg's connection arguments for ``timeouts``; one source only, so no silent override."""
    given = {"timeout", "command_timeout"} & set(pool_kwargs)
    settings = dict(pool_kwargs.get("server_settings") or {})
    if "statement_timeout" in settings:
        given.add("server_settings['statement_timeout']")
    if given:
        raise TypeError(f"open_pg_pool: timeouts= sets {', '.join(sorted(given))}; pass one or the other")
    # PostgreSQL reads a bare number as milliseconds; 0 would mean "no timeout".
    settings["statement_timeout"] = str(max(1, round(timeouts.attempt * 1000)))
    return {
        **pool_kwargs,
        "timeout": timeouts.connect,
        "command_timeout": timeouts.attempt,
        "server_settings": settings,
    }


def _bridge_for_backend() -> Callable[[Callable[..., Awaitable[Any]]], Callable[..., Awaitable[Any]]]:
    backend = sniffio.current_async_library()
    if backend == "asyncio":
        return lambda fn: fn
    if backend == "trio":
        import trio_asyncio

        loop = trio_asyncio.current_loop.get()
        if loop is None:
            raise RuntimeError(
                "open_pg_pool under trio needs a trio-asyncio loop: run the process inside "
                "`async with trio_asyncio.open_loop():`"
            )
        return lambda fn: trio_asyncio.aio_as_trio(fn, loop=loop)
    raise RuntimeError(f"open_pg_pool supports trio (via trio-asyncio) and asyncio, not {backend!r}")


@asynccontextmanager
async def open_pg_pool(
    dsn: str,
    *,
    min_size: int = 1,
    max_size: int,
    gate: Gate | None = None,
    registry: CollectorRegistry | None = None,
    name: str = "db",
    max_waiters: int = 64,
    max_wait: float = 1.0,
    close_timeout: float = 10.0,
    timeouts: TimeoutPolicy | None = None,
    **pool_kwargs: Any,
) -> AsyncIterator[PgPool]:
    """Open an asyncpg pool for this process; close it on exit.

    ``max_size`` should be ``budget.process_limit(service, "db")``; pass the dependency's
    gate (``deps["db"].gate``) so the pool shares its budget, else a gate of ``max_size``
    slots with ``max_waiters``/``max_wait`` is made. Under trio a trio-asyncio loop must be
    open. On exit the pool waits up to ``close_timeout`` seconds for connections still in use
    to come back, then closes them anyway.

    ``timeouts`` is the dependency's policy (``budget.dependency("db").timeouts``): ``connect``
    bounds opening each connection, ``attempt`` each statement twice over — on the server
    (``statement_timeout``, which also ends a statement whose client has gone) and in asyncpg
    (``command_timeout``, which also covers a server that stopped answering). Other keyword
    arguments go to `asyncpg.create_pool` (e.g. ``init``, ``reset``, ``server_settings``).

    A pool whose first ``min_size`` connections cannot open raises `PoolUnavailable` (a
    `DependencyError`); ``registry`` (a prometheus ``CollectorRegistry``) turns metrics on.
    """
    if max_size < 1 or not 0 <= min_size <= max_size:
        raise ValueError(f"need 0 <= min_size <= max_size and max_size >= 1 (got {min_size}, {max_size})")
    if timeouts is not None:
        pool_kwargs = _with_timeouts(timeouts, pool_kwargs)
    bridge = _bridge_for_backend()
    if gate is None:
        gate = Gate(name, max_size, max_waiters=max_waiters, max_wait=max_wait, registry=registry)
    elif gate.capacity > max_size:
        raise ValueError(
            f"gate {gate.name!r} admits {gate.capacity} callers but the pool has {max_size} connections"
        )
    try:
        raw = await bridge(_create_pool)(dsn, {"min_size": min_size, "max_size": max_size, **pool_kwargs})
    except _CONNECTION_ERRORS as exc:
        location = dsn.rsplit("@", 1)[-1]  # never the user and password
        raise PoolUnavailable(
            f"cannot open pool to {location}: {type(exc).__name__}: {exc}", dependency=name, location=location
        ) from exc
    pool = PgPool(raw, name=name, gate=gate, max_size=max_size, bridge=bridge, registry=registry)
    try:
        yield pool
    finally:
        with anyio.CancelScope(shield=True):
            await bridge(_close_pool)(raw, close_timeout)

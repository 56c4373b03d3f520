"""How ingest code reaches PostgreSQL: ``await db.run(fn, *args)``, one trio-asyncio crossing per call.

``fn(conn, *args)`` is an asyncio coroutine function (the SQL in ``_queue.py``) that gets a pooled
asyncpg connection and may open a transaction; crossing the trio/asyncio bridge is costly, so a whole
unit of work goes in one ``fn``. The pool is the toolkit's (``floodgate.open_pg_pool``), gated by the
budget of the dependency the process uses (``db`` for the API, ``db_write`` for workers). Keyword
arguments for ``fn`` are bound with ``functools.partial``: ``run`` passes only positionals.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, TypeVar

import asyncpg
import floodgate
from pgvector import Vector

__all__ = [
    "TRANSIENT_DB_ERRORS",
    "Database",
    "decode_vector",
    "encode_vector",
    "is_transient_db_error",
    "register_vector_codec",
    "release_without_session_reset",
]

T = TypeVar("T")


class Database(Protocol):
    async def run(self, fn: Callable[..., Awaitable[T]], /, *args: Any) -> T: ...


TRANSIENT_DB_ERRORS: tuple[type[BaseException], ...] = (
    OSError,  # refused / reset while PostgreSQL restarts
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,  # connection closed under us
    asyncpg.CannotConnectNowError,  # starting up / shutting down
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    # A connection the server killed (its FATAL read, its EOF not yet) used in between: see the
    # toolkit's `_pg._CONNECTION_ERRORS`, which maps it to DependencyError for pooled calls; the
    # listener's own connection meets it raw.
    asyncpg.InternalClientError,
    asyncpg.TooManyConnectionsError,
    asyncpg.SerializationError,
    asyncpg.DeadlockDetectedError,
    asyncpg.LockNotAvailableError,  # our lock_timeout
    asyncpg.QueryCanceledError,  # statement_timeout
    # The toolkit's pool maps connection failures to DependencyError, slow calls to
    # DeadlineExceeded, and a full gate to Overloaded: all "try again later".
    floodgate.FloodgateError,
)


def is_transient_db_error(exc: BaseException) -> bool:
    """Worth retrying later: the database was unreachable or busy, not the statement wrong."""
    return isinstance(exc, TRANSIENT_DB_ERRORS)


async def release_without_session_reset(conn: asyncpg.Connection) -> None:
    """asyncpg pool ``reset=`` hook for ingest pools: hand a connection back without a reset query.

    By default asyncpg runs ``SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL``
    every time a connection goes back to the pool: one more round trip per ``db.run``, as costly as
    the claim it follows. Ingest code leaves no session state behind: its advisory locks are
    transaction-scoped (``pg_advisory_xact_lock``), its settings ``SET LOCAL``, its cursors and
    LISTENs nonexistent (the listener has its own connection). asyncpg still rolls back a
    transaction left open (a cancelled call) before this hook runs, so there is nothing left to do.
    """
    del conn


def encode_vector(value: Sequence[float] | bytes) -> bytes:
    """A vector in pgvector's binary format (the ``pgvector`` package's codec). ``bytes`` are taken
    as already encoded, so a batch can be packed before it crosses into the database task."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    return Vector(value if isinstance(value, list) else list(value)).to_binary()


def decode_vector(data: bytes) -> list[float]:
    return Vector.from_binary(data).to_list()


async def register_vector_codec(conn: asyncpg.Connection) -> None:
    """asyncpg pool ``init=`` hook: exchange pgvector's ``vector`` in binary on this connection.

    Without it, vectors travel as one flat ``float4[]`` that asyncpg encodes float by float; in
    binary a batch is one small ``bytes`` per vector, packed at once, much cheaper to encode. Needs
    the ``vector`` extension (migration 0001). Code that stages chunks on such a
    connection says so: ``stage_chunks(..., binary_vectors=True)``.
    """
    await conn.set_type_codec(
        "vector", schema="public", encoder=encode_vector, decoder=decode_vector, format="binary"
    )

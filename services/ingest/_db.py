"""How ingest code reaches PostgreSQL: ``await db.run(fn, *args)``, one trio-asyncio crossing per call.

``fn(conn, *args)`` is an asyncio coroutine function (the SQL in ``_queue.py``) that gets a pooled
asyncpg connection and may open a transaction; crossing the trio/asyncio bridge is costly, so a whole
unit of work goes in one ``fn``. The pool is the toolkit's (``floodgate.open_pg_pool``), gated by the
budget of the dependency the process uses (``db`` for the API, ``db_write`` for workers). Keyword
arguments for ``fn`` are bound with ``functools.partial``: ``run`` passes only positionals. Which
failures are worth another attempt is the toolkit's `floodgate.is_transient_pg_error`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

import asyncpg
from providers import decode_vector, encode_vector

__all__ = ["Database", "register_vector_codec", "release_without_session_reset"]

T = TypeVar("T")


class Database(Protocol):
    async def run(self, fn: Callable[..., Awaitable[T]], /, *args: Any) -> T: ...


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


async def register_vector_codec(conn: asyncpg.Connection) -> None:
    """asyncpg pool ``init=`` hook: exchange pgvector's ``vector`` in binary on this connection
    (the codec is `providers.encode_vector` / `providers.decode_vector`).

    Without it, vectors travel as one flat ``float4[]`` that asyncpg encodes float by float; in
    binary a batch is one small ``bytes`` per vector, packed at once, much cheaper to encode. Needs
    the ``vector`` extension (migration 0001). Code that stages chunks on such a
    connection says so: ``stage_chunks(..., binary_vectors=True)``.
    """
    await conn.set_type_codec(
        "vector", schema="public", encoder=encode_vector, decoder=decode_vector, format="binary"
    )

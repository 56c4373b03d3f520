"""Vector search over the tenant's ingested chunks (table ``chunks``, pgvector).

Every query filters on ``tenant_id``: a tenant never sees another tenant's passages. The search
is one statement, one round trip, one trio-asyncio crossing (``pool.run``). The pool's sessions
run with pgvector's iterative index scan on (``SESSION_SETTINGS``, set at connect), so a
selective tenant filter still returns ``limit`` rows from the HNSW index (without it, the index
returns ``ef_search`` candidates and the filter may leave too few). ``relaxed_order`` may return
rows slightly out of order, so the outer query sorts them again. The question's vector travels in
pgvector's text form (`providers.vector_literal`), so no codec is registered on the connection.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from providers import vector_literal

__all__ = [
    "SESSION_SETTINGS",
    "ChunkHit",
    "ChunkSearch",
    "PgChunkSearch",
    "keep_session",
    "nearest_chunks",
]

#: Settings of every pooled session (asyncpg ``server_settings``): a ``SET LOCAL`` per search would
#: cost three more round trips.
SESSION_SETTINGS = {"hnsw.iterative_scan": "relaxed_order"}


@dataclass(frozen=True)
class ChunkHit:
    doc_id: str
    chunk_no: int
    content: str
    title: str | None
    similarity: float  # cosine similarity, -1..1 (embeddings are unit vectors)


class ChunkSearch(Protocol):
    async def nearest(self, tenant: str, vector: Sequence[float], *, limit: int) -> list[ChunkHit]: ...


_NEAREST_SQL = """
WITH nearest AS MATERIALIZED (
    SELECT doc_id, chunk_no, content, metadata, embedding <=> $2::text::vector AS distance
    FROM chunks
    WHERE tenant_id = $1
    ORDER BY distance
    LIMIT $3
)
SELECT doc_id, chunk_no, content, metadata->>'title' AS title, 1 - distance AS similarity
FROM nearest
ORDER BY distance, doc_id, chunk_no
"""


async def keep_session(conn: Any) -> None:
    """The pool's ``reset``: nothing. asyncpg's default resets every session on release (one more
    round trip per search, and through the trio-asyncio bridge); the online service runs single
    read-only statements that leave no session state behind (no locks, listeners, SETs)."""


async def nearest_chunks(conn: Any, tenant: str, vector: str, limit: int) -> list[ChunkHit]:
    """The asyncio side (runs on asyncpg inside ``pool.run``): one tenant-filtered statement."""
    rows = await conn.fetch(_NEAREST_SQL, tenant, vector, limit)
    return [
        ChunkHit(
            doc_id=row["doc_id"],
            chunk_no=row["chunk_no"],
            content=row["content"],
            title=row["title"],
            similarity=float(row["similarity"]),
        )
        for row in rows
    ]


class PgChunkSearch:
    """`ChunkSearch` on a floodgate PostgreSQL pool (``await pool.run(fn, *args)``)."""

    def __init__(self, pool: Any) -> None:
        self._pool = pool

    async def nearest(self, tenant: str, vector: Sequence[float], *, limit: int) -> list[ChunkHit]:
        return await self._pool.run(nearest_chunks, tenant, vector_literal(vector), limit, tenant=tenant)

    def __repr__(self) -> str:
        return f"<PgChunkSearch pool={self._pool!r}>"

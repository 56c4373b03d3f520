import asyncio
from pathlib import Path

import asyncpg
import pytest

from cluster.migrate import MigrationError, apply_migrations, load_migrations
from tests.conftest import create_database


def _run(coro):
    return asyncio.run(coro)


def test_migrations_are_applied_once_and_recorded(pg_server, tmp_path: Path) -> None:
    dsn = create_database(pg_server, migrate=False)
    (tmp_path / "0001_first.sql").write_text("CREATE TABLE a (id int);")
    (tmp_path / "0002_second.sql").write_text("CREATE TABLE b (id int);")
    assert _run(apply_migrations(dsn, tmp_path)) == [1, 2]
    assert _run(apply_migrations(dsn, tmp_path)) == []

    async def recorded():
        conn = await asyncpg.connect(dsn)
        try:
            return [
                r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations ORDER BY 1")
            ]
        finally:
            await conn.close()

    assert _run(recorded()) == [1, 2]


def test_concurrent_migrators_apply_each_migration_once(pg_server, tmp_path: Path) -> None:
    dsn = create_database(pg_server, migrate=False)
    (tmp_path / "0001_only.sql").write_text("CREATE TABLE once (id int);")  # fails if run twice

    async def both():
        return await asyncio.gather(apply_migrations(dsn, tmp_path), apply_migrations(dsn, tmp_path))

    results = _run(both())
    assert sorted(results, key=len) == [[], [1]]


def test_an_edited_applied_migration_is_refused(pg_server, tmp_path: Path) -> None:
    dsn = create_database(pg_server, migrate=False)
    path = tmp_path / "0001_first.sql"
    path.write_text("CREATE TABLE a (id int);")
    _run(apply_migrations(dsn, tmp_path))
    path.write_text("CREATE TABLE a (id bigint);")
    with pytest.raises(MigrationError, match="changed after it was applied"):
        _run(apply_migrations(dsn, tmp_path))


def test_badly_named_migration_is_refused(tmp_path: Path) -> None:
    (tmp_path / "first.sql").write_text("select 1")
    with pytest.raises(MigrationError, match=r"NNNN_lower_snake\.sql"):
        load_migrations(tmp_path)


def test_project_migrations_create_pgvector(database_url) -> None:
    async def version():
        conn = await asyncpg.connect(database_url)
        try:
            return await conn.fetchval("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
        finally:
            await conn.close()

    assert _run(version())

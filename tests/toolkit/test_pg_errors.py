"""`floodgate.is_transient_pg_error`: which database failures are worth running the work again for."""

from __future__ import annotations

import asyncpg
import floodgate
import pytest


@pytest.mark.parametrize(
    "exc",
    [
        ConnectionRefusedError("refused"),  # an OSError: PostgreSQL restarting
        asyncpg.CannotConnectNowError("the database system is starting up"),
        asyncpg.AdminShutdownError("terminating connection due to administrator command"),
        asyncpg.InterfaceError("connection is closed"),
        asyncpg.InternalClientError("cannot switch to state 11"),
        asyncpg.TooManyConnectionsError("too many clients"),
        asyncpg.SerializationError("could not serialize access"),
        asyncpg.DeadlockDetectedError("deadlock detected"),
        asyncpg.LockNotAvailableError("lock timeout"),
        asyncpg.QueryCanceledError("statement timeout"),
        floodgate.Overloaded("pool gate full", dependency="db"),
        floodgate.PoolUnavailable("cannot open pool", dependency="db"),
        floodgate.DeadlineExceeded("statement ran out of time", dependency="db"),
    ],
)
def test_outages_conflicts_and_refusals_are_transient(exc: BaseException) -> None:
    assert floodgate.is_transient_pg_error(exc)


@pytest.mark.parametrize(
    "exc",
    [
        asyncpg.UniqueViolationError("duplicate key"),
        asyncpg.UndefinedTableError("relation does not exist"),
        asyncpg.DataError("invalid input syntax"),
        ValueError("a bug"),
    ],
)
def test_mistakes_in_the_sql_or_the_data_are_not(exc: BaseException) -> None:
    assert not floodgate.is_transient_pg_error(exc)

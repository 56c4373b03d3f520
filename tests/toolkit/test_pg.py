"""open_pg_pool against the real PostgreSQL: trio via trio-asyncio, and asyncio natively."""

from __future__ import annotations

import asyncio
import socket

import asyncpg
import floodgate
import pytest
import trio
import trio_asyncio
from prometheus_client import CollectorRegistry


async def add_and_count(conn: asyncpg.Connection, tenant: str, value: int) -> int:
    # An asyncio coroutine: the whole transaction runs on the asyncio side, one crossing.
    async with conn.transaction():
        await conn.execute("select pg_advisory_xact_lock(42)")  # serialise: each count is distinct
        await conn.execute("insert into fg_items (tenant, value) values ($1, $2)", tenant, value)
        return await conn.fetchval("select count(*) from fg_items where tenant = $1", tenant)


async def test_pool_under_trio_runs_a_transaction_in_one_crossing(database_url):
    registry = CollectorRegistry()
    gate = floodgate.Gate("db", 2, max_waiters=8, max_wait=5.0)
    async with trio_asyncio.open_loop():
        async with floodgate.open_pg_pool(
            database_url, min_size=1, max_size=2, gate=gate, registry=registry
        ) as pool:
            await pool.execute("create table if not exists fg_items (tenant text, value int)")
            await pool.execute("delete from fg_items")
            counts = []

            async def worker(i):
                counts.append(await pool.run(add_and_count, "t1", i, tenant="t1"))

            async with trio.open_nursery() as nursery:
                for i in range(6):
                    nursery.start_soon(worker, i)
            assert sorted(counts) == [1, 2, 3, 4, 5, 6]
            assert await pool.fetchval("select sum(value) from fg_items") == 15
            rows = await pool.fetch("select value from fg_items order by value limit 2")
            assert [r["value"] for r in rows] == [0, 1]
            stats = pool.statistics()
            assert stats.in_use == 0 and stats.max_size == 2 and stats.gate.in_use == 0
            assert stats.crossings_total == 10  # one per unit of work
            with pytest.raises(asyncpg.UndefinedTableError):  # SQL errors pass through unchanged
                await pool.fetch("select * from no_such_table")
            assert registry.get_sample_value("floodgate_pool_acquire_wait_seconds_count", {"pool": "db"}) >= 6


async def test_pool_under_trio_needs_a_trio_asyncio_loop(database_url):
    with pytest.raises(RuntimeError, match=r"trio_asyncio\.open_loop"):
        async with floodgate.open_pg_pool(database_url, max_size=1):
            pass


async def test_an_unreachable_database_is_a_typed_error_without_credentials():
    async with trio_asyncio.open_loop():
        with pytest.raises(
            floodgate.PoolUnavailable, match=r"cannot open pool to 127\.0\.0\.1:1/x"
        ) as caught:
            async with floodgate.open_pg_pool(
                "postgresql://nobody:s3cret@127.0.0.1:1/x", max_size=1, timeout=2
            ):
                pass
    assert isinstance(caught.value, floodgate.DependencyError)  # handled wherever a downstream failure is
    assert (caught.value.dependency, caught.value.location) == ("db", "127.0.0.1:1/x")
    assert "s3cret" not in str(caught.value) and "nobody" not in str(caught.value)


def test_pool_under_asyncio_calls_asyncpg_directly(database_url):
    async def main():
        async with floodgate.open_pg_pool(database_url, min_size=1, max_size=1) as pool:
            assert await pool.fetchval("select 41 + 1") == 42
            return await pool.run_in_transaction(lambda conn: conn.fetchval("select 'in tx'"))

    assert asyncio.run(main()) == "in tx"


def test_closing_does_not_wait_forever_for_a_connection_still_in_use(database_url):
    async def main():
        loop = asyncio.get_running_loop()
        holding = asyncio.Event()

        async def hold_forever(conn):
            holding.set()
            await asyncio.Event().wait()  # a stuck task that never gives its connection back

        async with floodgate.open_pg_pool(database_url, min_size=1, max_size=1, close_timeout=0.05) as pool:
            stuck = asyncio.create_task(pool.run(hold_forever))
            await holding.wait()
            closing_at = loop.time()
        closed_after = loop.time() - closing_at
        stuck.cancel()
        return closed_after

    closed_after = asyncio.run(asyncio.wait_for(main(), 10))
    assert 0.05 <= closed_after < 2


def _fatal_error_response(message: bytes) -> bytes:
    """A PostgreSQL ErrorResponse as a server sends it to every session on a fast shutdown (57P01)."""
    body = b"SFATAL\0VFATAL\0C57P01\0M" + message + b"\0\0"
    return b"E" + (len(body) + 4).to_bytes(4, "big") + body


async def _no_reset(conn: asyncpg.Connection) -> None:
    pass


@pytest.mark.parametrize("reset", [None, _no_reset], ids=["default_reset", "no_reset"])
async def test_a_connection_the_server_killed_while_idle_is_a_dependency_error_then_replaced(
    database_url, reset
):
    # When PostgreSQL stops (fast shutdown, failover, pg_terminate_backend) each idle session first gets
    # a FATAL ErrorResponse, then its socket closes. asyncpg handles the message in one loop iteration
    # and the EOF in a later one: a caller that takes the connection in between gets asyncpg's
    # InternalClientError ("another operation (2) is in progress"), not a connection error. Here the
    # message is delivered and the EOF withheld, so the window is open for as long as the test needs.
    kwargs = {} if reset is None else {"reset": reset}
    async with trio_asyncio.open_loop():
        async with floodgate.open_pg_pool(database_url, min_size=1, max_size=1, **kwargs) as pool:
            assert await pool.fetchval("select 1") == 1
            (holder,) = [h for h in pool.raw._holders if h.is_connected()]
            holder._con._protocol.data_received(
                _fatal_error_response(b"terminating connection due to administrator command")
            )
            with pytest.raises(floodgate.DependencyError, match="InternalClientError"):
                await pool.fetchval("select 2")
            # The broken connection is not handed out again: the next call gets a new one.
            assert await pool.fetchval("select 3") == 3
            assert pool.statistics().in_use == 0


# -- the budget's timeouts --------------------------------------------------------------------


async def test_the_budget_db_timeouts_become_the_pools_statement_and_command_timeouts(
    database_url, repo_budget
):
    timeouts = repo_budget.dependency("db").timeouts
    async with trio_asyncio.open_loop():
        async with floodgate.open_pg_pool(database_url, max_size=1, timeouts=timeouts) as pool:
            assert await pool.fetchval("show statement_timeout") == f"{timeouts.attempt:g}s"
            assert pool.raw._connect_kwargs["command_timeout"] == timeouts.attempt
            assert pool.raw._connect_kwargs["timeout"] == timeouts.connect


async def test_a_statement_longer_than_the_attempt_timeout_is_a_deadline_exceeded(database_url):
    timeouts = floodgate.TimeoutPolicy(attempt=0.2)
    async with trio_asyncio.open_loop():
        async with floodgate.open_pg_pool(
            database_url, max_size=1, timeouts=timeouts, name="db_write"
        ) as pool:
            assert await pool.fetchval("show statement_timeout") == "200ms"
            started = trio.current_time()
            with pytest.raises(floodgate.DeadlineExceeded) as caught:
                await pool.execute("select pg_sleep(5)")
            assert caught.value.dependency == "db_write" and caught.value.http_status == 504
            assert trio.current_time() - started < 2  # cut at the timeout, not after the 5 s
            assert await pool.fetchval("select 1") == 1  # and the session is fine for the next call


async def _sleep_with_statement_timeout(conn: asyncpg.Connection, millis: int) -> None:
    async with conn.transaction():
        await conn.execute(f"set local statement_timeout = {millis}")
        await conn.execute("select pg_sleep(5)")


async def test_the_servers_statement_timeout_is_a_deadline_exceeded_too(database_url):
    # The server's own cancel (QueryCanceledError) ends before asyncpg's command_timeout here.
    async with trio_asyncio.open_loop():
        async with floodgate.open_pg_pool(
            database_url, max_size=1, timeouts=floodgate.TimeoutPolicy(attempt=3.0)
        ) as pool:
            with pytest.raises(floodgate.DeadlineExceeded, match="statement timeout") as caught:
                await pool.run(_sleep_with_statement_timeout, 50)
            assert isinstance(caught.value.__cause__, asyncpg.QueryCanceledError)


@pytest.mark.realtime  # a real socket that never answers, and the connect timeout on the wall clock
async def test_the_connect_timeout_bounds_opening_a_connection():
    # A socket that completes the TCP handshake (the kernel does) but never answers PostgreSQL's
    # startup message: only the connect timeout ends the wait.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        async with trio_asyncio.open_loop():
            started = trio.current_time()
            with pytest.raises(floodgate.PoolUnavailable, match=r"cannot open pool to .*: TimeoutError"):
                async with floodgate.open_pg_pool(
                    f"postgresql://nobody@127.0.0.1:{port}/x",
                    max_size=1,
                    timeouts=floodgate.TimeoutPolicy(connect=0.2),
                ):
                    pass
            assert trio.current_time() - started < 2


async def test_timeouts_and_the_asyncpg_arguments_they_set_are_one_or_the_other(database_url):
    async with trio_asyncio.open_loop():
        with pytest.raises(TypeError, match="command_timeout"):
            async with floodgate.open_pg_pool(
                database_url, max_size=1, timeouts=floodgate.TimeoutPolicy(), command_timeout=5
            ):
                pass

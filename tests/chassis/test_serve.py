"""The chassis served over real HTTP by hypercorn's trio worker."""

from __future__ import annotations

import gc
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import chassis
import floodgate
import httpx
import pytest
import trio
from quart_trio import QuartTrio


@asynccontextmanager
async def served(app: QuartTrio, *, grace_period: float) -> AsyncIterator[tuple[str, trio.Event]]:
    """Serve ``app`` on a port the OS picks; yields its base URL and the shutdown event."""
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        urls = await nursery.start(
            partial(
                chassis.serve,
                app,
                host="127.0.0.1",
                port=0,
                grace_period=grace_period,
                shutdown_trigger=shutdown.wait,
            )
        )
        yield urls[0], shutdown
        shutdown.set()


@pytest.mark.realtime
async def test_early_answers_do_not_wedge_keep_alive_connections() -> None:
    # An answer sent before the request body was read used to leave bytes on the connection,
    # and the next request on it hung. The chassis now reads (bounded) bodies first.
    app = chassis.create_app("t", max_body_bytes=100_000)
    async with served(app, grace_period=1) as (base, _), httpx.AsyncClient(timeout=2) as client:
        for _ in range(100):
            refused = await client.post(f"{base}/no-such-route", content=b"x" * 5000)
            assert refused.status_code == 404
            assert (await client.get(f"{base}/healthz")).status_code == 200
        too_big = await client.post(f"{base}/no-such-route", content=b"x" * 200_000)
        assert too_big.status_code == 413
        assert too_big.headers["connection"] == "close"
        assert (await client.get(f"{base}/healthz")).status_code == 200


@pytest.mark.realtime
async def test_what_the_process_built_to_start_is_out_of_the_collectors_reach_while_it_serves() -> None:
    app = chassis.create_app("t")
    assert gc.get_freeze_count() == 0
    async with served(app, grace_period=1):
        assert gc.get_freeze_count() > 0
        assert not any(app is obj for generation in range(3) for obj in gc.get_objects(generation))
    assert gc.get_freeze_count() == 0  # thawed when serving ended


@pytest.mark.realtime
async def test_graceful_shutdown_finishes_in_flight_requests() -> None:
    app = chassis.create_app("t")
    started = trio.Event()

    @app.get("/slow")
    async def slow():
        started.set()
        await trio.sleep(0.1)
        return {"done": True}

    result = {}
    async with served(app, grace_period=5) as (base, shutdown), trio.open_nursery() as nursery:

        async def call() -> None:
            async with httpx.AsyncClient(timeout=5) as client:
                result["response"] = await client.get(f"{base}/slow")

        nursery.start_soon(call)
        await started.wait()
        shutdown.set()  # shutdown requested while the request is in flight
    assert result["response"].status_code == 200
    assert result["response"].json() == {"done": True}


@pytest.mark.realtime
async def test_a_port_in_use_is_one_startup_error() -> None:
    # hypercorn binds inside its nurseries: the OSError arrives wrapped in exception groups, and
    # the chassis must still turn it into the one line a supervisor shows.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(
            chassis.StartupError, match=rf"^cannot listen on 127\.0\.0\.1:{port}: address already in use$"
        ):
            await chassis.serve(
                chassis.create_app("t"),
                host="127.0.0.1",
                port=port,
                grace_period=1,
                shutdown_trigger=trio.sleep_forever,
            )


def test_a_pool_that_cannot_open_stops_start_up_with_one_line_and_exit_code_2(monkeypatch, capsys) -> None:
    # Every service opens its pools inside run_service's main: the typed error, however deep in
    # exception groups, becomes the one start-up line, the same for every service.
    monkeypatch.setattr("chassis._serve.configure_logging", lambda **_: None)

    async def main(settings: chassis.BaseServiceSettings, shutdown: trio.Event) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.sleep_forever)
            raise floodgate.PoolUnavailable(
                "cannot open pool to db.internal:5432/app: OSError: refused",
                dependency="db",
                location="db.internal:5432/app",
            )

    assert chassis.run_service("svc", chassis.BaseServiceSettings, "FLOODGATE_TEST_SVC_", main) == 2
    assert capsys.readouterr().err == (
        "svc: the database does not answer: db: cannot open pool to db.internal:5432/app: OSError: refused\n"
    )

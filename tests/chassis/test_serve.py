"""The chassis served over real HTTP by hypercorn's trio worker."""

from __future__ import annotations

import httpx
import pytest
import trio

import chassis
from tests.conftest import free_port


@pytest.mark.realtime
async def test_early_answers_do_not_wedge_keep_alive_connections() -> None:
    # An answer sent before the request body was read used to leave bytes on the connection,
    # and the next request on it hung. The chassis now reads (bounded) bodies first.
    app = chassis.create_app("t", max_body_bytes=100_000)
    port = free_port()
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        await nursery.start(
            lambda task_status: chassis.serve(
                app, host="127.0.0.1", port=port, grace_period=1,
                shutdown_trigger=shutdown.wait, task_status=task_status,
            )
        )
        base = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(timeout=2) as client:
            for _ in range(100):
                refused = await client.post(f"{base}/no-such-route", content=b"x" * 5000)
                assert refused.status_code == 404
                assert (await client.get(f"{base}/healthz")).status_code == 200
            too_big = await client.post(f"{base}/no-such-route", content=b"x" * 200_000)
            assert too_big.status_code == 413
            assert too_big.headers["connection"] == "close"
            assert (await client.get(f"{base}/healthz")).status_code == 200
        shutdown.set()


@pytest.mark.realtime
async def test_graceful_shutdown_finishes_in_flight_requests() -> None:
    app = chassis.create_app("t")
    started = trio.Event()

    @app.get("/slow")
    async def slow():
        started.set()
        await trio.sleep(0.1)
        return {"done": True}

    port = free_port()
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        await nursery.start(
            lambda task_status: chassis.serve(
                app, host="127.0.0.1", port=port, grace_period=5,
                shutdown_trigger=shutdown.wait, task_status=task_status,
            )
        )
        result = {}

        async def call() -> None:
            async with httpx.AsyncClient(timeout=5) as client:
                result["response"] = await client.get(f"http://127.0.0.1:{port}/slow")

        nursery.start_soon(call)
        await started.wait()
        shutdown.set()  # shutdown requested while the request is in flight
    assert result["response"].status_code == 200
    assert result["response"].json() == {"done": True}

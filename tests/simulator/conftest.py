"""Fixtures for the downstream simulator's tests: an app per test, driven in-process."""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio

from services.simulator import SimulatorSettings, create_app


def make_app(behaviour: dict[str, Any] | None = None, seed: int = 42):
    return create_app(SimulatorSettings(seed=seed, behaviour=behaviour or {}))


@pytest.fixture
def app():
    return make_app()


@pytest.fixture
def client(app):
    return app.test_client()


def chat_body(user: str, *, system: str | None = None, **extra: Any) -> dict[str, Any]:
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": user}
    ]
    return {"model": "sim-chat", "messages": messages, **extra}


async def post_streaming(client, path: str, body: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
    """POST and read the body as it arrives. (``client.post`` buffers at most 10 body chunks before
    its reader starts, so a longer stream would block the test client, not a real server.)"""
    async with client.request(path, method="POST", headers={"content-type": "application/json"}) as conn:
        await conn.send(json.dumps(body).encode())
        await conn.send_complete()
        data = bytearray()
        while True:
            try:
                data.extend(await conn.receive())
            except trio.EndOfChannel:
                break
        return conn.status_code, dict(conn.headers), bytes(data)

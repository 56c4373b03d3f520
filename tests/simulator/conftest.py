"""Fixtures for the downstream simulator's tests: an app per test, driven in-process."""

from __future__ import annotations

from typing import Any

import pytest

from services.upstreams import UpstreamsSettings, create_app


def make_app(behaviour: dict[str, Any] | None = None, seed: int = 42):
    return create_app(UpstreamsSettings(seed=seed, behaviour=behaviour or {}))


@pytest.fixture
def app():
    return make_app()


@pytest.fixture
def client(app):
    return app.test_client()


def chat_body(user: str, *, system: str | None = None, **extra: Any) -> dict[str, Any]:
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
    return {"model": "sim-chat", "messages": messages, **extra}

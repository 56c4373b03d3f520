"""Fixtures of the gateway tests: the Redis server (where one runs), process helpers."""

from __future__ import annotations

import os
import socket
import uuid
from urllib.parse import urlsplit

import pytest

TEST_REDIS_URL = os.environ.get("FLOODGATE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
#: every counter key the tests write starts with this; the session deletes them at the end
_RUN_PREFIX = f"fgtest-{uuid.uuid4().hex[:8]}-"


def redis_prefix() -> str:
    """A fresh key prefix for one test's counters (so concurrent runs and tests never share keys)."""
    return f"{_RUN_PREFIX}{uuid.uuid4().hex[:8]}:"


def _redis_answers(url: str) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection(
            (parts.hostname or "127.0.0.1", parts.port or 6379), timeout=0.2
        ) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The Redis server the Redis-backend tests use; the test is skipped when none answers."""
    if not _redis_answers(TEST_REDIS_URL):
        pytest.skip(
            f"no Redis server answers at {TEST_REDIS_URL} (set FLOODGATE_TEST_REDIS_URL to use another)"
        )
    return TEST_REDIS_URL

"""Fixtures of the gateway tests: the Redis server (where one runs), process helpers."""

from __future__ import annotations

import os
import uuid
from urllib.parse import urlsplit

import pytest

from harness.ready import redis_answers

TEST_REDIS_URL = os.environ.get("FLOODGATE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
#: every counter key the tests write starts with this; the session deletes them at the end
# (the pid, not a random value: pytest may import this module twice, as conftest and as tests.gateway.conftest)
_RUN_PREFIX = f"fgtest-{os.getpid()}-"


def redis_prefix() -> str:
    """A fresh key prefix for one test's counters (so concurrent runs and tests never share keys)."""
    return f"{_RUN_PREFIX}{uuid.uuid4().hex[:8]}:"


@pytest.fixture(scope="session")
def redis_url(realtime):
    """The Redis server the Redis-backend tests use; the test is skipped when none answers. The keys
    the tests wrote (prefixes from `redis_prefix()`) are deleted at the end of the session."""
    parts = urlsplit(TEST_REDIS_URL)
    if not redis_answers(parts.hostname or "127.0.0.1", parts.port or 6379):
        pytest.skip(
            f"no Redis server answers at {TEST_REDIS_URL} (set FLOODGATE_TEST_REDIS_URL to use another)"
        )
    yield TEST_REDIS_URL
    import redis

    client = redis.Redis.from_url(TEST_REDIS_URL, socket_timeout=2)
    try:
        keys = list(client.scan_iter(match=f"{_RUN_PREFIX}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()

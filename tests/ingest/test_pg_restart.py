"""PostgreSQL restarts under a running ingest API and worker: both reconnect and carry on, and every
job the API accepted ends succeeded. Uses its own embedded server, so stopping it disturbs no one."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from cluster.migrate import apply_migrations
from harness.postgres import PostgresServer, temporary_postgres
from harness.processes import Proc
from harness.services import start_ingest_api, start_ingest_worker, start_simulator


@pytest.fixture
def own_postgres(realtime) -> Iterator[PostgresServer]:
    # Not under tmp_path: a pytest session starting elsewhere resets /tmp/pytest-of-<user> to 0700,
    # which would stop the server's unprivileged user from reaching its data directory.
    settings = {"fsync": "off", "synchronous_commit": "off", "max_connections": "100"}
    with temporary_postgres(prefix="ingest-pg-restart-", settings=settings) as server:
        yield server


def submit_with_retries(client: httpx.Client, i: int, deadline: float) -> int:
    """What a well-behaved client does: retry on 503/connection errors (same Idempotency-Key)."""
    body = {"doc_id": f"doc{i}", "text": f"document number {i} " + "words " * 30}
    headers = {"x-floodgate-tenant": "acme", "Idempotency-Key": f"k{i}"}
    while True:
        try:
            response = client.post("/v1/omnirag/jobs", json=body, headers=headers)
            if response.status_code in (200, 202):
                return response.json()["job_id"]
            assert response.status_code == 503 and response.headers["Retry-After"], response.text
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"job {i} not accepted before the deadline")
        time.sleep(0.1)


@pytest.mark.realtime
@pytest.mark.slow  # about 10 s: its own PostgreSQL, three processes, a restart
@pytest.mark.timeout(120)  # its own waits: 30 s for PostgreSQL, 60 s for the jobs
def test_api_and_worker_survive_a_postgres_restart(own_postgres: PostgresServer, tmp_path: Path) -> None:
    dsn = own_postgres.dsn("postgres")
    asyncio.run(apply_migrations(dsn))
    children: list[Proc] = []
    try:
        simulator = start_simulator(tmp_path)
        children.append(simulator)
        api = start_ingest_api(dsn, tmp_path)
        worker = start_ingest_worker("w1", dsn, simulator, tmp_path, lease_seconds=3)
        children += [api, worker]
        api.wait_http("/readyz")
        worker.wait_http("/readyz")
        deadline = time.monotonic() + 60
        accepted: list[int] = []
        with httpx.Client(base_url=api.url, timeout=5) as client:
            accepted += [submit_with_retries(client, i, deadline) for i in range(20)]
            own_postgres.stop(signum=signal.SIGINT)  # fast: every session ends, as in a restart
            time.sleep(0.5)
            assert client.get("/readyz").status_code == 503  # the API says so while the DB is away
            own_postgres.start()
            accepted += [submit_with_retries(client, i, deadline) for i in range(20, 40)]
            while True:
                states = [
                    client.get(f"/v1/omnirag/jobs/{j}", headers={"x-floodgate-tenant": "acme"})
                    for j in accepted
                ]
                if all(s.status_code == 200 and s.json()["state"] == "succeeded" for s in states):
                    break
                assert time.monotonic() < deadline, [s.json().get("state") for s in states]
                time.sleep(0.2)
            assert len(set(accepted)) == 40
            assert client.get("/readyz").status_code == 200
            # the API samples the queue too (a deployment may run no worker): its gauges are there
            assert "\ningest_jobs_expired_leases 0.0\n" in client.get("/metrics").text
        assert worker.process.poll() is None and api.process.poll() is None  # both carried on, no restart
    finally:
        for child in children:
            child.stop(timeout=5)

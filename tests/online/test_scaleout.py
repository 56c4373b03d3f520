"""Dynamic shares with real processes: a third online process joins two under load.

Every process's LLM gate shrinks within a heartbeat of the new generation, the joiner takes its
share, and the simulator — the provider — never sees more calls at once than the global limit.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from datetime import datetime
from pathlib import Path

import asyncpg
import floodgate
import httpx
import pytest

from harness import REPO_ROOT
from harness.processes import Proc
from harness.ready import wait_until
from harness.services import metric, start_online, start_simulator

pytestmark = pytest.mark.realtime

GLOBAL = floodgate.load_budget(REPO_ROOT / "config" / "budget.toml").global_limit("llm")
HEARTBEAT = floodgate.MembershipPolicy().heartbeat


def llm_capacity(proc: Proc) -> int:
    return int(metric(proc, "floodgate_gate_capacity", 'gate="llm"'))


def keep_busy(proc: Proc, stop: threading.Event) -> None:
    """One closed-loop caller of nexusAssess: four LLM calls a request, a new subject each time
    (the endpoint caches its answers)."""
    with httpx.Client(base_url=proc.url, timeout=10) as client:
        while not stop.is_set():
            rubric = [{"id": f"c{i}", "description": f"criterion {i}"} for i in range(4)]
            try:
                response = client.post(
                    "/v1/nexus-assess/assessments",
                    json={"subject": f"subject {uuid.uuid4().hex}", "rubric": rubric},
                    headers={"x-floodgate-tenant": "acme"},
                )
            except httpx.HTTPError:
                response = None
            if response is None or response.status_code != 200:
                time.sleep(0.05)


def shrunk_at(proc: Proc, capacity: int) -> float:
    """When ``proc`` resized its LLM gate to ``capacity`` (the last time), from its JSON log."""
    at = None
    for line in proc.log_text().splitlines():
        if '"floodgate.share_resized"' in line:
            event = json.loads(line)
            if event["dependency"] == "llm" and event["capacity_to"] == capacity:
                at = datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp()
    assert at is not None, f"{proc.name} never resized its llm gate to {capacity}"
    return at


def generation_changed_at(dsn: str) -> tuple[int, int, float]:
    async def read() -> tuple[int, int, float]:
        conn = await asyncpg.connect(dsn)
        try:
            row = await conn.fetchrow(
                "SELECT generation, cardinality(members) AS n, extract(epoch FROM changed_at) AS at "
                "FROM floodgate_membership WHERE service = 'online'"
            )
        finally:
            await conn.close()
        return row["generation"], row["n"], float(row["at"])

    return asyncio.run(read())


@pytest.mark.timeout(120)
def test_a_third_process_shrinks_every_gate_and_the_provider_never_sees_more_than_the_limit(
    fresh_database_url: str, tmp_path: Path
) -> None:
    behaviour = tmp_path / "behaviour.toml"
    behaviour.write_text("[chat]\nlatency = { fixed_ms = 300 }\n")
    simulator = start_simulator(tmp_path, env={"SIMULATOR_BEHAVIOUR": str(behaviour)})
    procs: list[Proc] = []
    stop = threading.Event()
    threads: list[threading.Thread] = []

    def start(name: str) -> Proc:
        proc = start_online(tmp_path, database_url=fresh_database_url, provider_url=simulator.url, name=name)
        procs.append(proc)
        return proc

    def load(proc: Proc, callers: int = 2) -> None:
        for _ in range(callers):
            thread = threading.Thread(target=keep_busy, args=(proc, stop), daemon=True)
            thread.start()
            threads.append(thread)

    try:
        a, b = start("online-a"), start("online-b")
        a.wait_http("/readyz")
        b.wait_http("/readyz")
        wait_until(
            lambda: (llm_capacity(a), llm_capacity(b)) == (GLOBAL // 2, GLOBAL // 2),
            what="a and b share the limit",
            within=10,
        )
        load(a)
        load(b)
        time.sleep(2)
        c = start("online-c")
        wait_until(
            lambda: (llm_capacity(a), llm_capacity(b)) == (GLOBAL // 3, GLOBAL // 3),
            what="a and b give a third back",
            within=15,
        )
        generation, members, changed_at = generation_changed_at(fresh_database_url)
        assert members == 3 and generation >= 3
        for proc in (a, b):
            # each lowers on the answer to its first heartbeat after the new generation (its own log
            # says when): that heartbeat starts within one interval, and its round trip through
            # the bridge and PostgreSQL on a busy two-core machine takes up to half a second more
            lag = shrunk_at(proc, GLOBAL // 3) - changed_at
            assert 0 <= lag <= HEARTBEAT + 0.5, (proc.name, lag)
        c.wait_http("/readyz")
        wait_until(lambda: llm_capacity(c) == GLOBAL // 3, what="c takes its share", within=10)
        load(c)
        time.sleep(2)
        stats = httpx.get(simulator.url + "/admin/stats", timeout=5).json()["apis"]["chat"]
        assert stats["peak_concurrent"] <= GLOBAL
        assert stats["peak_concurrent"] >= GLOBAL // 2  # the load did fill the gates
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=15)
        for proc in procs:
            proc.stop()
        simulator.stop()

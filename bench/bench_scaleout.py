"""``make bench-scaleout``: online processes join and die under load; the LLM's global limit holds.

One online process carries nexusAssess (four LLM calls a request) at 0.8x of the LLM provider's
global capacity (``global_concurrency / typical_latency`` calls/s, the simulator answering in
``typical_latency``); a second and a third process join under load, then one is killed with
SIGKILL. A small client-side balancer spreads the open-loop arrivals (floodgate's `OpenLoop`)
over the processes that answer ``/readyz`` and moves a request that finds its process gone to
the next one, as Envoy's retry on connect failure does. Each process is a member (dynamic shares).

One JSON line on stdout::

    {"provider_peak_over_global": <= 1.0,   the simulator's peak LLM concurrency / global limit
     "reshare_seconds": <= 5,               worst time from a change to every live gate at its share
     "goodput_ratio_during_changes": >= 0.9} 200s / requests scheduled within 5 s of each change
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import tempfile
import time
import uuid
from collections import Counter
from datetime import datetime
from functools import partial
from pathlib import Path

import httpx
import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import floodgate  # noqa: E402
from floodgate._load_schedule import Arrival, OpenLoop, constant_rate  # noqa: E402

from harness.postgres import temporary_postgres  # noqa: E402
from harness.processes import Proc  # noqa: E402
from harness.ready import http_ok, wait_until_async  # noqa: E402
from harness.services import metric, start_online, start_simulator  # noqa: E402

BUDGET = floodgate.load_budget(ROOT / "config" / "budget.toml")
GLOBAL = BUDGET.global_limit("llm")
LATENCY = BUDGET.dependency("llm").typical_latency
CALLS = BUDGET.endpoint("nexus_assess").calls["llm"]
CHANGE_WINDOW = 5.0
#: the longest a process may take to become ready, or the gates to settle at their shares
WAIT_S = 60.0
TENANTS = 16
PATH = "/v1/nexus-assess/assessments"


def prepare_database(dsn: str) -> None:
    from cluster.migrate import apply_migrations, ensure_database

    async def prepare() -> None:
        await ensure_database(dsn)
        await apply_migrations(dsn)

    asyncio.run(prepare())


def generation_changed_at(dsn: str) -> float:
    import asyncpg

    async def read() -> float:
        conn = await asyncpg.connect(dsn)
        try:
            return float(
                await conn.fetchval(
                    "SELECT extract(epoch FROM changed_at) FROM floodgate_membership WHERE service = 'online'"
                )
            )
        finally:
            await conn.close()

    return asyncio.run(read())


def resized_at(proc: Proc, capacity: int, since: float) -> float:
    """When ``proc`` first set its LLM gate to ``capacity`` at or after ``since`` (its JSON log)."""
    for line in proc.log_text().splitlines():
        if '"floodgate.share_resized"' not in line:
            continue
        event = json.loads(line)
        at = datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp()
        if event["dependency"] == "llm" and event["capacity_to"] == capacity and at >= since:
            return at
    raise LookupError(f"{proc.name} never set its llm gate to {capacity} after {since}")


class Balancer:
    """Round-robin over the processes that are ready; a connect failure moves to the next one."""

    def __init__(self) -> None:
        self.ready: list[Proc] = []
        self._next = 0

    async def send(self, client: httpx.AsyncClient, arrival: Arrival) -> tuple[int, str]:
        rubric = [{"id": f"c{i}", "description": f"criterion {i}"} for i in range(CALLS)]
        body = {"subject": f"subject {uuid.uuid4().hex}", "rubric": rubric}  # uncached: new each time
        for _ in range(3):
            if not self.ready:
                return 0, "no_process"
            proc = self.ready[self._next % len(self.ready)]
            self._next += 1
            # Many tenants: the per-tenant caps and token quotas are not what this measures.
            tenant = f"bench{arrival.index % TENANTS}"
            try:
                response = await client.post(
                    proc.url + PATH, json=body, headers={"x-floodgate-tenant": tenant}, timeout=10
                )
            except httpx.ConnectError:
                if proc in self.ready:
                    self.ready.remove(proc)
                continue
            code = "" if response.status_code == 200 else response.json().get("error", {}).get("code", "?")
            return response.status_code, code
        return 0, "connect_error"


def run(args: argparse.Namespace) -> dict[str, float]:
    rate = args.load * GLOBAL / LATENCY / CALLS  # requests/s
    workdir = Path(tempfile.mkdtemp(prefix="bench-scaleout-"))
    behaviour = workdir / "behaviour.toml"
    behaviour.write_text(f"[chat]\nlatency = {{ fixed_ms = {round(LATENCY * 1000)} }}\n")
    settings = {"max_connections": "200", "fsync": "off"}
    with temporary_postgres(prefix="bench-scaleout-pg-", settings=settings) as server:
        dsn = server.dsn("floodgate")
        prepare_database(dsn)
        simulator = start_simulator(workdir, env={"SIMULATOR_BEHAVIOUR": str(behaviour)})
        procs: list[Proc] = []
        try:
            return trio.run(measure, args, rate, dsn, simulator, procs, workdir)
        finally:
            for proc in procs:
                proc.stop()
            simulator.stop()


async def measure(
    args: argparse.Namespace, rate: float, dsn: str, simulator: Proc, procs: list[Proc], workdir: Path
) -> dict[str, float]:
    balancer = Balancer()
    changes: list[tuple[float, list[Proc]]] = []  # (when, the processes live after it)
    reshare: list[float] = []

    def start(name: str) -> Proc:
        proc = start_online(workdir, database_url=dsn, provider_url=simulator.url, name=name)
        procs.append(proc)
        return proc

    def capacities(live: list[Proc]) -> list[int]:
        return [int(metric(p, "floodgate_gate_capacity", 'gate="llm"')) for p in live]

    async def until_ready(proc: Proc) -> None:
        ready = partial(trio.to_thread.run_sync, http_ok, proc.url + "/readyz")
        await wait_until_async(ready, within=WAIT_S, interval=0.1)

    async def settled(since: float, live: list[Proc]) -> None:
        want = [GLOBAL // len(live)] * len(live)

        async def at_shares() -> bool:
            return await trio.to_thread.run_sync(capacities, live) == want

        await wait_until_async(at_shares, within=WAIT_S, interval=0.1)
        # When each gate took its share, from each process's own log: polling /metrics of busy
        # processes would add its own delay to the figure.
        reshare.append(max(resized_at(p, want[0], since) for p in live) - since)

    async def join(name: str, live: list[Proc]) -> None:
        proc = start(name)
        await until_ready(proc)  # it enters after the others gave their share back
        changed = await trio.to_thread.run_sync(generation_changed_at, dsn)
        changes.append((changed, [*live, proc]))
        balancer.ready.append(proc)
        await settled(changed, [*live, proc])

    async def script() -> None:
        a = start("online-a")
        await until_ready(a)
        balancer.ready.append(a)
        loop_started.set()
        await trio.sleep(args.phase)
        await join("online-b", [a])
        await trio.sleep(args.phase)
        b = procs[1]
        await join("online-c", [a, b])
        await trio.sleep(args.phase)
        c = procs[2]
        killed_at = time.time()
        b.signal(signal.SIGKILL)
        changes.append((killed_at, [a, c]))
        await settled(killed_at, [a, c])

    loop_started = trio.Event()
    answers: list[tuple[float, int, str]] = []  # (wall clock of the scheduled start, status, error code)
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=200)) as client:
        # the wall clock of each arrival, to place it against the changes
        wall_offset = time.time() - trio.current_time()

        async def send(arrival: Arrival) -> None:
            status, code = await balancer.send(client, arrival)
            answers.append((arrival.scheduled + wall_offset, status, code))

        async def scripted() -> None:
            await script()
            await trio.sleep(CHANGE_WINDOW + 1)
            nursery.cancel_scope.cancel()  # the load runs until the last change has been measured

        async with trio.open_nursery() as nursery:
            nursery.start_soon(scripted)
            await loop_started.wait()
            await client.post(simulator.url + "/admin/reset", timeout=5)
            loop = OpenLoop(constant_rate(rate, 3600), send, max_in_flight=500)
            await loop.run()
        stats = (await client.get(simulator.url + "/admin/stats", timeout=5)).json()["apis"]["chat"]
    answers.sort()
    during = [
        (st, code) for at, st, code in answers if any(0 <= at - when <= CHANGE_WINDOW for when, _ in changes)
    ]
    good = sum(1 for st, _ in during if st == 200)
    result = {
        "provider_peak_over_global": round(stats["peak_concurrent"] / GLOBAL, 3),
        "reshare_seconds": round(max(reshare), 2) if reshare else float("nan"),
        "goodput_ratio_during_changes": round(good / max(1, len(during)), 3),
    }
    per_change = []
    for when, _ in changes:
        window = [st for at, st, _ in answers if 0 <= at - when <= CHANGE_WINDOW]
        per_change.append(round(sum(1 for st in window if st == 200) / max(1, len(window)), 3))
    steady = [st for at, st, _ in answers if not any(0 <= at - when <= CHANGE_WINDOW for when, _ in changes)]
    print(
        f"bench-scaleout: {rate:.2f} req/s ({args.load:g}x of {GLOBAL} LLM slots / {LATENCY:g}s / {CALLS} calls); "
        f"reshare per change (join, join, kill) {[round(r, 2) for r in reshare]} s; "
        f"peak LLM {stats['peak_concurrent']}/{GLOBAL}; goodput per change {per_change}, "
        f"outside changes {sum(1 for st in steady if st == 200) / max(1, len(steady)):.3f}; "
        f"answers {dict(Counter((st, code) for _, st, code in answers))}",
        file=sys.stderr,
    )
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--load", type=float, default=0.8, help="offered load, a fraction of the LLM capacity"
    )
    parser.add_argument("--phase", type=float, default=8.0, help="seconds between changes")
    args = parser.parse_args()
    result = run(args)
    print(json.dumps(result))
    ok = (
        result["provider_peak_over_global"] <= 1.0
        and result["reshare_seconds"] <= 5.0
        and result["goodput_ratio_during_changes"] >= 0.9
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

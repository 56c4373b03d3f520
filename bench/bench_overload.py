"""Benchmark: dealBrain under open-loop overload with its gates on vs off, in alternating rounds.

Does dealBrain keep its goodput and latency under overload, with the gates on and off?

The design method's central claim, measured. Three processes on loopback:

* the **providers**: the simulator (services/simulator) with fixed latencies (embed 20 ms, search
  150 ms, rerank 50 ms, LLM 400 ms), each API serving at most its budget's ``global_concurrency``
  at once and *queueing* the rest, FIFO — as a self-hosted model server or a database does (a
  provider that answers 429 instead protects itself; one that queues is where overload hurts);
* the **online service** (``python -m services.online``), started afresh for each mode of each
  round: with the repository's budget (gates on), or with a budget that lifts every provider gate,
  rate limit, endpoint door and per-request fan-out limit (gates off; retries, breakers and
  deadlines stay as they are);
* this process, the load: each level a constant-rate stream of ``floodgate loadtest``'s open-loop
  scheduler (`OpenLoop`, libs/floodgate/_load_schedule.py): requests start at fixed times whatever
  the server does, latency counts from the scheduled start, so a slow server cannot slow the load
  down (no coordinated omission), and each level is judged by the scenario file's ``[validity]``
  (config/loadtest.toml) like any load test. Only the HTTP client is the benchmark's own, the lean
  one of bench/_load.py (docs/decisions/0005-load-clients.md): httpx would take the cores the
  service under test needs.

Offered load is 0.5x, 1x, 2x and 3x the capacity the budget implies for dealBrain (Little's law
over its dependencies, `services.online.endpoint_capacity`: the LLM's slots over its latency, the
run prints it). A request is *good* when it is a full answer (200, nothing degraded) within the
endpoint's ``slo_p99_ms``; goodput is good requests per second of offered load.

Each of ``--rounds`` rounds runs every level with the gates on; the gates-off baseline runs in the
first ``--naive-rounds`` of them (by default the first only: it collapses far below, one round
places it), the two modes' order reversed every other round. Each round gives one figure per target:

G = goodput at 3x / capacity (gates on); P = p99 of full answers at 3x / p99 at 0.5x (gates on);
R = p99 of the rejections at 3x, in ms (gates on; no figure in a round without rejections);
N = goodput at 3x / capacity with the gates off. Targets: G >= 0.9, P <= 1.5, R < 50, each judged
on its median and spread over the rounds (bench/_rounds.py: met, missed, or straddles when the
spread crosses the target); and N well below G (reported, not judged).

Prints a table of every level of every round, a line per target, then a last line of JSON::

    {"goodput_ratio_at_3x": G, "p99_ratio_at_3x": P, "naive_goodput_ratio_at_3x": N,
     "rejection_p99_ms_at_3x": R, "..._spread": [q1, q3], "..._range": [min, max],
     "verdicts": {...}, "rounds": n}

(G, P, N, R the medians over the rounds.)

Run: ``make bench-overload`` (or ``.venv/bin/python bench/bench_overload.py [--duration S] [--rounds N]``).
Needs nothing running: it starts an embedded PostgreSQL (or uses ``DATABASE_URL``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import json
import math
import os
import resource
import shutil
import sys
import tempfile
import time
import tomllib
from collections import Counter
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import trio
from _load import Http1Client, Reply, encode_request
from _rounds import Result, Spread, Target, alternating, json_fields, judge, percentile

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import floodgate  # noqa: E402
from floodgate._load_scenario import load_scenarios  # noqa: E402
from floodgate._load_schedule import Arrival, OpenLoop, constant_rate  # noqa: E402

from harness.envoy import start_gateway, without_global_limit  # noqa: E402
from harness.ports import free_port  # noqa: E402
from harness.postgres import PostgresServer  # noqa: E402
from harness.processes import Proc, spawn  # noqa: E402
from harness.services import start_online  # noqa: E402
from services.online import ENDPOINTS, endpoint_capacity  # noqa: E402

#: The endpoint under load: its path, budget entry and door come from its record.
DEAL_BRAIN = next(endpoint for endpoint in ENDPOINTS if endpoint.name == "deal_brain")

LATENCY_MS = {"embeddings": 20, "search": 150, "rerank": 50, "chat": 400}
PROVIDER_PATHS = {  # simulator route -> the budget dependency whose global concurrency it serves
    "/v1/chat/completions": "llm",
    "/v1/embeddings": "embed",
    "/v1/rerank": "rerank",
    "/v1/search": "search",
}
FACTORS = (0.5, 1.0, 2.0, 3.0)
TENANT = "bench"
GOODPUT = Target("goodput_ratio_at_3x", ">=", 0.9, digits=3)
P99_RATIO = Target("p99_ratio_at_3x", "<=", 1.5, digits=3)
REJECTION_P99 = Target("rejection_p99_ms_at_3x", "<", 50, unit="ms", digits=1)
QUESTION = "How much did Aldercrest Robotics pay to acquire Norfield Analytics"
#: when a level's load counts: the scenario file's [validity], as for every floodgate loadtest run
VALIDITY = load_scenarios(ROOT / "config" / "loadtest.toml").validity.validity()
#: requests a level may have in flight (k6's maxVUs): far above rate x the endpoint's deadline, so a
#: drop means the service held requests far longer than it may
MAX_IN_FLIGHT = 10_000
#: seconds the answers still out at the end of a level get before they are cut off (as errors)
GRACE = 120.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, all cores (Linux /proc/stat)."""
    ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = ticks[3] + ticks[4]  # idle + iowait
    hz = os.sysconf("SC_CLK_TCK")
    return (sum(ticks) - idle) / hz, sum(ticks) / hz


# -- the providers: simulator behind a FIFO concurrency limit per API ----------------------------------


class QueueingProvider:
    """ASGI middleware: at most ``limits[path]`` requests of a path inside the app, the rest wait
    in FIFO order (trio's Semaphore is fair). Counts the longest queue per path."""

    def __init__(self, app: Any, limits: dict[str, int]) -> None:
        self.app = app
        self.slots = {path: trio.Semaphore(n) for path, n in limits.items()}
        self.waiting = dict.fromkeys(limits, 0)
        self.peak_waiting = dict.fromkeys(limits, 0)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/bench/queues":
            await self._queues(send)
            return
        slot = self.slots.get(scope.get("path", "")) if scope["type"] == "http" else None
        if slot is None:
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        self.waiting[path] += 1
        self.peak_waiting[path] = max(self.peak_waiting[path], self.waiting[path])
        try:
            await slot.acquire()
        finally:
            self.waiting[path] -= 1
        try:
            await self.app(scope, receive, send)
        finally:
            slot.release()

    async def _queues(self, send: Any) -> None:
        body = json.dumps({"peak_waiting": self.peak_waiting}).encode()
        self.peak_waiting = dict.fromkeys(self.peak_waiting, 0)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": body})


def serve_provider(port: int, limits: dict[str, int]) -> None:
    import chassis

    from services.simulator import SimulatorSettings, create_app

    chassis.configure_logging(service="provider", log_format="json", level="error")
    behaviour = {api: {"latency": {"fixed_ms": ms}} for api, ms in LATENCY_MS.items()}
    app = QueueingProvider(create_app(SimulatorSettings(behaviour=behaviour)), limits)

    async def main() -> None:
        await chassis.serve(
            app, host="127.0.0.1", port=port, grace_period=1.0, shutdown_trigger=trio.sleep_forever
        )

    trio.run(main)


# -- the database --------------------------------------------------------------------------------------


class Database:
    """An embedded PostgreSQL in a temporary directory (or ``DATABASE_URL``), with the tenant's chunks."""

    def __init__(self) -> None:
        self.server: PostgresServer | None = None
        self.tmp: str | None = None
        self.dsn = ""

    def start(self) -> str:
        external = os.environ.get("DATABASE_URL")
        if external:
            self.dsn = external
        else:
            self.tmp = tempfile.mkdtemp(prefix="bench-overload-")
            self.server = PostgresServer(
                Path(self.tmp) / "data",
                settings={"fsync": "off", "synchronous_commit": "off", "max_connections": "200"},
            )
            self.server.start()
            self.dsn = self.server.dsn("bench_overload")
        asyncio.run(self._prepare())
        return self.dsn

    async def _prepare(self) -> None:
        import asyncpg
        from providers import vector_literal

        from cluster.migrate import apply_migrations, ensure_database
        from services.simulator import embed

        await ensure_database(self.dsn)
        await apply_migrations(self.dsn)
        conn = await asyncpg.connect(self.dsn)
        try:
            await conn.execute("DELETE FROM chunks WHERE tenant_id = $1", TENANT)
            for doc in range(50):
                for chunk in range(4):
                    text = (
                        f"Memo {doc}.{chunk}: Aldercrest Robotics discussed acquiring Norfield Analytics "
                        f"for {100 + 10 * doc + chunk} million dollars in round {chunk}."
                    )
                    await conn.execute(
                        "INSERT INTO chunks (tenant_id, doc_id, chunk_no, content, embedding, content_hash)"
                        " VALUES ($1, $2, $3, $4, $5::text::vector, 'bench')",
                        TENANT,
                        f"memo-{doc}",
                        chunk,
                        text,
                        vector_literal(embed(text)),
                    )
            await conn.execute("ANALYZE chunks")  # plan the first searches like the later ones
        finally:
            await conn.close()

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop(timeout=15)
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)


# -- budgets -------------------------------------------------------------------------------------------


def one_tenant_budget(data: dict[str, Any]) -> dict[str, Any]:
    """The budget without per-tenant shares: the benchmark sends as one tenant and measures what the
    budget carries, which a ``tenant_share`` would cap at that tenant's share (`make bench-tenants`
    measures the shares)."""
    data = copy.deepcopy(data)
    for dep in data["dependencies"].values():
        dep.pop("tenant_share", None)
    for endpoint in data.get("endpoints", {}).values():
        endpoint.get("admission", {}).pop("tenant_share", None)
    return data


def naive_budget(data: dict[str, Any]) -> dict[str, Any]:
    """The same budget with the concurrency gates off: every provider gate, its queue and its
    client-side rate limit lifted, and dealBrain's per-request fan-out unbounded. Retries, retry
    budgets, breakers, timeouts and deadlines stay as they are; so does the database pool."""
    data = copy.deepcopy(data)
    for name in PROVIDER_PATHS.values():
        dep = data["dependencies"][name]
        dep["global_concurrency"] = 100_000
        dep["max_waiters"] = 100_000
        dep.pop("rate_limit", None)
    data["endpoints"][DEAL_BRAIN.name]["fan_out"] = 1_000
    data["endpoints"][DEAL_BRAIN.name]["admission"] = {"adaptive": False}
    return data


def write_toml(data: dict[str, Any], path: Path) -> None:
    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{k} = {value(x)}" for k, x in v.items()) + " }"
        return repr(v)

    lines: list[str] = []

    def table(prefix: str, d: dict[str, Any]) -> None:
        scalars = {k: v for k, v in d.items() if not isinstance(v, dict) or k in ("shares", "degradable")}
        nested = {k: v for k, v in d.items() if k not in scalars}
        if prefix:
            lines.append(f"[{prefix}]")
        lines.extend(f"{k} = {value(v)}" for k, v in scalars.items())
        for k, v in nested.items():
            table(f"{prefix}.{k}" if prefix else k, v)

    table("", data)
    path.write_text("\n".join(lines) + "\n")


# -- the service ---------------------------------------------------------------------------------------


LOG_DIR = Path(tempfile.gettempdir()) / "bench-overload-logs"


def start_service(*, budget_file: Path, provider_url: str, dsn: str, name: str) -> Proc:
    """The online service (harness/services.py), logging to a file in LOG_DIR, never to a pipe
    nobody reads: a full pipe blocks the writer, and a blocked event loop would be measured as the
    service's latency."""
    settings = {
        "ONLINE_BUDGET_FILE": str(budget_file),
        "ONLINE_LOG_LEVEL": "error",
        "ONLINE_GRACE_PERIOD": "1",
    }
    return start_online(LOG_DIR, database_url=dsn, provider_url=provider_url, name=name, settings=settings)


@contextlib.contextmanager
def gateway_in_front(service_port: int):
    """Envoy on the committed gateway/envoy.yaml in front of the service: API-key auth, the
    per-route local bucket (200/s for dealBrain), one cluster per endpoint with its breaker at the
    door's ceiling. The global per-tenant limit (20/s) is left out: it would answer the benchmark's
    one tenant with 429s — a different protection, measured by ``make bench-gateway``."""
    with start_gateway(
        LOG_DIR,
        endpoints={"online": [service_port]},
        keys={GATEWAY_KEY: TENANT},
        mutate=without_global_limit,
        name="bench-overload-envoy",
    ) as gateway:
        yield gateway


# -- the open-loop load generator ----------------------------------------------------------------------


@dataclass
class Level:
    mode: str
    factor: float
    rate: float
    duration: float
    slo: float
    outcomes: list[tuple[str, float]] = field(default_factory=list)  # (kind, latency s)
    server: list[float] = field(default_factory=list)  # Server-Timing total of full answers, s
    reasons: Counter = field(default_factory=Counter)  # why requests were not full answers
    steps: dict[str, list[float]] = field(default_factory=dict)  # Server-Timing step -> durations, s
    loop_lag: float = math.nan  # the service's mean event-loop lag during the level, s
    round: int = 0  # which round of the run (0: the first)
    door: float = math.nan  # dealBrain's door limit at the end of the level
    send_lag: list[float] = field(default_factory=list)  # how late the generator started each request, s
    invalid: str | None = None  # why the scheduler could not keep to the level's schedule (None: it did)
    provider_queue: dict[str, int] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)  # process -> share of one core during the level
    #: cores busy on the whole machine during the level, and the 1-minute load average at its end:
    #: what else ran (other work on a shared machine, PostgreSQL) is busy - sum(cpu)
    machine: float = math.nan
    load_average: float = math.nan

    def latencies(self, kind: str) -> list[float]:
        return sorted(t for k, t in self.outcomes if k == kind)

    def count(self, kind: str) -> int:
        return sum(1 for k, _ in self.outcomes if k == kind)

    @property
    def goodput(self) -> float:
        return sum(1 for k, t in self.outcomes if k == "ok" and t <= self.slo) / self.duration


def server_timing(header: str) -> dict[str, float]:
    """``embed;dur=20.1, total;dur=600.3`` -> {"embed": 0.0201, "total": 0.6003}."""
    out = {}
    for part in header.split(","):
        name, _, rest = part.strip().partition(";dur=")
        if rest:
            out[name] = float(rest.split(";")[0]) / 1000
    return out


def classify(response: Reply) -> tuple[str, str | None]:
    """(kind, reason): kind is ok, degraded, rejected (429/503) or error; reason says why not ok."""
    body = response.json()
    if response.status == 200:
        if not body["degraded"] and body["answer"]:
            return "ok", None
        why = ", ".join(f"{d['step']}:{d['reason']}" for d in body["degraded"]) or "no answer"
        return "degraded", f"degraded {why}"
    error = body.get("error") or {}
    reason = f"{response.status} {error.get('code')} ({(error.get('details') or {}).get('dependency')})"
    return ("rejected" if response.status in (429, 503) else "error"), reason


#: How the generator names the tenant: the header the gateway sets, when it calls the service
#: directly; an API key, when it goes through the gateway (which then sets the header itself).
DIRECT_HEADERS = {"x-floodgate-tenant": TENANT}
GATEWAY_KEY = "bench-overload-key"
GATEWAY_HEADERS = {"x-api-key": GATEWAY_KEY}


async def run_level(
    client: Http1Client, level: Level, offset: int, headers: dict[str, str] = DIRECT_HEADERS
) -> None:
    """The level's constant rate for its duration through `OpenLoop`; its outcomes, lateness and
    validity into ``level``."""
    headers = {"content-type": "application/json", **headers}

    async def one(arrival: Arrival) -> None:
        body = json.dumps(
            {"question": f"{QUESTION} (request {offset + arrival.index})?", "top_k": 5}
        ).encode()
        try:
            response = await client.send(
                encode_request("POST", DEAL_BRAIN.path, host=client.host, headers=headers, body=body)
            )
            kind, reason = classify(response)
            if reason:
                level.reasons[reason] += 1
            if kind == "ok":
                timing = server_timing(response.headers.get("server-timing", ""))
                level.server.append(timing.get("total", math.nan))
                for name, seconds in timing.items():
                    level.steps.setdefault(name, []).append(seconds)
        except (OSError, ValueError, trio.BrokenResourceError) as exc:
            kind = "error"
            level.reasons[f"client {type(exc).__name__}"] += 1
        level.outcomes.append((kind, trio.current_time() - arrival.scheduled))

    loop = OpenLoop(
        constant_rate(level.rate, level.duration),
        one,
        max_in_flight=MAX_IN_FLIGHT,
        grace=GRACE,
        validity=VALIDITY,
    )
    run = await loop.run()
    level.send_lag = run.lateness
    level.invalid = run.reason
    for record in run.records:
        if record.interrupted:
            level.outcomes.append(("error", math.nan))
            level.reasons[f"cut off {GRACE:g}s after the level"] += 1
    for _ in run.dropped:
        level.outcomes.append(("dropped", math.nan))
        level.reasons[f"dropped: {MAX_IN_FLIGHT} in flight"] += 1


async def service_metrics(client: httpx.AsyncClient) -> tuple[float, float, float]:
    """(sum, count) of the service's ``floodgate_loop_lag_seconds`` histogram, and dealBrain's
    door limit now."""
    text = (await client.get("/metrics")).text
    values = {}
    for line in text.splitlines():
        if line.startswith(("floodgate_loop_lag_seconds_sum", "floodgate_loop_lag_seconds_count")):
            name, value = line.split()
            values[name.rsplit("_", 1)[1]] = float(value)
        elif line.startswith(f'floodgate_gate_capacity{{gate="admission_{DEAL_BRAIN.name}"}}'):
            values["door"] = float(line.split()[-1])
    return values.get("sum", 0.0), values.get("count", 0.0), values.get("door", math.nan)


async def run_mode(
    mode: str,
    url: str,
    provider_url: str,
    rates: list[tuple[float, float]],
    duration: float,
    slo: float,
    pids: dict[str, int],
    gateway_url: str | None = None,
    round_index: int = 0,
) -> list[Level]:
    """One mode's levels; the load goes to ``gateway_url`` when given (metrics still come from the
    service at ``url``)."""
    levels = []
    parts = httpx.URL(gateway_url or url)
    client = Http1Client(parts.host, parts.port)
    headers = GATEWAY_HEADERS if gateway_url else DIRECT_HEADERS
    async with httpx.AsyncClient(base_url=url, timeout=30.0) as metrics_client:
        # Open the connections first, as a gateway's pool to the service would hold them: without
        # it, each level's new connections meet a full listen backlog under load, and TCP's SYN
        # retransmission (1 s, 3 s...) would be measured instead of the service.
        await client.warm(int(max(rate for _, rate in rates) * 1.5))
        # Warm-up (not measured): first-call costs.
        await run_level(client, Level(mode, 0.0, rates[0][1], 1.0, slo), offset=10_000_000, headers=headers)
        for index, (factor, rate) in enumerate(rates):
            await trio.sleep(1.0)
            async with httpx.AsyncClient(base_url=provider_url) as provider:
                await provider.get("/bench/queues")  # reset the peak
            level = Level(mode, factor, rate, duration, slo, round=round_index)
            before = {name: cpu_seconds(pid) for name, pid in pids.items()}
            lag_before = await service_metrics(metrics_client)
            busy_before = machine_busy()[0]
            wall = time.monotonic()
            await run_level(client, level, offset=(index + 1) * 1_000_000, headers=headers)
            wall = time.monotonic() - wall
            level.cpu = {name: (cpu_seconds(pid) - before[name]) / wall for name, pid in pids.items()}
            level.machine = (machine_busy()[0] - busy_before) / wall
            level.load_average = os.getloadavg()[0]
            lag_after = await service_metrics(metrics_client)
            level.door = lag_after[2]
            samples = lag_after[1] - lag_before[1]
            level.loop_lag = (lag_after[0] - lag_before[0]) / samples if samples else math.nan
            async with httpx.AsyncClient(base_url=provider_url) as provider:
                level.provider_queue = (await provider.get("/bench/queues")).json()["peak_waiting"]
            levels.append(level)
            print(
                f"  {mode:9s} #{round_index + 1} {factor:>4g}x done: {level.goodput:.1f} good/s",
                file=sys.stderr,
                flush=True,
            )
    await client.aclose()
    return levels


# -- report --------------------------------------------------------------------------------------------


def report(levels: list[Level], capacity: float) -> None:
    header = (
        f"{'mode':12s} {'load':>5s} {'offered/s':>9s} {'goodput/s':>9s} {'p50 ms':>7s} {'p95 ms':>7s} "
        f"{'p99 ms':>7s} {'rejected':>8s} {'rej p99':>8s} {'degraded':>8s} {'errors':>7s} {'llm queue':>9s} "
        f"{'cpu svc/prov/load':>17s} {'others':>6s} {'srv p99':>7s} {'lag ms':>6s} {'door':>5s} {'gen p99':>7s} {'load1':>5s}"
    )
    print(header)
    print("-" * len(header))
    for lv in levels:
        ok = lv.latencies("ok")
        rej = lv.latencies("rejected")
        n = len(lv.outcomes) or 1
        print(
            f"{lv.mode + ' #' + str(lv.round + 1):12s} {lv.factor:>4g}x {lv.rate:>9.1f} {lv.goodput:>9.1f} {percentile(ok, 50) * 1000:>7.0f} "
            f"{percentile(ok, 95) * 1000:>7.0f} {percentile(ok, 99) * 1000:>7.0f} {lv.count('rejected') / n:>8.1%} "
            f"{percentile(rej, 99) * 1000:>8.1f} {lv.count('degraded') / n:>8.1%} {lv.count('error') / n:>7.1%} "
            f"{lv.provider_queue.get('/v1/chat/completions', 0):>9d} "
            f"{lv.cpu.get('service', 0):>6.0%}/{lv.cpu.get('provider', 0):.0%}/{lv.cpu.get('load', 0):.0%} "
            f"{lv.machine - sum(lv.cpu.values()):>6.0%} "
            f"{percentile(lv.server, 99) * 1000:>7.0f} {lv.loop_lag * 1000:>6.1f} {lv.door:>5.0f} "
            f"{percentile(lv.send_lag, 99) * 1000:>7.1f} {lv.load_average:>5.2f}"
        )
    print(
        f"capacity the budget implies: {capacity:g} requests/s; good = full answer within the SLO p99; "
        "llm queue = longest queue at the LLM provider; cpu = share of one core per process; "
        "others = the rest of the machine's busy CPU (PostgreSQL, other work), in cores; "
        "srv p99 = Server-Timing total; lag = the service's mean event-loop lag; door = dealBrain's admission "
        "limit at the end of the level; gen p99 = how late the load generator started a request (p99, ms: "
        "part of every latency above, since latency counts from the scheduled time); load1 = load average at the end"
    )
    for lv in levels:
        steps = ", ".join(f"{name} {percentile(v, 99) * 1000:.0f}" for name, v in lv.steps.items())
        print(f"  {lv.mode} #{lv.round + 1} {lv.factor:g}x: step p99 ms (full answers): {steps}")
        if lv.reasons:
            top = "; ".join(f"{n} x {r}" for r, n in lv.reasons.most_common(3))
            print(f"  {lv.mode} #{lv.round + 1} {lv.factor:g}x: not full answers: {top}")
        if lv.invalid:
            print(
                f"  {lv.mode} #{lv.round + 1} {lv.factor:g}x: NOT VALID, its figures measure the load: {lv.invalid}"
            )


def judge_rounds(levels: list[Level], capacity: float) -> tuple[list[Result], Spread | None]:
    """The targets judged on their per-round figures (a round lacking the 0.5x or 3x level gates on
    gives none), and the gates-off goodput ratio's spread (None without a gates-off 3x level)."""
    by_round: dict[tuple[str, int], dict[float, Level]] = {}
    for lv in levels:
        by_round.setdefault((lv.mode, lv.round), {})[lv.factor] = lv
    goodput, p99_ratio, rejection, naive = [], [], [], []
    for (mode, _), at in sorted(by_round.items(), key=lambda item: item[0][1]):
        if 3.0 not in at:
            continue
        if mode == "gates off":
            naive.append(at[3.0].goodput / capacity)
            continue
        goodput.append(at[3.0].goodput / capacity)
        if 0.5 in at:
            ratio = percentile(at[3.0].latencies("ok"), 99) / percentile(at[0.5].latencies("ok"), 99)
            if not math.isnan(ratio):
                p99_ratio.append(ratio)
        if rejected := at[3.0].latencies("rejected"):
            rejection.append(percentile(rejected, 99) * 1000)
    results = [
        judge(target, values)
        for target, values in ((GOODPUT, goodput), (P99_RATIO, p99_ratio), (REJECTION_P99, rejection))
        if values
    ]
    return results, Spread.of(naive) if naive else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of load per level (default 10)")
    parser.add_argument(
        "--factors",
        type=str,
        default=",".join(f"{f:g}" for f in FACTORS),
        help="loads to offer, as multiples of capacity (default 0.5,1,2,3; 0.5 and 3 are needed for the JSON)",
    )
    parser.add_argument("--modes", choices=("both", "on", "off"), default="both")
    parser.add_argument(
        "--rounds", type=int, default=3, help="rounds of gates on (median and spread reported; default 3)"
    )
    parser.add_argument(
        "--naive-rounds", type=int, default=1, help="of those, how many also run the gates off (default 1)"
    )
    parser.add_argument(
        "--via-gateway",
        action="store_true",
        help="gates on: send the load through Envoy (gateway/envoy.yaml) as in production",
    )
    parser.add_argument("--serve-provider", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--limits", type=str, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_provider:
        serve_provider(args.serve_provider, json.loads(args.limits))
        return 0

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 20_000)), hard))

    data = one_tenant_budget(tomllib.loads((ROOT / "config" / "budget.toml").read_text()))
    budget = floodgate.parse_budget(data)
    capacity = endpoint_capacity(budget, DEAL_BRAIN.name)
    slo = budget.endpoint(DEAL_BRAIN.name).slo_p99_ms / 1000
    for api, ms in LATENCY_MS.items():
        dep = {"embeddings": "embed", "chat": "llm"}.get(api, api)
        assert budget.dependency(dep).typical_latency == ms / 1000, f"{dep}: typical_latency is not {ms} ms"
    load_at_start = os.getloadavg()[0]
    rates = [(f, f * capacity.rps) for f in (float(x) for x in args.factors.split(","))]
    print(f"bench: {capacity.describe()}; {args.duration:g}s per level", file=sys.stderr)

    limits = {path: budget.global_limit(dep) for path, dep in PROVIDER_PATHS.items()}
    provider_port = free_port()
    provider_url = f"http://127.0.0.1:{provider_port}"
    db = Database()
    LOG_DIR.mkdir(exist_ok=True)
    provider = spawn(
        "provider",
        [sys.executable, __file__, "--serve-provider", str(provider_port), "--limits", json.dumps(limits)],
        log_dir=LOG_DIR,
        ports={"http": provider_port},
    )
    levels: list[Level] = []
    with tempfile.TemporaryDirectory() as tmp:
        gated_file, naive_file = Path(tmp) / "budget.toml", Path(tmp) / "budget-naive.toml"
        write_toml(data, gated_file)
        write_toml(naive_budget(data), naive_file)
        for written in (gated_file, naive_file):
            floodgate.load_budget(written)  # the written file must load as the service will load it
        try:
            dsn = db.start()
            provider.wait_http("/healthz", within=30)
            modes = [("gates on", gated_file), ("gates off", naive_file)]
            modes = [m for m in modes if args.modes == "both" or m[0] == f"gates {args.modes}"]
            for n in range(args.rounds):
                this_round = [
                    m for m in modes if m[0] == "gates on" or n < args.naive_rounds or args.modes == "off"
                ]
                for mode, budget_file in alternating(this_round, n):
                    name = f"{mode.replace(' ', '-')}-{n + 1}"
                    online = start_service(
                        budget_file=budget_file, provider_url=provider_url, dsn=dsn, name=name
                    )
                    try:
                        online.wait_http("/readyz", within=30)
                        pids = {
                            "service": online.process.pid,
                            "provider": provider.process.pid,
                            "load": os.getpid(),
                        }
                        with contextlib.ExitStack() as stack:
                            gateway_url = None
                            if args.via_gateway and mode == "gates on":
                                gateway_url = stack.enter_context(gateway_in_front(online.port)).url
                            run = partial(
                                run_mode, mode, online.url, provider_url, rates, args.duration, slo, pids
                            )
                            levels += trio.run(partial(run, gateway_url=gateway_url, round_index=n))
                    finally:
                        online.stop(timeout=15)
        finally:
            provider.stop(timeout=10)
            db.stop()

    report(levels, capacity.rps)
    print(
        f"machine: {os.cpu_count()} cores; load average at start {load_at_start:.2f}, at end {os.getloadavg()[0]:.2f}"
    )
    on = {lv.factor for lv in levels if lv.mode == "gates on"}
    if args.modes != "both" or not {0.5, 3.0} <= on:
        return 0
    results, naive = judge_rounds(levels, capacity.rps)
    for result in results:
        print(result.line())
    if naive is not None:
        print(
            f"naive_goodput_ratio_at_3x (gates off; well below G): median {naive.median:.3f} "
            f"(spread [{naive.q1:.3f}, {naive.q3:.3f}], range [{naive.low:.3f}, {naive.high:.3f}]; "
            f"{naive.rounds} rounds)"
        )
    if not any(r.target is REJECTION_P99 for r in results):
        print(f"{REJECTION_P99}: no rejections at 3x in any round")
    fields = json_fields(results)
    if naive is not None:
        fields["naive_goodput_ratio_at_3x"] = round(naive.median, 3)
        fields["naive_goodput_ratio_at_3x_spread"] = [round(naive.q1, 3), round(naive.q3, 3)]
        fields["naive_goodput_ratio_at_3x_range"] = [round(naive.low, 3), round(naive.high, 3)]
    print(json.dumps({**fields, "rounds": args.rounds}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

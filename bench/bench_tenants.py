"""Benchmark: the noisy neighbour. Does one tenant's flood leave another tenant's dealBrain answers
alone, does a tenant stay within its token budget, and does the LLM dependency stop hitting a provider
that says 429?

On the local cluster (``python -m cluster up`` on free ports: the embedded PostgreSQL, the simulator,
the online service, the ingest API and workers, the rate-limit service, Envoy). Tenant B
(``tenant-b``) sends dealBrain requests through the gateway at 0.3x the capacity the budget implies
(`endpoint_capacity`) in every phase, driven by `floodgate loadtest`'s runner. Tenant A's
(``tenant-a``) load runs in a process of its own, on the lean HTTP/1.1 client of bench/_load.py, so
that it never delays B's requests in B's generator:

1. **alone**: B only;
2. **flood**: A floods dealBrain at 3x that capacity straight at the online service (as a flood that
   got past the edge, or a deployment without one: the gateway's per-tenant request limit would
   otherwise refuse most of it before the services see it);
3. **pushback**: the same, with the LLM provider taking 12 requests at once where the budget allows
   16 (set through the simulator's admin API); the benchmark's budget has ``adaptive = true`` on the
   LLM, which has to find the 12;
4. **tokens**: A floods at 3x through the gateway instead, for two token windows and more: its token
   budget (``tokens_per_minute`` of the tenant table) and the request limit refuse what is over.

The cluster runs as an operator runs one online process: membership off (``FLOODGATE_MEMBERSHIP=0``).
Membership divides the global limits among the live processes; with one online process there is
nothing to divide, and it would only add a failure the benchmark does not measure: on a machine short
of CPU a late heartbeat fences the process (its gates at 0) and B is refused for that, not for A.
Before it starts, the benchmark checks that B's own share of the dealBrain door and of the LLM gate
holds B's load at the budget's typical latencies (Little's law), and says by how much: the ratio is
how much slower B's answers may get before B is refused for its own share rather than for A's flood.

Every request asks a different question, so no cache answers it. The providers
(bench/tenants_behaviour.toml) answer at the budget's typical latencies. B has a token budget its own
steady traffic fits (at the default 60,000 tokens a minute the gateway would refuse B for its own use
within a quarter of a minute); A keeps the default.

Figures, one JSON line at the end::

    {"victim_goodput_ratio": G, "victim_p99_ratio": P, "token_budget_overshoot": T,
     "provider_429_rate_adaptive": R, ...}

- ``victim_goodput_ratio``: B's goodput (full answers within the SLO p99, per second) in the flood
  over alone (target >= 0.95); ``victim_p99_ratio``: B's p99 in the flood over alone (<= 1.5);
- ``token_budget_overshoot``: A's tokens in its worst complete one-minute window, as the gateway's
  rate-limit service counted them (``GET /v1/usage`` as A, polled every second), over its
  ``tokens_per_minute``, minus 1; 0 when it stayed within (target <= 0.05);
- ``provider_429_rate_adaptive``: the online service's LLM attempts answered 429 over all its LLM
  attempts in the pushback phase after its first 20 s (the adaptation), from
  ``floodgate_attempts_total`` (the issue's adaptive test asks under 1 %).

Writes the run under ``.data/loadtest/bench-tenants-STAMP/`` (B's ``summary.json`` and ``report.html``,
``flooder.json``: A's side and its usage polls). Run: ``make bench-tenants`` (or ``.venv/bin/python
bench/bench_tenants.py [--alone S] [--flood S] [--pushback S] [--tokens S] [--out DIR]``). Needs nothing
running; about 7 minutes.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpx
import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import floodgate  # noqa: E402
from _load import Http1Client, encode_request, open_loop  # noqa: E402
from _rounds import Target, percentile  # noqa: E402
from bench_budget import Cluster, busy_cores, machine_busy, write_keys  # noqa: E402
from floodgate._load_report import write_report  # noqa: E402
from floodgate._load_run import render_summary, run_scenario, write_summary  # noqa: E402
from floodgate._load_scenario import LoadTestFile, load_scenarios, parse_scenarios  # noqa: E402
from floodgate._load_scrape import Scraper  # noqa: E402
from floodgate._top import targets_from_state  # noqa: E402

from services.online._admission import EndpointCapacity, endpoint_capacity  # noqa: E402

BEHAVIOUR = ROOT / "bench" / "tenants_behaviour.toml"
SCENARIOS = ROOT / "config" / "loadtest.toml"
PATH = "/v1/deal-brain/answers"
VICTIM, FLOODER = "tenant-b", "tenant-a"
VICTIM_RATE, FLOOD_RATE = 0.3, 3.0  # x the capacity the budget implies
#: what the LLM provider takes at once in the last phase (the budget allows 16 per process)
PROVIDER_LIMIT = 12
#: the LLM's attempts in the first seconds of that phase are the adaptation, not its result
ADAPTATION_S = 20.0
TARGETS = (
    Target("victim_goodput_ratio", ">=", 0.95),
    Target("victim_p99_ratio", "<=", 1.5),
    Target("token_budget_overshoot", "<=", 0.05),
    Target("provider_429_rate_adaptive", "<", 0.01),
)


#: B's own token budget: its steady 0.3x (about 12 answers/s of a few hundred tokens each) would spend
#: the default 60,000 tokens a minute in a quarter of a minute, and the gateway would refuse B for its
#: own budget, not because of A. A keeps the default.
VICTIM_TABLE = f"""
[tenants.{VICTIM}]              # bench-tenants: the victim's traffic fits its token budget
tokens_per_minute = 1000000
tokens_per_day = 100000000
"""


def bench_budget(path: Path) -> floodgate.Budget:
    """The committed budget with the LLM dependency adaptive and B's token budget, written to ``path``
    (the cluster writes the gateway's token budgets from it)."""
    text = (ROOT / "config" / "budget.toml").read_text()
    header = "[dependencies.llm]\n"
    assert text.count(header) == 1, "config/budget.toml: expected one [dependencies.llm] table"
    path.write_text(
        text.replace(header, header + "adaptive = true                     # bench-tenants\n") + VICTIM_TABLE
    )
    return floodgate.load_budget(path)


def victim_fit(budget: floodgate.Budget, capacity: EndpointCapacity) -> dict[str, Any]:
    """B's requests in flight at its rate and the budget's typical latencies (Little's law), at the
    dealBrain door (the whole request) and at the LLM gate (the bottleneck's part; also at the limit
    the provider allows in the pushback phase), against B's share of each; ``headroom``: the lowest
    share over need (below 1, B's own share would refuse it)."""
    rate = VICTIM_RATE * capacity.rps
    gate = budget.process_limit("online", capacity.bottleneck)
    places = {
        "deal_brain": ("deal_brain", rate * capacity.latency, capacity.in_flight),
        capacity.bottleneck: (capacity.bottleneck, rate * capacity.bottleneck_latency, gate),
        # the pushback phase: the gate learns the provider's PROVIDER_LIMIT, and each share shrinks with it
        f"{capacity.bottleneck}_pushback": (
            capacity.bottleneck,
            rate * capacity.bottleneck_latency,
            min(gate, PROVIDER_LIMIT),
        ),
    }
    fit = {
        key: {"need": round(need, 2), "share": budget.tenants.share_limit(VICTIM, name, slots), "of": slots}
        for key, (name, need, slots) in places.items()
    }
    return {**fit, "headroom": round(min(f["share"] / f["need"] for f in fit.values()), 2)}


# -- the scenarios ---------------------------------------------------------------------------------


def _stream(rate: float, seconds: float, tenant: str) -> dict[str, Any]:
    return {
        "executor": "constant",
        "rate": round(rate, 2),
        "duration": seconds,
        "max_in_flight": 2000,
        "requests": {"deal_brain": 1},
        "tenants": {tenant: 1},
    }


def _file(file: LoadTestFile, scenarios: dict[str, Any]) -> LoadTestFile:
    template = file.requests["deal_brain"].model_dump(exclude_none=True)
    # a new question each time: neither the answer cache nor the search cache may answer it
    template["body"] = {**template["body"], "question": f"{template['body']['question']} ({{request}})"}
    return parse_scenarios(
        {
            "tenants": {VICTIM: 1},
            "validity": file.validity.model_dump(),
            "requests": {"deal_brain": template},
            "thresholds": {"deal_brain": file.thresholds["deal_brain"].model_dump(exclude_none=True)},
            "scenarios": scenarios,
        }
    )


#: the phases after ``alone``, in order, and what A does in each (A's process runs them)
PHASES = ("flood", "pushback", "tokens")


def victim_spec(file: LoadTestFile, capacity: float, seconds: Mapping[str, float]) -> LoadTestFile:
    """B through the gateway in every phase: alone, then beside each of A's."""
    names = ("alone", *PHASES)
    return _file(
        file,
        {
            **{f"victim_{name}": _stream(VICTIM_RATE * capacity, seconds[name], VICTIM) for name in names},
            "tenants": {"phases": [{"name": name, "run": [f"victim_{name}"]} for name in names]},
        },
    )


async def flood(
    url: str, headers: Mapping[str, str], *, rate: float, seconds: float, label: str, body: Mapping[str, Any]
) -> dict[str, Any]:
    """``rate`` dealBrain requests/s for ``seconds`` at ``url``, open loop, on the lean HTTP/1.1 client
    (bench/_load.py: a flood of mostly refused requests costs the generator a fraction of what httpx
    would, on the cores the services use). Counts the answers by status; how late sends started."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    client = Http1Client(host, port)
    await client.warm(50)
    counts: Counter[str] = Counter()
    late: list[float] = []
    fixed = {**headers, "content-type": "application/json"}

    async def send(i: int, scheduled: float) -> None:
        late.append(trio.current_time() - scheduled)
        question = f"{body['question']} ({label}-{i})"  # a new question each time: no cache answers it
        payload = json.dumps({**body, "question": question}).encode()
        request = encode_request("POST", PATH, host=f"{host}:{port}", headers=fixed, body=payload)
        with trio.move_on_after(30) as scope:
            try:
                counts[str((await client.send(request)).status)] += 1
            except (OSError, ConnectionError, trio.BrokenResourceError):
                counts["error"] += 1
        if scope.cancelled_caught:
            counts["timeout"] += 1

    began = trio.current_time()
    await open_loop(send, rate=rate, count=int(rate * seconds))
    await client.aclose()
    return {
        "offered": int(rate * seconds),
        "statuses": dict(counts),
        "seconds": round(trio.current_time() - began, 3),
        "late_p99_ms": round(percentile(late, 99) * 1000, 1) if late else None,
    }


async def run_flooder(config: Mapping[str, Any]) -> dict[str, Any]:
    """Tenant A's side, in a process of its own (so its load never delays B's requests in the
    generator), from ``start_at`` (wall clock): the flood straight at the online service through the
    flood and pushback phases, then the flood through the gateway, its tokens' use polled."""
    body = load_scenarios(SCENARIOS).requests["deal_brain"].body
    rate, seconds = FLOOD_RATE * config["capacity"], config["seconds"]
    await trio.sleep(max(0.0, config["start_at"] - time.time()))
    out: dict[str, Any] = {"polls": []}
    straight = seconds["flood"] + seconds["pushback"]
    out["direct"] = await flood(
        config["online"],
        {"x-floodgate-tenant": FLOODER},
        rate=rate,
        seconds=straight,
        label="flood",
        body=body,
    )
    await trio.sleep(max(0.0, config["start_at"] + straight - time.time()))

    async def through_gateway() -> None:
        out["gateway"] = await flood(
            config["gateway"],
            {"x-api-key": config["key"]},
            rate=rate,
            seconds=seconds["tokens"],
            label="burn",
            body=body,
        )

    async with trio.open_nursery() as nursery:
        nursery.start_soon(through_gateway)
        nursery.start_soon(poll_usage, config["gateway"], config["key"], seconds["tokens"], out["polls"])
    return out


# -- the figures -----------------------------------------------------------------------------------


def victim_phase(summary: Mapping[str, Any], stream: str) -> dict[str, Any]:
    [phase] = [p for p in summary["phases"] if p["stream"] == stream]
    stats = phase["endpoints"]["deal_brain"]
    return {
        **stats,
        "duration_s": phase["duration_s"],
        "goodput_per_s": stats["goodput"] / phase["duration_s"],
    }


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else round(a / b, 3)


def verdict(target: Target, value: float | None) -> str:
    """``met`` or ``missed`` by ``target``; ``missing`` when the run gave no figure (one run, no
    rounds: `_rounds.judge` would need several)."""
    if value is None or math.isnan(value):
        return "missing"
    return "met" if target.holds(value) else "missed"


def llm_429_rate(summary: Mapping[str, Any], window: tuple[float, float]) -> dict[str, Any]:
    """The online service's LLM attempts in ``window`` (seconds of the run): all, and answered 429."""
    counts: dict[str, dict[str, list[tuple[float, float]]]] = {}
    for s in summary["series"]:
        labels = s.get("labels", {})
        if s["name"] == "floodgate_attempts_total" and labels.get("dependency") == "llm":
            by_outcome = counts.setdefault(str(s.get("instance")), {})
            by_outcome.setdefault(labels.get("outcome", ""), []).append((float(s["t"]), float(s["value"])))

    def increase(points: list[tuple[float, float]]) -> float:
        inside = sorted(p for p in points if window[0] <= p[0] <= window[1])
        return inside[-1][1] - inside[0][1] if len(inside) > 1 else 0.0

    total = refused = 0.0
    for by_outcome in counts.values():
        for outcome, points in by_outcome.items():
            n = increase(points)
            total += n
            refused += n if outcome == "429" else 0.0
    return {"attempts": total, "refused_429": refused, "rate": round(refused / total, 4) if total else None}


async def poll_usage(gateway: str, key: str, seconds: float, into: list[dict[str, Any]]) -> None:
    """``GET /v1/usage`` as the tenant of ``key`` every second for ``seconds``: the token window's use."""
    async with httpx.AsyncClient(base_url=gateway, timeout=5.0) as client:
        end = anyio.current_time() + seconds
        while anyio.current_time() < end:
            try:
                response = await client.get("/v1/usage", headers={"x-api-key": key})
                if response.status_code == 200:
                    window = response.json()["windows"].get("tokens_per_minute")
                    if window is not None:
                        into.append({"t": time.time(), **window})
            except httpx.HTTPError:
                pass
            await anyio.sleep(1.0)


def token_overshoot(polls: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Per token window (told apart by when it resets), the most it was seen used; the worst complete
    window's use over its limit, minus 1 (0 within). A window counts as complete when polls saw its
    first and its last ten seconds."""
    windows: dict[int, dict[str, Any]] = {}
    for poll in polls:
        resets_at = round(poll["t"] + poll["resets_in_seconds"])
        w = windows.setdefault(
            resets_at, {"used": 0, "limit": poll["limit"], "first": poll["t"], "last": poll["t"]}
        )
        w["used"] = max(w["used"], poll["used"])
        w["first"], w["last"] = min(w["first"], poll["t"]), max(w["last"], poll["t"])
    complete = [w for end, w in windows.items() if w["first"] <= end - 50 and w["last"] >= end - 10]
    worst = max((w["used"] / w["limit"] for w in complete), default=None)
    return {
        "windows": [{"resets_at": end, **w} for end, w in sorted(windows.items())],
        "complete": len(complete),
        "overshoot": None if worst is None else round(max(0.0, worst - 1.0), 4),
    }


# -- main ------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--alone", type=float, default=45.0, help="seconds of B alone (default 45)")
    parser.add_argument(
        "--flood", type=float, default=90.0, help="seconds of A's flood straight at the service (default 90)"
    )
    parser.add_argument(
        "--pushback", type=float, default=60.0, help="seconds of the LLM provider at 12 at once (default 60)"
    )
    parser.add_argument(
        "--tokens",
        type=float,
        default=135.0,
        help="seconds of A through the gateway (default 135: two token windows)",
    )
    parser.add_argument("--out", type=Path, default=None, help="default: .data/loadtest/bench-tenants-STAMP")
    parser.add_argument("--flooder", type=str, help=argparse.SUPPRESS)  # the child process of tenant A
    args = parser.parse_args(argv)
    if args.flooder:
        # A real flood comes from other machines: on this one, A's generator yields the cores to the
        # services and to B's measurement (its lateness is reported, so a flood that fell short shows)
        os.nice(10)
        config = json.loads(args.flooder)
        result = trio.run(run_flooder, config)
        Path(config["out"]).write_text(json.dumps(result))
        return 0
    began, busy0 = time.monotonic(), machine_busy()
    load_at_start = round(os.getloadavg()[0], 2)  # others' work too: a figure from a busy machine is noisy
    out = args.out or ROOT / ".data" / "loadtest" / time.strftime(
        "bench-tenants-%Y%m%d-%H%M%S", time.gmtime()
    )
    out.mkdir(parents=True, exist_ok=True)
    base = Path(tempfile.mkdtemp(prefix="bench-tenants-"))
    budget = bench_budget(base / "budget.toml")
    endpoint = endpoint_capacity(budget, "deal_brain")
    capacity = endpoint.rps
    fit = victim_fit(budget, endpoint)
    print(f"bench-tenants: B's share against its load (requests in flight): {fit}", flush=True)
    if fit["headroom"] < 1.0:
        print("bench-tenants: B's own share cannot hold its load: this would measure the share, not A")
        return 2
    keys_file = base / "api_keys.yaml"
    keys = write_keys(keys_file, {t: f"fg_bench_{t.replace('-', '_')}_n0isy" for t in (VICTIM, FLOODER)})
    file = load_scenarios(SCENARIOS)
    seconds = {"alone": args.alone, "flood": args.flood, "pushback": args.pushback, "tokens": args.tokens}
    victim = victim_spec(file, capacity, seconds)
    # one online process, so membership off: nothing to divide (the module docstring says why)
    cluster = Cluster(
        base,
        keys_file,
        behaviour=BEHAVIOUR,
        FLOODGATE_BUDGET=str(base / "budget.toml"),
        FLOODGATE_MEMBERSHIP="0",
    )
    print(
        f"bench-tenants: dealBrain capacity by the budget {capacity:g}/s; B at {VICTIM_RATE:g}x, A at "
        f"{FLOOD_RATE:g}x; phases {seconds}; starting the cluster ({base})",
        flush=True,
    )
    flooder_out = base / "flooder.json"
    child: list[subprocess.Popen] = []

    def on_phase(name: str, length: float) -> None:
        print(f"  phase {name}: {length:g}s", flush=True)
        if name == "pushback":  # one short local call: the generator's loop waits for it
            simulator = cluster.metrics_urls("simulator")[0]
            patch = {"chat": {"rate_limit": {"max_concurrent": PROVIDER_LIMIT}}}
            httpx.put(
                simulator.removesuffix("/metrics") + "/admin/behaviour", json=patch, timeout=5
            ).raise_for_status()
        if name != "alone":
            return
        online = cluster.metrics_urls("online")[0]
        config = {
            "start_at": time.time() + args.alone,
            "seconds": seconds,
            "capacity": capacity,
            "online": online.removesuffix("/metrics"),
            "gateway": cluster.gateway,
            "key": keys[FLOODER],
            "out": str(flooder_out),
        }
        child.append(subprocess.Popen([sys.executable, __file__, "--flooder", json.dumps(config)], cwd=ROOT))

    try:
        cluster.start()
        summary = anyio.run(
            lambda: run_scenario(
                victim,
                "tenants",
                target=cluster.gateway,
                keys=keys,
                scraper=Scraper(targets_from_state(cluster.state)),
                on_phase=on_phase,
            ),
            backend="trio",
        )
        if child:
            child[0].wait(timeout=120)
    finally:
        for proc in child:
            if proc.poll() is None:
                proc.kill()
        cluster.stop()
    busy1 = machine_busy()
    flooded = json.loads(flooder_out.read_text())
    direct, burned, polls = flooded["direct"], flooded["gateway"], flooded["polls"]
    write_summary(summary, out)
    report = write_report(summary, out)
    (out / "flooder.json").write_text(json.dumps(flooded, indent=1))  # A's side and its usage polls
    print(render_summary({**summary, "series": []}))

    alone, flood = victim_phase(summary, "victim_alone"), victim_phase(summary, "victim_flood")
    [pushback] = [p for p in summary["phases"] if p["stream"] == "victim_pushback"]
    start = float(pushback["start_s"])
    llm = llm_429_rate(summary, (start + ADAPTATION_S, start + float(pushback["duration_s"])))
    tokens = token_overshoot(polls)
    goodput_ratio = _ratio(flood["goodput_per_s"], alone["goodput_per_s"])
    p99_ratio = _ratio(flood["p99_ms"], alone["p99_ms"])
    print(
        f"victim B: alone {alone['goodput_per_s']:.2f}/s good, p99 {alone['p99_ms']} ms; in the flood "
        f"{flood['goodput_per_s']:.2f}/s, p99 {flood['p99_ms']} ms (rejected {flood['rejected']}, errors "
        f"{flood['errors']}, degraded {flood['degraded']})"
    )
    for side, name in ((direct, "straight at the service"), (burned, "through the gateway")):
        print(
            f"flooder A {name}: {side['offered']} offered in {side['seconds']:g}s (sends late by "
            f"{side['late_p99_ms']} ms at p99), answers by status {side['statuses']}"
        )
    print(
        "A's token windows: "
        + ", ".join(f"{w['used']:g}/{w['limit']:g}" for w in tokens["windows"])
        + f" ({tokens['complete']} complete); LLM attempts {llm['attempts']:g}, 429 {llm['refused_429']:g}"
    )
    elapsed = time.monotonic() - began
    machine = busy_cores(busy0, busy1)
    print(
        f"run time {elapsed / 60:.1f} min; machine busy {machine:.2f} of {os.cpu_count()} cores on average (everyone's)"
    )

    figures = {
        "victim_goodput_ratio": goodput_ratio,
        "victim_p99_ratio": p99_ratio,
        "token_budget_overshoot": tokens["overshoot"],
        "provider_429_rate_adaptive": llm["rate"],
    }
    verdicts = {target.key: verdict(target, figures[target.key]) for target in TARGETS}
    print(
        json.dumps(
            {
                **figures,
                "verdicts": verdicts,
                "valid": summary["valid"],  # the victim's run (the flood's own lateness is not measured)
                "flood_late_p99_ms": max(direct["late_p99_ms"] or 0, burned["late_p99_ms"] or 0),
                "report": str(report),
                "run_minutes": round(elapsed / 60, 1),
                "victim_share_headroom": fit["headroom"],
                "load_avg_at_start": load_at_start,
                "machine_busy_cores": round(machine, 2),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

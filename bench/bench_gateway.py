"""Benchmark: latency through Envoy vs direct, and rate-limit decisions/s vs grpcio's server, in rounds.

Two measurements, one run, nothing needs to be running (everything starts on free loopback ports):

1. **Added latency.** A trivial upstream (harness/upstream.py: echoes, no work, so only the
   gateway's cost shows) is called directly and through Envoy — the committed gateway/envoy.yaml
   with API-key auth, the local token bucket and the global rate limit (a real ``ShouldRateLimit``
   round trip to services/ratelimit) all on — through a second such Envoy whose rate-limit service
   uses the ``h2`` library's framing (``RATELIMIT_GRPC_SERVER=h2``, the candidate), and, to show
   where the cost is, through a third Envoy without the global limit. An **open-loop** generator
   sends at a fixed moderate rate, round-robin over the four paths so all see the same machine;
   latency is measured from the scheduled send time. Tenants rotate so the limits never reject
   (every request pays the full decision cost, nothing is short-cut by a 429). Added latency =
   gateway percentile minus direct percentile.
2. **Rate-limit decisions per second.** ``ShouldRateLimit`` calls as fast as the service answers
   them (one descriptor per call, as Envoy sends for a route; 4096 tenants rotate, so no counter
   reaches its limit and every call is a full decision), for a few seconds, with the in-memory
   backend (and Redis when one answers on 127.0.0.1:6379, for information). The client is bench/_h2load.py, pre-encoded HTTP/2 frames
   in a separate process: grpcio's Python client costs about as much CPU per call as the server,
   and on 2 cores it would measure itself; Envoy, the real client, is C++.

Every measurement runs ``--rounds`` times, with the load average after each round: the machine is
shared, and one round can land on someone else's burst. Each latency round gives one figure of A and
B (below), direct and gateway measured side by side in it. The throughput rounds alternate with
rounds against the same service with the ``h2`` library's framing (``RATELIMIT_GRPC_SERVER=h2``, the
candidate) and against grpcio's threaded server (``RATELIMIT_GRPC_SERVER=grpcio``, the previous
design), all with the same limiter and the same client; grpcio is the baseline, and the per-round
ratio is printed. The candidate is judged on the same targets, reported apart (``candidate_h2``).
Each target is judged on its median and spread over the rounds (bench/_rounds.py: met, missed, or
straddles when the spread crosses the target).

Prints per-round lines, a table of medians and a line per target, then a last line of JSON::

    {"gateway_added_p50_ms": A, "gateway_added_p99_ms": B, "rls_decisions_per_s": R,
     "..._spread": [q1, q3], "..._range": [min, max], "verdicts": {...}, "rounds": N, ...}

A, B: the gateway's p50 and p99 minus direct p50 and p99 of a round, in ms; R: decisions/s of a round;
``candidate_h2`` holds A and R of the h2-framed service the same way.
Targets (on the medians and spreads): A < 1 ms, B < 5 ms, R >= 5000 on a 2-core machine.
Run: ``make bench-gateway`` (or ``.venv/bin/python bench/bench_gateway.py [--rate N] [--duration S]``).
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import _load
import trio
from _rounds import Target, alternate, json_fields, judge, percentile

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness.envoy import start_gateway, without_global_limit  # noqa: E402
from harness.ready import redis_answers  # noqa: E402
from harness.services import start_ratelimit, start_upstream  # noqa: E402

ROUTE = "/v1/omnirag/jobs/bench"  # GET, omnirag_read: 50/s per tenant, local bucket 500/s
RLS_PATH = "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit"


async def open_loop(
    targets: dict[str, int], keys: list[str], rate: float, duration: float, warmup: float
) -> dict[str, list[float]]:
    """Send at ``rate`` requests/s in total, round-robin over ``targets`` (name -> port), so every
    target sees the same machine; latencies in ms per target, measured from the scheduled send time
    (open loop, bench/_load.py: a slow answer never delays the next request)."""
    names = list(targets)
    latencies: dict[str, list[float]] = {name: [] for name in names}
    errors: dict[str, int] = dict.fromkeys(names, 0)
    first_error: dict[str, object] = {}
    clients = {name: _load.Http1Client("127.0.0.1", port) for name, port in targets.items()}
    requests = [
        _load.encode_request("GET", ROUTE, host="127.0.0.1", headers={"x-api-key": key}) for key in keys
    ]

    async def one(i: int, scheduled: float) -> None:
        target = names[i % len(names)]
        try:
            status = (await clients[target].send(requests[(i // len(names)) % len(requests)])).status
        except OSError as exc:
            status = f"{type(exc).__name__}: {exc}"
        ok = status == 200
        if not ok:
            first_error.setdefault(target, status)
        elapsed_ms = (trio.current_time() - scheduled) * 1000
        if i < warmup * rate:
            return
        if ok:
            latencies[target].append(elapsed_ms)
        else:
            errors[target] += 1

    await _load.open_loop(one, rate=rate, count=int((duration + warmup) * rate))
    for client in clients.values():
        await client.aclose()
    for target, count in errors.items():
        if count:
            print(
                f"warning: {count} {target} requests failed (first: {first_error[target]})", file=sys.stderr
            )
    return latencies


#: distinct tenants the RLS client rotates over: enough that, at the rates the service reaches, each
#: stays far under deal_brain's per-tenant limit, so every call is a full "OK" decision (none
#: short-cut by being over)
_RLS_TENANTS = 4096


def _rls_client(
    port: int, seconds: float, in_flight: int, offset: int, result: multiprocessing.Queue
) -> None:
    sys.path.insert(0, str(ROOT / "bench"))
    from _h2load import run
    from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2 as rl
    from envoy.service.ratelimit.v3 import rls_pb2

    messages = [
        rls_pb2.RateLimitRequest(
            domain="floodgate",
            descriptors=[
                rl.RateLimitDescriptor(
                    entries=[
                        rl.RateLimitDescriptor.Entry(key="tenant", value=f"bench-{offset}-{i}"),
                        rl.RateLimitDescriptor.Entry(key="route", value="deal_brain"),
                    ]
                )
            ],
        ).SerializeToString()
        for i in range(_RLS_TENANTS)
    ]
    started = time.monotonic()
    ok, failed = run("127.0.0.1", port, RLS_PATH, messages, seconds=seconds, in_flight=in_flight)
    result.put((ok, failed, time.monotonic() - started))


def rls_throughput(port: int, *, seconds: float, clients: int, in_flight: int) -> tuple[float, int]:
    """Decisions per second over ``clients`` connections (separate processes), and failed calls."""
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [
        ctx.Process(target=_rls_client, args=(port, seconds, in_flight, i, queue)) for i in range(clients)
    ]
    for p in procs:
        p.start()
    try:
        results = [queue.get(timeout=seconds + 60) for _ in procs]
    finally:
        for p in procs:
            p.join(10)
            if p.is_alive():
                p.kill()
    ok = sum(r[0] for r in results)
    return ok / max(r[2] for r in results), sum(r[1] for r in results)


def median(values: list[float]) -> float:
    return statistics.median(values)


ADDED_P50 = Target("gateway_added_p50_ms", "<", 1, unit="ms", digits=3)
ADDED_P99 = Target("gateway_added_p99_ms", "<", 5, unit="ms", digits=3)
DECISIONS = Target("rls_decisions_per_s", ">=", 5000, digits=0)
#: the same targets for the candidate: the rate-limit service on the h2 library's framing
H2_ADDED_P50 = Target("gateway_h2_added_p50_ms", "<", 1, unit="ms", digits=3)
H2_ADDED_P99 = Target("gateway_h2_added_p99_ms", "<", 5, unit="ms", digits=3)
H2_DECISIONS = Target("rls_h2_decisions_per_s", ">=", 5000, digits=0)
#: the latency paths, round-robin in this order
PATHS = ("direct", "gateway", "gateway-h2", "gw-no-rls")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--rate", type=float, default=400.0, help="requests/s in total, over the four paths (100/s each)"
    )
    parser.add_argument("--duration", type=float, default=6.0, help="measured seconds of each latency round")
    parser.add_argument(
        "--rounds", type=int, default=5, help="rounds of each measurement; median and spread reported"
    )
    parser.add_argument("--rls-seconds", type=float, default=3.0, help="seconds of each throughput round")
    parser.add_argument(
        "--rls-clients", type=int, default=1, help="client connections (processes) for the RLS run"
    )
    parser.add_argument("--rls-in-flight", type=int, default=64, help="calls in flight per connection")
    args = parser.parse_args()

    # enough tenants that none reaches its 50/s limit on the measured route at this rate
    tenants = max(4, math.ceil(args.rate / len(PATHS) / 25))
    keys = {f"bench-key-{i:04d}-xxxxxxxx": f"bench{i}" for i in range(tenants)}
    loads = [os.getloadavg()[0]]

    def throughput_round(port: int) -> Callable[[int], float]:
        def one(_: int) -> float:
            decisions, failed = rls_throughput(
                port, seconds=args.rls_seconds, clients=args.rls_clients, in_flight=args.rls_in_flight
            )
            if failed:
                print(f"warning: {failed} rate-limit calls failed", file=sys.stderr)
            return decisions

        return one

    with tempfile.TemporaryDirectory(prefix="bench-gateway-") as tmp:
        log_dir = Path(tmp)
        with (
            start_ratelimit(log_dir) as rls,
            # the previous design, grpcio's threaded server: the baseline (same limiter, same client)
            start_ratelimit(
                log_dir, name="ratelimit-grpcio", extra_env={"RATELIMIT_GRPC_SERVER": "grpcio"}
            ) as base,
            # the candidate: the same single-threaded loop on the h2 library's framing
            start_ratelimit(
                log_dir, name="ratelimit-h2", extra_env={"RATELIMIT_GRPC_SERVER": "h2"}
            ) as rls_h2,
            start_upstream(log_dir, name="ingest") as upstream,
            start_gateway(
                log_dir,
                keys=keys,
                endpoints={"ingest_api": [upstream.ports["http"]], "ratelimit": [rls.ports["grpc"]]},
            ) as gw,
            start_gateway(
                log_dir,
                name="envoy-h2",
                keys=keys,
                endpoints={"ingest_api": [upstream.ports["http"]], "ratelimit": [rls_h2.ports["grpc"]]},
            ) as gw_h2,
            start_gateway(
                log_dir,
                name="envoy-no-global-limit",
                keys=keys,
                endpoints={"ingest_api": [upstream.ports["http"]]},
                mutate=without_global_limit,
            ) as gw_local,
        ):
            targets = {
                "direct": upstream.ports["http"],
                "gateway": int(gw.url.rsplit(":", 1)[1]),
                "gateway-h2": int(gw_h2.url.rsplit(":", 1)[1]),
                "gw-no-rls": int(gw_local.url.rsplit(":", 1)[1]),
            }
            assert tuple(targets) == PATHS
            print(
                f"latency: {args.rate:g} req/s open loop, {args.rounds} rounds of {args.duration:g} s (+1 s "
                f"warm-up), round-robin over direct / gateway (auth + local bucket + global limit) / "
                f"the same with the h2-framed rate-limit service / gateway without the global limit, "
                f"{tenants} tenants; load average {loads[0]:.2f}",
                flush=True,
            )
            rounds: list[dict[str, tuple[float, float, float]]] = []
            for r in range(args.rounds):
                lat = trio.run(open_loop, targets, list(keys), args.rate, args.duration, 1.0)
                stats = {name: tuple(percentile(v, q) for q in (50, 90, 99)) for name, v in lat.items()}
                rounds.append(stats)
                loads.append(os.getloadavg()[0])
                added = [stats["gateway"][k] - stats["direct"][k] for k in range(3)]
                added_h2 = [stats["gateway-h2"][k] - stats["direct"][k] for k in range(3)]
                print(
                    f"  round {r + 1}: added p50 {added[0]:.3f} ms, p99 {added[2]:.3f} ms; "
                    f"with h2 framing p50 {added_h2[0]:.3f} ms, p99 {added_h2[2]:.3f} ms "
                    f"(n={min(len(v) for v in lat.values())} per path; load average {loads[-1]:.2f})",
                    flush=True,
                )
            allowed = gw.stat("cluster.ingest_api.ratelimit.ok")
            failed = gw.stat("cluster.ingest_api.ratelimit.error")
            over = gw.stat("cluster.ingest_api.ratelimit.over_limit")
            print(f"  rate-limit decisions through Envoy: ok={allowed} over_limit={over} errors={failed}")
            allowed = gw_h2.stat("cluster.ingest_api.ratelimit.ok")
            failed = gw_h2.stat("cluster.ingest_api.ratelimit.error")
            over = gw_h2.stat("cluster.ingest_api.ratelimit.over_limit")
            print(f"  ... with h2 framing: ok={allowed} over_limit={over} errors={failed}")

            print(
                f"rls throughput: {args.rls_clients} connection(s) x {args.rls_in_flight} calls in flight, "
                f"{args.rounds} rounds of {args.rls_seconds:g} s, memory backend, alternating with the "
                "candidate (RATELIMIT_GRPC_SERVER=h2) and the baseline: grpcio's threaded server "
                "(RATELIMIT_GRPC_SERVER=grpcio)",
                flush=True,
            )
            rls_rounds = alternate(
                args.rounds,
                {
                    "rls": throughput_round(rls.ports["grpc"]),
                    "h2": throughput_round(rls_h2.ports["grpc"]),
                    "grpcio": throughput_round(base.ports["grpc"]),
                },
            )
            loads.append(os.getloadavg()[0])
            for name in ("rls", "h2", "grpcio"):
                print(f"  {name}: {', '.join(f'{r:,.0f}' for r in rls_rounds[name])} decisions/s", flush=True)
            baseline_ratios = [r / b for r, b in zip(rls_rounds["rls"], rls_rounds["grpcio"], strict=True)]
            print(f"  per-round ratio: {', '.join(f'{x:.2f}' for x in baseline_ratios)}", flush=True)
            h2_ratios = [h / r for h, r in zip(rls_rounds["h2"], rls_rounds["rls"], strict=True)]
            print(f"  per-round ratio h2 / rls: {', '.join(f'{x:.2f}' for x in h2_ratios)}", flush=True)
        redis_decisions = None
        if redis_answers():
            print("rls throughput, Redis backend (information)", flush=True)
            with start_ratelimit(
                log_dir,
                name="ratelimit-redis",
                redis_url="redis://127.0.0.1:6379/0",
                extra_env={"RATELIMIT_KEY_PREFIX": f"bench-{int(time.time())}:"},
            ) as rls_redis:
                redis_decisions = median(
                    [throughput_round(rls_redis.ports["grpc"])(n) for n in range(args.rounds)]
                )

    names = list(rounds[0])
    stats = {name: tuple(median([r[name][k] for r in rounds]) for k in range(3)) for name in names}
    added_rounds = {
        name: [tuple(r[name][k] - r["direct"][k] for k in range(3)) for r in rounds]
        for name in ("gateway", "gateway-h2", "gw-no-rls")
    }
    print()
    print(f"median of {args.rounds} rounds")
    print(f"{'path':<19}{'p50 ms':>10}{'p90 ms':>10}{'p99 ms':>10}")
    for name in names:
        p50, p90, p99 = stats[name]
        print(f"{name:<19}{p50:>10.3f}{p90:>10.3f}{p99:>10.3f}")
    for name, label in (
        ("gateway", "added"),
        ("gateway-h2", "added, h2 framing"),
        ("gw-no-rls", "added w/o RLS"),
    ):
        d = [median([a[k] for a in added_rounds[name]]) for k in range(3)]
        print(f"{label:<19}{d[0]:>10.3f}{d[1]:>10.3f}{d[2]:>10.3f}")
    results = [
        judge(ADDED_P50, [a[0] for a in added_rounds["gateway"]]),
        judge(ADDED_P99, [a[2] for a in added_rounds["gateway"]]),
        judge(DECISIONS, rls_rounds["rls"]),
    ]
    candidate = [
        judge(H2_ADDED_P50, [a[0] for a in added_rounds["gateway-h2"]]),
        judge(H2_ADDED_P99, [a[2] for a in added_rounds["gateway-h2"]]),
        judge(H2_DECISIONS, rls_rounds["h2"]),
    ]
    decisions, baseline_decisions = median(rls_rounds["rls"]), median(rls_rounds["grpcio"])
    print()
    print(
        f"rate-limit service, memory backend: {decisions:,.0f} decisions/s "
        f"(baseline grpcio server: {baseline_decisions:,.0f}/s; per-round ratio, median "
        f"{median(baseline_ratios):.2f}x)"
    )
    print(
        f"the same on the h2 library's framing (candidate): {median(rls_rounds['h2']):,.0f} decisions/s "
        f"(per-round ratio to our framing, median {median(h2_ratios):.2f}x)"
    )
    if redis_decisions is not None:
        print(f"rate-limit service, Redis backend:  {redis_decisions:,.0f} decisions/s (information)")
    else:
        print("rate-limit service, Redis backend: skipped (no Redis on 127.0.0.1:6379)")
    loads.append(os.getloadavg()[0])
    print(
        f"load average (1 min) during the run: {' -> '.join(f'{x:.2f}' for x in loads)} "
        "(other work on the machine inflates every figure)"
    )
    print()
    for result in results:
        print(result.line())
    print("candidate, the h2 library's framing (RATELIMIT_GRPC_SERVER=h2):")
    for result in candidate:
        print(f"  {result.line()}")
    print(
        json.dumps(
            {
                **json_fields(results),
                "rls_baseline_decisions_per_s": round(baseline_decisions),
                "candidate_h2": json_fields(candidate),
                "rounds": args.rounds,
                "load_average": round(loads[-1], 2),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

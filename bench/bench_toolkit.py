"""Benchmark: a guarded call against the same call unguarded, in alternating rounds, median and spread.

Two comparisons, each interleaved in one run (guarded and unguarded batches alternate, and which goes
first alternates between rounds, so drift in machine load hits both alike):

1. a no-op coroutine, called directly vs through ``Dependency.call`` (gate, rate limit, circuit
   breaker, attempt deadline, classification, metrics) inside a request deadline;
2. a loopback HTTP request to the downstream simulator (``python -m services.simulator``,
   ``GET /v1/models``), sent with a plain ``httpx.AsyncClient`` vs ``Dependency.request``, one by
   one in turn.

Each of ``--rounds`` rounds gives one figure per target: X = guarded minus unguarded per-call time
of the no-op (one batch each way), in microseconds; Y = guarded / unguarded median time of the
round's loopback requests. Targets: X < 30, Y < 1.05, each judged on its median and spread over the rounds
(bench/_rounds.py: met, missed, or straddles when the spread crosses the target).

Prints a table and a line per target, then a last line of JSON:
``{"guarded_overhead_us": X, "loopback_ratio": Y, ..._spread, ..._range, "verdicts": {...}, "rounds": N}``
(X and Y the medians over the rounds).

Run: ``make bench-toolkit`` (or ``.venv/bin/python bench/bench_toolkit.py [--quick] [--rounds N]``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import floodgate
import httpx
import trio
from _rounds import Target, alternating, json_fields, judge, percentile
from floodgate._http import make_http_client  # the same client settings Dependencies.from_budget uses
from prometheus_client import CollectorRegistry

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness.services import start_simulator  # noqa: E402


def bench_policy(budget: floodgate.Budget) -> floodgate.DependencyPolicy:
    """The llm policy of the repo budget, with a rate limit too high to ever make a call wait:
    the token bucket's bookkeeping is measured, not its throttling."""
    llm = budget.dependency("llm")
    assert llm.rate_limit is not None
    return llm.model_copy(
        update={"rate_limit": llm.rate_limit.model_copy(update={"rpm": 1e12, "burst": 10**9})}
    )


def make_dependency(
    budget: floodgate.Budget, registry: CollectorRegistry, client: httpx.AsyncClient | None = None
) -> floodgate.Dependency:
    policy = bench_policy(budget)
    return floodgate.Dependency("bench", policy, capacity=64, rate=1e10, client=client, registry=registry)


async def noop() -> None:
    return None


async def bench_noop(
    dep: floodgate.Dependency, *, rounds: int, batch: int
) -> tuple[list[float], list[float]]:
    """Per-call seconds of each round's batch, unguarded and guarded (which runs first alternates)."""
    plain: list[float] = []
    guarded: list[float] = []
    clock = time.perf_counter
    with floodgate.deadline_after(3600):
        for n in range(rounds):
            for guarded_turn in alternating((False, True), n):
                start = clock()
                if guarded_turn:
                    for _ in range(batch):
                        await dep.call(noop, tenant="bench", idempotent=True)
                    guarded.append((clock() - start) / batch)
                else:
                    for _ in range(batch):
                        await noop()
                    plain.append((clock() - start) / batch)
    return plain, guarded


async def bench_loopback(
    base_url: str, budget: floodgate.Budget, registry: CollectorRegistry, *, rounds: int, batch: int
) -> tuple[list[list[float]], list[list[float]]]:
    """Per-request seconds of every request, unguarded and guarded (same client settings), by round."""
    policy = bench_policy(budget)
    plain_client = make_http_client(policy, base_url=base_url, capacity=64)
    guarded_client = make_http_client(policy, base_url=base_url, capacity=64)
    dep = make_dependency(budget, registry, guarded_client)
    plain: list[list[float]] = []
    guarded: list[list[float]] = []
    clock = time.perf_counter
    async with plain_client, guarded_client:
        for _ in range(20):  # warm up both connections
            (await plain_client.get("/v1/models")).raise_for_status()
            await dep.request("GET", "/v1/models", tenant="bench")
        with floodgate.deadline_after(3600):
            for _ in range(rounds):
                plain.append([])
                guarded.append([])
                for i in range(batch):
                    # Alternate one by one, swapping which goes first, so both see the same conditions.
                    for guarded_turn in alternating((False, True), i):
                        start = clock()
                        if guarded_turn:
                            await dep.request("GET", "/v1/models", tenant="bench")
                            guarded[-1].append(clock() - start)
                        else:
                            response = await plain_client.get(
                                "/v1/models", headers=floodgate.deadline_headers()
                            )
                            plain[-1].append(clock() - start)
                            response.raise_for_status()
    return plain, guarded


def us(seconds: float) -> str:
    return f"{seconds * 1e6:9.2f}"


OVERHEAD = Target("guarded_overhead_us", "<", 30, unit="us", digits=2)
LOOPBACK = Target("loopback_ratio", "<", 1.05, digits=4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer, smaller rounds (a smoke run)")
    parser.add_argument(
        "--rounds", type=int, help="alternating rounds of each comparison (default 21; 5 with --quick)"
    )
    args = parser.parse_args()
    rounds, batch, http_batch = (5, 500, 50) if args.quick else (21, 2000, 100)
    rounds = args.rounds or rounds
    budget = floodgate.load_budget(ROOT / "config" / "budget.toml")

    registry = CollectorRegistry()
    dep = make_dependency(budget, registry)
    plain, guarded = trio.run(lambda: bench_noop(dep, rounds=rounds, batch=batch))
    noop_plain, noop_guarded = statistics.median(plain), statistics.median(guarded)
    overhead = judge(OVERHEAD, ((g - u) * 1e6 for u, g in zip(plain, guarded, strict=True)))

    with tempfile.TemporaryDirectory(prefix="bench-toolkit-") as log_dir:
        simulator = start_simulator(Path(log_dir), env={"SIMULATOR_LOG_LEVEL": "warning"}, within=30)
        try:
            lb_rounds_plain, lb_rounds_guarded = trio.run(
                lambda: bench_loopback(
                    simulator.url, budget, CollectorRegistry(), rounds=rounds, batch=http_batch
                )
            )
        finally:
            simulator.stop(timeout=15)
    loopback = judge(
        LOOPBACK,
        (
            statistics.median(g) / statistics.median(u)
            for u, g in zip(lb_rounds_plain, lb_rounds_guarded, strict=True)
        ),
    )
    lb_plain = [x for r in lb_rounds_plain for x in r]
    lb_guarded = [x for r in lb_rounds_guarded for x in r]
    lb_plain_med, lb_guarded_med = statistics.median(lb_plain), statistics.median(lb_guarded)

    print(f"floodgate toolkit bench (trio {trio.__version__}, python {sys.version.split()[0]})")
    print(f"{'case (all rounds)':<34}{'unguarded us':>14}{'guarded us':>14}{'diff us':>11}{'ratio':>8}")
    print(
        f"{'no-op coroutine (median/call)':<34}{us(noop_plain):>14}{us(noop_guarded):>14}"
        f"{us(noop_guarded - noop_plain):>11}{noop_guarded / noop_plain:8.1f}"
    )
    print(
        f"{'loopback GET /v1/models (p50)':<34}{us(lb_plain_med):>14}{us(lb_guarded_med):>14}"
        f"{us(lb_guarded_med - lb_plain_med):>11}{lb_guarded_med / lb_plain_med:8.3f}"
    )
    p90_plain, p90_guarded = percentile(lb_plain, 90), percentile(lb_guarded, 90)
    print(
        f"{'loopback GET /v1/models (p90)':<34}{us(p90_plain):>14}{us(p90_guarded):>14}"
        f"{us(p90_guarded - p90_plain):>11}{p90_guarded / p90_plain:8.3f}"
    )
    print(
        f"{rounds} alternating rounds; per round, no-op: {batch} calls each way; loopback: {http_batch} "
        f"requests each way, alternating one by one; load average {os.getloadavg()[0]:.2f}"
    )
    print("per round, no-op overhead us: " + ", ".join(f"{x:.1f}" for x in overhead.values))
    print("per round, loopback ratio: " + ", ".join(f"{x:.3f}" for x in loopback.values))
    for result in (overhead, loopback):
        print(result.line())
    print(json.dumps({**json_fields([overhead, loopback]), "rounds": rounds}))


if __name__ == "__main__":
    main()

"""Benchmark: what does a guarded call cost?

Two comparisons, each interleaved in one run (guarded and unguarded batches alternate, so drift
in machine load hits both alike):

1. a no-op coroutine, called directly vs through ``Dependency.call`` (gate, rate limit, circuit
   breaker, attempt deadline, classification, metrics) inside a request deadline;
2. a loopback HTTP request to the downstream simulator (``python -m services.upstreams``,
   ``GET /v1/models``), sent with a plain ``httpx.AsyncClient`` vs ``Dependency.request``.

Prints a table, then a last line of JSON: ``{"guarded_overhead_us": X, "loopback_ratio": Y}``
(X = median guarded minus median unguarded per-call time of the no-op; Y = guarded /
unguarded median time of the loopback request). Targets: X < 30, Y < 1.05.

Run: ``make bench-toolkit`` (or ``.venv/bin/python bench/bench_toolkit.py [--quick]``).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import floodgate
import httpx
import trio
from floodgate._http import make_http_client  # the same client settings Dependencies.from_budget uses
from prometheus_client import CollectorRegistry

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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
    return floodgate.Dependency(
        "bench", policy, capacity=64, rate=1e10, client=client, metrics=floodgate.FloodgateMetrics(registry)
    )


async def noop() -> None:
    return None


async def bench_noop(
    dep: floodgate.Dependency, *, rounds: int, batch: int
) -> tuple[list[float], list[float]]:
    """Per-call seconds of each batch, unguarded and guarded."""
    plain: list[float] = []
    guarded: list[float] = []
    clock = time.perf_counter
    with floodgate.deadline_after(3600):
        for _ in range(rounds):
            start = clock()
            for _ in range(batch):
                await noop()
            plain.append((clock() - start) / batch)
            start = clock()
            for _ in range(batch):
                await dep.call(noop, tenant="bench", idempotent=True)
            guarded.append((clock() - start) / batch)
    return plain, guarded


async def bench_loopback(
    base_url: str, budget: floodgate.Budget, registry: CollectorRegistry, *, rounds: int, batch: int
) -> tuple[list[float], list[float]]:
    """Per-request seconds of every request, unguarded and guarded (same client settings)."""
    policy = bench_policy(budget)
    plain_client = make_http_client(policy, base_url=base_url, capacity=64)
    guarded_client = make_http_client(policy, base_url=base_url, capacity=64)
    dep = make_dependency(budget, registry, guarded_client)
    plain: list[float] = []
    guarded: list[float] = []
    clock = time.perf_counter
    async with plain_client, guarded_client:
        for _ in range(20):  # warm up both connections
            (await plain_client.get("/v1/models")).raise_for_status()
            await dep.request("GET", "/v1/models", tenant="bench")
        with floodgate.deadline_after(3600):
            for i in range(rounds * batch):
                # Alternate one by one, swapping which goes first, so both see the same conditions.
                for guarded_turn in (False, True) if i % 2 == 0 else (True, False):
                    start = clock()
                    if guarded_turn:
                        await dep.request("GET", "/v1/models", tenant="bench")
                        guarded.append(clock() - start)
                    else:
                        response = await plain_client.get("/v1/models", headers=floodgate.deadline_headers())
                        plain.append(clock() - start)
                        response.raise_for_status()
    return plain, guarded


def start_simulator() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {
        **os.environ,
        "UPSTREAMS_PORT": str(port),
        "UPSTREAMS_LOG_LEVEL": "warning",
        "UPSTREAMS_LOG_FORMAT": "json",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.upstreams"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(
                f"simulator exited: {proc.stderr.read().decode()[-2000:] if proc.stderr else ''}"
            )
        try:
            if httpx.get(f"{base_url}/healthz", timeout=0.5).status_code == 200:
                return proc, base_url
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise SystemExit("simulator did not become ready within 30s")


def us(seconds: float) -> str:
    return f"{seconds * 1e6:9.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds (a smoke run)")
    args = parser.parse_args()
    rounds, batch, http_rounds, http_batch = (5, 500, 3, 50) if args.quick else (21, 2000, 10, 100)
    budget = floodgate.load_budget(ROOT / "config" / "budget.toml")

    registry = CollectorRegistry()
    dep = make_dependency(budget, registry)
    plain, guarded = trio.run(lambda: bench_noop(dep, rounds=rounds, batch=batch))
    noop_plain, noop_guarded = statistics.median(plain), statistics.median(guarded)
    overhead = noop_guarded - noop_plain

    proc, base_url = start_simulator()
    try:
        lb_plain, lb_guarded = trio.run(
            lambda: bench_loopback(
                base_url, budget, CollectorRegistry(), rounds=http_rounds, batch=http_batch
            )
        )
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    lb_plain_med, lb_guarded_med = statistics.median(lb_plain), statistics.median(lb_guarded)
    ratio = lb_guarded_med / lb_plain_med

    def p(values: list[float], q: float) -> float:
        return statistics.quantiles(values, n=100)[q - 1] if len(values) > 1 else values[0]

    print(f"floodgate toolkit bench (trio {trio.__version__}, python {sys.version.split()[0]})")
    print(f"{'case':<34}{'unguarded us':>14}{'guarded us':>14}{'diff us':>11}{'ratio':>8}")
    print(
        f"{'no-op coroutine (median/call)':<34}{us(noop_plain):>14}{us(noop_guarded):>14}"
        f"{us(overhead):>11}{noop_guarded / noop_plain:8.1f}"
    )
    print(
        f"{'loopback GET /v1/models (p50)':<34}{us(lb_plain_med):>14}{us(lb_guarded_med):>14}"
        f"{us(lb_guarded_med - lb_plain_med):>11}{ratio:8.3f}"
    )
    print(
        f"{'loopback GET /v1/models (p90)':<34}{us(p(lb_plain, 90)):>14}{us(p(lb_guarded, 90)):>14}"
        f"{us(p(lb_guarded, 90) - p(lb_plain, 90)):>11}{p(lb_guarded, 90) / p(lb_plain, 90):8.3f}"
    )
    print(
        f"no-op: {rounds} rounds x {batch} calls each way; loopback: {len(lb_plain)} requests each way, "
        f"alternating one by one"
    )
    print(
        f"targets: guarded_overhead_us < 30 ({'met' if overhead * 1e6 < 30 else 'MISSED'}), "
        f"loopback_ratio < 1.05 ({'met' if ratio < 1.05 else 'MISSED'})"
    )
    print(json.dumps({"guarded_overhead_us": round(overhead * 1e6, 2), "loopback_ratio": round(ratio, 4)}))


if __name__ == "__main__":
    main()

"""Benchmark: what does a retry loop cost per call? floodgate's own vs stamina vs tenacity.

Why it exists: floodgate writes its retry loop itself (``Dependency.call``, `_dependency.py`)
instead of using stamina or tenacity (docs/decisions/0003-retry-loop.md). This measures the
price of each per call, on trio, in one run:

- **success**: the wrapped coroutine succeeds at once (the common case: what the loop costs
  when it does nothing);
- **fail twice**: it raises a retryable error twice, then succeeds (three attempts, backoff
  zeroed: floodgate gets an ``rng`` that returns 0, stamina and tenacity get zero waits; every
  loop still yields to the scheduler once per retry, as its sleep does).

Each case is run four ways: **bare** (a direct call; for *fail twice* a three-line hand loop:
the floor of raising and catching twice), **floodgate** (``Dependency.call`` as the services
use it: gate, breaker, request deadline, attempt timeout scope, retry budget, classification;
so more than a retry loop), **stamina** (``@stamina.retry``) and **tenacity** (``@tenacity.retry``,
stop after 3 attempts or 10 s, as stamina configures it). Instrumentation is off on every side:
floodgate without metrics, stamina without retry hooks, structlog dropping events below WARNING.

Rounds alternate the order of the four (forward, then backward), so drift in the machine's load
hits all alike. Per case it prints the median per-call time over the rounds with its spread
(min-max and interquartile range) and the overhead over bare, then one JSON line.

Run: ``make bench-retry`` (or ``.venv/bin/python bench/bench_retry.py [--quick]``); needs the
``bench`` extra: ``.venv/bin/pip install -e '.[bench]'``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable
from importlib import metadata

import floodgate
import structlog
import trio
import trio.lowlevel
from _rounds import Spread, alternating

try:
    import stamina
    import tenacity
except ImportError:  # pragma: no cover - a message instead of a traceback
    sys.exit("bench_retry needs stamina and tenacity: .venv/bin/pip install -e '.[bench]'")

ATTEMPTS = 3
CASES = ("bare", "floodgate", "stamina", "tenacity")


class Unavailable(floodgate.DependencyError):
    """The retryable failure every loop sees: an HTTP 503 as floodgate's classification reads it."""

    def __init__(self) -> None:
        super().__init__("unavailable", status=503)


class Downstream:
    """A no-op downstream that fails the first ``failures`` attempts of every call.

    Every loop makes exactly ``failures + 1`` attempts per call, so a counter that cycles does
    not need resetting between calls (and costs every loop the same).
    """

    def __init__(self, failures: int):
        self.cycle = failures + 1
        self.attempts = 0

    async def __call__(self) -> int:
        self.attempts += 1
        if self.attempts % self.cycle:
            raise Unavailable()
        return self.attempts


def make_dependency() -> floodgate.Dependency:
    """A dependency whose limits never refuse: the loop's bookkeeping is measured, not its
    refusals (a breaker that cannot open, a retry budget that cannot run out, a gate never full)."""
    policy = floodgate.DependencyPolicy(
        global_concurrency=64,
        shares={"bench": 1.0},
        retry=floodgate.RetryPolicy(max_attempts=ATTEMPTS, max_total=10.0),
        retry_budget=floodgate.RetryBudgetPolicy(ratio=1.0, min_retries=10**9),
        breaker=floodgate.BreakerPolicy(min_calls=10**9),
    )
    return floodgate.Dependency("bench", policy, capacity=64, rng=lambda: 0.0)


def make_callers(downstream: Downstream) -> dict[str, Callable[[], Awaitable[int]]]:
    dep = make_dependency()

    async def bare() -> int:
        for attempt in range(1, ATTEMPTS + 1):
            try:
                return await downstream()
            except Unavailable:
                if attempt == ATTEMPTS:
                    raise
                await trio.lowlevel.checkpoint()  # what a zero sleep does
        raise AssertionError("unreachable")

    async def via_floodgate() -> int:
        return await dep.call(downstream, tenant="bench", idempotent=True)

    @stamina.retry(
        on=Unavailable, attempts=ATTEMPTS, timeout=10.0, wait_initial=0.0, wait_max=0.0, wait_jitter=0.0
    )
    async def via_stamina() -> int:
        return await downstream()

    @tenacity.retry(
        retry=tenacity.retry_if_exception_type(Unavailable),
        stop=tenacity.stop_after_attempt(ATTEMPTS) | tenacity.stop_after_delay(10.0),
        wait=tenacity.wait_none(),
        reraise=True,
    )
    async def via_tenacity() -> int:
        return await downstream()

    return {"bare": bare, "floodgate": via_floodgate, "stamina": via_stamina, "tenacity": via_tenacity}


async def run_rounds(failures: int, *, rounds: int, batch: int) -> dict[str, list[float]]:
    """Per-call seconds of each round, per case; the order of the cases alternates by round."""
    downstream = Downstream(failures)
    callers = make_callers(downstream)
    per_call: dict[str, list[float]] = {case: [] for case in CASES}
    clock = time.perf_counter
    with floodgate.deadline_after(3600):
        for case in CASES:  # warm-up: first-call imports and caches out of the timed rounds
            for _ in range(200):
                await callers[case]()
        for index in range(rounds):
            for case in alternating(CASES, index):
                call = callers[case]
                downstream.attempts = 0
                start = clock()
                for _ in range(batch):
                    await call()
                elapsed = clock() - start
                assert downstream.attempts == batch * (failures + 1), (case, downstream.attempts)
                per_call[case].append(elapsed / batch)
    return per_call


def in_us(values: list[float]) -> Spread:
    """Median, interquartile range and range of per-call seconds, in microseconds."""
    return Spread.of(v * 1e6 for v in values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer, shorter rounds (a smoke run)")
    parser.add_argument("--rounds", type=int, default=None, help="alternating rounds per scenario")
    args = parser.parse_args()
    rounds, batch = (4, 200) if args.quick else (16, 2000)
    rounds = args.rounds or rounds

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    stamina.instrumentation.set_on_retry_hooks([])

    load_start = os.getloadavg()[0]
    results: dict[str, dict[str, Spread]] = {}
    for scenario, failures in (("success", 0), ("fail_twice", 2)):
        per_call = trio.run(lambda f=failures: run_rounds(f, rounds=rounds, batch=batch))
        results[scenario] = {case: in_us(values) for case, values in per_call.items()}
    load_end = os.getloadavg()[0]

    versions = ", ".join(
        f"{name} {metadata.version(name)}" for name in ("floodgate", "stamina", "tenacity", "trio")
    )
    print(f"retry loop bench ({versions}, python {sys.version.split()[0]})")
    print(
        f"machine: {os.cpu_count()} cores; load average {load_start:.2f} at start, {load_end:.2f} at end; "
        f"{rounds} alternating rounds x {batch} calls per case"
    )
    print(f"{'scenario':<12}{'loop':<11}{'median us':>10}{'min-max us':>18}{'IQR us':>18}{'over bare':>11}")
    for scenario, cases in results.items():
        bare = cases["bare"].median
        for case, s in cases.items():
            over = "" if case == "bare" else f"{s.median - bare:+.2f}"
            print(
                f"{scenario:<12}{case:<11}{s.median:>10.2f}{f'{s.low:.2f}-{s.high:.2f}':>18}"
                f"{f'{s.q1:.2f}-{s.q3:.2f}':>18}{over:>11}"
            )
    print(
        "floodgate's figure is the whole guarded call (gate, breaker, deadline, attempt timeout, "
        "retry budget), not the loop alone"
    )
    summary: dict[str, object] = {}
    for scenario, cases in results.items():
        for case, s in cases.items():
            key = f"{scenario}_{case}_us"
            summary[key] = round(s.median, 2)
            summary[f"{key}_spread"] = [round(s.q1, 2), round(s.q3, 2)]
            summary[f"{key}_range"] = [round(s.low, 2), round(s.high, 2)]
    summary.update(rounds=rounds, batch=batch, load_average=round(load_end, 2), cores=os.cpu_count())
    print(json.dumps(summary))


if __name__ == "__main__":
    main()

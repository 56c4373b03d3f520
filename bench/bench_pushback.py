"""Benchmark: a provider that takes fewer calls at once than the budget says — found, not guessed.

Why it exists: the budget gives a process 16 LLM calls in flight, and the provider (the simulator,
``rate_limit.max_concurrent = 4``, 100 ms per answer) takes 4; the rest are answered 429 with
``Retry-After: 1``. With ``adaptive = true`` the dependency learns the 4 from the 429s
(`floodgate.PushbackLimit`) and pauses after each (`floodgate.Cooldown`). The issue's targets:
once adapted, under 1 % of its attempts are refused, and its throughput is within 10 % of what the
provider allows.

"What the provider allows" is measured, not computed (the simulator's own time per answer comes on
top of its 100 ms): in the same run, beside the adaptive dependency, a **known** dependency has the
provider's limit written into its budget (4, what an operator who knew would set). A third,
**fixed**, has the budget's 16 and neither cool-down nor adaptation: the behaviour before both. Each
has its own API key, so the simulator limits them apart, and they run at the same time, so the
machine's load hits all three alike. Each is driven closed-loop by 24 callers (each calls again as
soon as it has an answer, after ``Retry-After`` when refused). A round runs ``--seconds`` (the first
``--adapt`` of them not measured); with the default 90 s the measured window holds two of the
learned limit's probes (one more call than the provider takes, every 30 s: each costs a 429).

Prints one line per target (median over the rounds, spread, verdict) and one JSON line::

    {"provider_429_rate": R, "throughput_ratio": T, "fixed_429_rate": F, "learned_limit": L, ...}

Run: ``make bench-pushback`` (or ``.venv/bin/python bench/bench_pushback.py [--rounds N] [--quick]``).
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
from functools import partial
from pathlib import Path

import structlog
import trio
from prometheus_client import CollectorRegistry

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import floodgate  # noqa: E402
from _rounds import Target, json_fields, judge  # noqa: E402

from harness.chat_load import attempts, closed_loop  # noqa: E402
from harness.services import set_behaviour, start_simulator  # noqa: E402

PROVIDER_LIMIT = 4
LATENCY_MS = 100
BUDGET_LIMIT = 16
CLIENTS = 24
TARGETS = (
    Target("provider_429_rate", "<", 0.01, digits=4),
    Target("throughput_ratio", ">=", 0.9),
)


def budget(global_concurrency: int, **llm: object) -> floodgate.Budget:
    return floodgate.parse_budget(
        {
            "deployment": {"database_max_connections": 20, "database_reserve": 2},
            "services": {"online": {"replicas": 1, "workers": 1}},
            "dependencies": {
                "llm": {
                    "global_concurrency": global_concurrency,
                    "shares": {"online": 1.0},
                    "max_waiters": 64,
                    "max_wait": 2.0,
                    "timeouts": {"attempt": 8.0, "read": 8.0},
                    **llm,
                }
            },
        }
    )


VARIANTS = {
    "adaptive": budget(BUDGET_LIMIT, adaptive=True),
    "known": budget(PROVIDER_LIMIT),
    "fixed": budget(BUDGET_LIMIT, cooldown={"enabled": False}),
}


async def one_round(url: str, round_no: int, seconds: float, adapt: float) -> dict[str, dict[str, float]]:
    registries = {name: CollectorRegistry() for name in VARIANTS}
    deps = {
        name: floodgate.Dependencies.from_budget(
            b,
            service="online",
            registry=registries[name],
            http_base_urls={"llm": url},
            api_keys={"llm": f"sk-bench-{name}-{round_no}"},
        )
        for name, b in VARIANTS.items()
    }
    start = trio.current_time()
    window = seconds - adapt
    async with trio.open_nursery() as nursery:
        for d in deps.values():
            nursery.start_soon(partial(closed_loop, d["llm"], clients=CLIENTS, until=start + seconds))
        await trio.sleep_until(start + adapt)
        before = {name: attempts(r) for name, r in registries.items()}
        await trio.sleep_until(start + seconds)
        after = {name: attempts(r) for name, r in registries.items()}
    out: dict[str, dict[str, float]] = {}
    for name, d in deps.items():
        ok, refused = (a - b for a, b in zip(after[name], before[name], strict=True))
        stats = d["llm"].statistics()
        out[name] = {
            "per_second": ok / window,
            "rate_429": refused / (ok + refused) if ok + refused else 0.0,
            "limit": stats.limit.limit if stats.limit is not None else stats.gate.capacity,
        }
        await d.aclose()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=90.0, help="one round (default 90)")
    parser.add_argument(
        "--adapt", type=float, default=15.0, help="not measured at a round's start (default 15)"
    )
    parser.add_argument("--quick", action="store_true", help="one round of 40 s")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.seconds = 1, 40.0
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING + 10))
    rounds: list[dict[str, dict[str, float]]] = []
    with tempfile.TemporaryDirectory(prefix="bench-pushback-") as tmp:
        simulator = start_simulator(Path(tmp))
        try:
            set_behaviour(
                simulator,
                {
                    "chat": {
                        "latency": {"fixed_ms": LATENCY_MS},
                        "rate_limit": {"max_concurrent": PROVIDER_LIMIT},
                    }
                },
            )
            for n in range(args.rounds):
                result = trio.run(one_round, simulator.url, n, args.seconds, args.adapt)
                rounds.append(result)
                print(
                    f"round {n + 1}: "
                    + "; ".join(
                        f"{name} {r['per_second']:.1f}/s, 429 {r['rate_429']:.2%}, limit {r['limit']:g}"
                        for name, r in result.items()
                    ),
                    flush=True,
                )
        finally:
            simulator.stop()
    results = [
        judge(TARGETS[0], [r["adaptive"]["rate_429"] for r in rounds]),
        judge(TARGETS[1], [r["adaptive"]["per_second"] / r["known"]["per_second"] for r in rounds]),
    ]
    for result in results:
        print(result.line())
    # the figures beside the targets: each the middle round's (median_high: a value one round measured)
    line = {
        "benchmark": "pushback",
        **json_fields(results),
        "fixed_429_rate": round(statistics.median_high(r["fixed"]["rate_429"] for r in rounds), 4),
        "fixed_throughput_ratio": round(
            statistics.median_high(r["fixed"]["per_second"] / r["known"]["per_second"] for r in rounds), 3
        ),
        "learned_limit": statistics.median_high(r["adaptive"]["limit"] for r in rounds),
        "provider_limit": PROVIDER_LIMIT,
        "budget_limit": BUDGET_LIMIT,
        "known_per_second": round(statistics.median_high(r["known"]["per_second"] for r in rounds), 2),
        "rounds": args.rounds,
        "seconds": args.seconds,
    }
    print(json.dumps(line))


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""Benchmark: omniRAG jobs through the ingest API and a worker vs what the embed budget allows, in rounds.

The embeddings API answers after a fixed latency; the worker embeds in batches of a fixed size with at
most ``k`` requests in flight (``k`` = the budget's per-process embed limit for ``ingest_worker``). The
most the embed budget allows is then ``k x batch / latency`` chunks per second; the benchmark reports
documents/s and chunks/s achieved over the run (first claim to last completion, from the job table) and
their ratio to that bound, plus the simulator's peak concurrency (which must never exceed ``k``).

Everything is real: an embedded PostgreSQL, ``python -m services.simulator``, ``python -m services.ingest
api`` and ``worker`` as processes, jobs submitted over HTTP. A copy of config/budget.toml with the embed
budget set to give ``k`` is used, so the figure does not depend on the machine's core count.

Each of ``--rounds`` rounds pre-fills the queue with its own documents, starts a fresh worker and times
it, giving one U (each printed with the load average); the worker's own mean embed call duration is
printed too: U can never exceed latency / that duration. The target is judged on the median and spread
of U over the rounds (bench/_rounds.py: met, missed, or straddles when the spread crosses it).

Last line: ``{"embed_budget_utilisation": U, "embed_budget_utilisation_spread": [q1, q3], ..._range,
"verdicts": {...}, "rounds": [U per round], ...}`` (U: the median); target U >= 0.9.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import httpx
from _rounds import Target, json_fields, judge

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import floodgate  # noqa: E402

from cluster.migrate import apply_migrations  # noqa: E402
from harness.postgres import PostgresServer  # noqa: E402
from harness.services import set_behaviour, start_ingest_api, start_ingest_worker, start_simulator  # noqa: E402

UTILISATION = Target("embed_budget_utilisation", ">=", 0.9, digits=3)


def budget_with_embed_limit(source: Path, target: Path, k: int) -> int:
    """Copy the budget with the embed global concurrency set so ingest_worker's share gives ``k``."""
    text = source.read_text()
    budget = floodgate.load_budget(source)
    share = budget.exact_process_share("ingest_worker", "embed") / budget.global_limit("embed")
    global_needed = int(k / share + 0.999)
    section = re.search(r"(?ms)^\[dependencies\.embed\]\n.*?(?=^\[)", text)
    assert section is not None, "no [dependencies.embed] section in the budget"
    patched = re.sub(
        r"(?m)^global_concurrency = \d+", f"global_concurrency = {global_needed}", section.group(0), count=1
    )
    target.write_text(text[: section.start()] + patched + text[section.end() :])
    actual = floodgate.load_budget(target).process_limit("ingest_worker", "embed")
    return actual


def document(i: int, words: int) -> str:
    return " ".join(f"w{(i * 31 + n * 7) % 5000}" for n in range(words))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, default=96)
    parser.add_argument("--chunks-per-document", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16, help="chunks per embeddings request")
    parser.add_argument("--latency-ms", type=float, default=250.0, help="the simulator's fixed embed latency")
    parser.add_argument("--k", type=int, default=8, help="embed requests in flight allowed by the budget")
    parser.add_argument(
        "--rounds", type=int, default=5, help="rounds, each with a fresh worker (median and spread reported)"
    )
    parser.add_argument(
        "--embed-spacing",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the worker's CallSpacer (INGEST_WORKER_EMBED_SPACING); --no-embed-spacing to compare",
    )
    args = parser.parse_args()

    chunk_tokens, overlap = 50, 10
    words = chunk_tokens + (args.chunks_per_document - 1) * (chunk_tokens - overlap)
    root = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    k = budget_with_embed_limit(REPO / "config" / "budget.toml", root / "budget.toml", args.k)
    pg = PostgresServer(
        root / "data",
        settings={"synchronous_commit": "off", "max_connections": "100"},
        log=root / "postgres.log",
    )
    children = []
    try:
        pg.start()
        dsn = pg.dsn("postgres")
        asyncio.run(apply_migrations(dsn))
        simulator = start_simulator(root)
        children.append(simulator)
        set_behaviour(simulator, {"embeddings": {"latency": {"fixed_ms": args.latency_ms}}})
        api = start_ingest_api(dsn, root, budget_file=root / "budget.toml")
        children.append(api)
        api.wait_http("/readyz")

        rounds = []
        for n in range(args.rounds):
            rounds.append(run_round(n, args, dsn, simulator, api, root, words, chunk_tokens, overlap))
            r = rounds[-1]
            print(
                f"bench-ingest: round {n + 1}: {r['chunks']} chunks in {r['seconds']:.2f}s, "
                f"U = {r['chunks'] / r['seconds'] / allowed(args, k):.3f}, embed call {r['embed_call_ms']} ms, "
                f"load average {r['load']:.2f}",
                file=sys.stderr,
                flush=True,
            )
        stats = httpx.get(simulator.url + "/admin/stats", timeout=5).json()
    finally:
        for child in reversed(children):
            child.stop(timeout=10)
        pg.stop()
        shutil.rmtree(root, ignore_errors=True)

    bound = allowed(args, k)
    utilisations = [r["chunks"] / r["seconds"] / bound for r in rounds]
    result = judge(UTILISATION, utilisations)
    median_round = sorted(rounds, key=lambda r: r["chunks"] / r["seconds"])[len(rounds) // 2]
    seconds, chunks = median_round["seconds"], median_round["chunks"]
    chunks_per_s = chunks / seconds
    peak = _peak_embed_concurrency(stats)
    print(
        f"\n{args.documents} documents x {args.chunks_per_document} chunks per round; embed latency "
        f"{args.latency_ms:.0f} ms, batch {args.batch}, k = {k}; median of {args.rounds} rounds "
        f"(a fresh worker on a pre-filled queue each)"
    )
    print(
        "U per round: "
        + ", ".join(f"{u:.3f}" for u in utilisations)
        + "; load average: "
        + ", ".join(f"{r['load']:.2f}" for r in rounds)
    )
    print(f"documents/s {args.documents / seconds:8.1f}")
    print(f"chunks/s    {chunks_per_s:8.1f}   (embed budget allows k x batch / latency = {bound:.0f})")
    print(
        f"simulator peak concurrent embed requests: {peak} (budget k = {k}); "
        f"max attempts per job {max(r['max_attempts'] for r in rounds)}"
    )
    print(
        f"embed call as the worker saw it: {median_round['embed_call_ms']} ms on average "
        f"(the simulator sleeps {args.latency_ms:.0f} ms)"
    )
    print(result.line())
    print(
        json.dumps(
            {
                **json_fields([result]),
                "chunks_per_s": round(chunks_per_s, 1),
                "documents_per_s": round(args.documents / seconds, 2),
                "k": k,
                "peak_embed_concurrency": peak,
                "embed_call_ms": median_round["embed_call_ms"],
                "rounds": [round(u, 3) for u in utilisations],
                "load_average": round(os.getloadavg()[0], 2),
            }
        )
    )


def allowed(args: argparse.Namespace, k: int) -> float:
    """Chunks per second the embed budget allows: k requests of ``batch`` chunks per latency."""
    return k * args.batch / (args.latency_ms / 1000)


def run_round(
    n: int,
    args: argparse.Namespace,
    dsn: str,
    simulator,
    api,
    root: Path,
    words: int,
    chunk_tokens: int,
    overlap: int,
) -> dict:
    """Pre-fill the queue with this round's documents, start a worker, time it from its first claim to
    its last completion (from the job table), stop it."""
    with httpx.Client(base_url=api.url, timeout=10) as client:
        first_id = None
        for i in range(args.documents):
            response = client.post(
                "/v1/omnirag/jobs",
                headers={"x-floodgate-tenant": f"tenant{i % 4}"},
                json={
                    "doc_id": f"r{n}-doc{i}",
                    "text": document(n * 1000 + i, words),
                    "metadata": {"bench": True},
                },
            )
            response.raise_for_status()
            first_id = first_id or response.json()["job_id"]
    worker = start_ingest_worker(
        f"bench-worker-{n}",
        dsn,
        simulator,
        root,
        budget_file=root / "budget.toml",
        job_concurrency=8,
        tenant_running_cap=8,
        embed_batch_size=args.batch,
        embed_parallelism=4,
        chunk_tokens=chunk_tokens,
        chunk_overlap=overlap,
        lease_seconds=30,
        embed_spacing=args.embed_spacing,
    )
    try:
        worker.wait_http()

        async def wait_and_measure() -> dict:
            import asyncpg

            conn = await asyncpg.connect(dsn)
            try:
                deadline = time.monotonic() + 600
                while True:
                    row = await conn.fetchrow(
                        """SELECT count(*) FILTER (WHERE state = 'succeeded') AS done,
                                  count(*) FILTER (WHERE state IN ('failed', 'dead')) AS bad
                           FROM ingest_jobs WHERE id >= $1""",
                        first_id,
                    )
                    if row["bad"]:
                        raise SystemExit(f"bench-ingest: {row['bad']} jobs failed")
                    if row["done"] == args.documents:
                        break
                    if time.monotonic() > deadline:
                        raise SystemExit("bench-ingest: jobs did not finish in 10 minutes")
                    await asyncio.sleep(0.2)
                return dict(
                    await conn.fetchrow(
                        """SELECT extract(epoch FROM max(finished_at) - min(started_at))::float8 AS seconds,
                              (SELECT count(*) FROM chunks WHERE doc_id LIKE $2) AS chunks,
                              max(attempts) AS max_attempts FROM ingest_jobs WHERE id >= $1""",
                        first_id,
                        f"r{n}-%",
                    )
                )
            finally:
                await conn.close()

        result = asyncio.run(wait_and_measure())
        result["embed_call_ms"] = _mean_embed_call_ms(httpx.get(worker.url + "/metrics", timeout=5).text)
        result["load"] = os.getloadavg()[0]
        return result
    finally:
        worker.stop(timeout=10)


def _mean_embed_call_ms(metrics_text: str) -> float | None:
    """Mean duration of the worker's embeddings calls, from its ``floodgate_downstream_latency_seconds``."""
    from prometheus_client.parser import text_string_to_metric_families

    total = count = 0.0
    for family in text_string_to_metric_families(metrics_text):
        if family.name != "floodgate_downstream_latency_seconds":
            continue
        for sample in family.samples:
            if sample.labels.get("dependency") == "embed":
                if sample.name.endswith("_sum"):
                    total += sample.value
                elif sample.name.endswith("_count"):
                    count += sample.value
    return round(1000 * total / count, 1) if count else None


def _peak_embed_concurrency(stats: dict) -> int | None:
    """The simulator's peak concurrent embeddings requests (its /admin/stats shape, searched loosely)."""
    api = stats.get("apis", stats).get("embeddings") if isinstance(stats, dict) else None
    if isinstance(api, dict):
        for key in ("peak_concurrency", "peak_concurrent", "max_concurrency", "peak"):
            if key in api:
                return api[key]
    return None


if __name__ == "__main__":
    main()

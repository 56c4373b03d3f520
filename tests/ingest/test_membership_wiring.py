"""The ingest workers are members of their service: the live workers divide the embed and fetch limits."""

from __future__ import annotations

from pathlib import Path

import floodgate
import trio
import trio_asyncio
from providers import ProviderSettings

from services.ingest import IngestWorkerSettings
from services.ingest._bootstrap import open_worker

REPO_BUDGET = Path(__file__).resolve().parents[2] / "config" / "budget.toml"


def capacities(process) -> dict[str, int]:
    return {name: process.dependencies[name].gate.capacity for name in ("embed", "fetch")}


async def test_one_worker_alone_takes_the_services_share_and_two_divide_it(fresh_database_url: str) -> None:
    budget = floodgate.load_budget(REPO_BUDGET)
    whole = {
        name: int(budget.global_limit(name) * budget.dependency(name).shares["ingest_worker"])
        for name in ("embed", "fetch")
    }
    settings = IngestWorkerSettings(database_url=fresh_database_url, budget_file=REPO_BUDGET)
    providers = {
        "embed": ProviderSettings(base_url="http://127.0.0.1:9"),  # never called here
        "fetch": ProviderSettings(base_url="http://127.0.0.1:9"),
    }
    async with trio_asyncio.open_loop(), open_worker(settings, providers) as first:
        assert capacities(first) == whole  # alone: more than the planned 2 workers' half each
        async with open_worker(settings, providers) as second:
            # entering waited until the first had given half back
            assert capacities(first) == capacities(second) == {k: v // 2 for k, v in whole.items()}
        with trio.fail_after(3):
            while capacities(first) != whole:  # noqa: ASYNC110 (polled state)
                await trio.sleep(0.05)

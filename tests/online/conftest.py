"""Harness for the online service's tests: the real app, the real simulator, wired in-process.

``online_harness`` builds the simulator app (services/simulator) and puts it behind every
provider with ``httpx.ASGITransport``, so the online app's guarded calls go through the real
toolkit (gates, breakers, retries) to the real simulator without sockets. Time is trio's, so a
test that asks for ``autojump_clock`` runs simulated latencies, Retry-After waits and deadlines
on the virtual clock and can assert exact times. The database edge is either ``MemoryChunks``
(a tenant-filtering fake, for virtual-clock tests) or the real PostgreSQL (see test_postgres.py).
"""

from __future__ import annotations

import copy
import math
import tomllib
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import floodgate
import httpx
import pytest
from prometheus_client import CollectorRegistry
from providers import load_provider_settings
from quart_trio import QuartTrio

from services.online._chunks import ChunkHit, ChunkSearch
from services.online._wiring import Wired, open_downstreams
from services.online.app import create_app
from services.online.settings import PROVIDER_DEPENDENCIES, OnlineSettings
from services.simulator import SimulatorSettings, embed
from services.simulator import create_app as create_simulator

REPO_BUDGET = Path(__file__).resolve().parents[2] / "config" / "budget.toml"
SIMULATOR_URL = "http://simulator.test"
TENANT = "acme"

# simulator API name for each provider dependency
SIM_API = {"llm": "chat", "embed": "embeddings", "rerank": "rerank", "search": "search"}

#: the simulator's behaviour at the budget's typical latencies, fixed (no spread), so that steps and
#: totals on the virtual clock are exact
FIXED_LATENCIES = {
    "embeddings": {"latency": {"fixed_ms": 20}},
    "search": {"latency": {"fixed_ms": 150}},
    "rerank": {"latency": {"fixed_ms": 50}},
    "chat": {"latency": {"fixed_ms": 400}},
}


def budget_data() -> dict[str, Any]:
    return tomllib.loads(REPO_BUDGET.read_text())


def make_budget(patch: Mapping[str, Any] | None = None) -> floodgate.Budget:
    """The repository's budget file, with ``patch`` merged in (nested dicts merge key by key)."""
    data = copy.deepcopy(budget_data())
    _merge(data, patch or {})
    return floodgate.parse_budget(data)


def _merge(into: dict[str, Any], patch: Mapping[str, Any]) -> None:
    for key, value in patch.items():
        if isinstance(value, Mapping) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


class MemoryChunks:
    """A `ChunkSearch` over rows held in memory, filtered by tenant like the SQL is. For tests
    that run on the virtual clock, where a real socket to PostgreSQL would let time jump."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, str, int, str, list[float], str | None]] = []
        self.calls = 0

    def add(self, tenant: str, doc_id: str, chunks: list[str], title: str | None = None) -> None:
        for number, text in enumerate(chunks):
            self.rows.append((tenant, doc_id, number, text, embed(text), title))

    async def nearest(self, tenant: str, vector: list[float], *, limit: int) -> list[ChunkHit]:
        self.calls += 1
        scored = [
            (sum(a * b for a, b in zip(vector, v, strict=True)), doc, no, text, title)
            for t, doc, no, text, v, title in self.rows
            if t == tenant
        ]
        scored.sort(key=lambda r: (-r[0], r[1], r[2]))
        return [ChunkHit(doc, no, text, title, sim) for sim, doc, no, text, title in scored[:limit]]


@dataclass
class Harness:
    app: QuartTrio
    simulator: QuartTrio
    wired: Wired
    budget: floodgate.Budget
    registry: CollectorRegistry

    @property
    def client(self):
        return self.app.test_client()

    async def post(self, path: str, body: Any, *, tenant: str | None = TENANT, headers: dict | None = None):
        all_headers = dict(headers or {})
        if tenant is not None:
            all_headers["x-floodgate-tenant"] = tenant
        if isinstance(body, bytes | str):
            return await self.client.post(
                path, data=body, headers={"content-type": "application/json", **all_headers}
            )
        return await self.client.post(path, json=body, headers=all_headers)

    async def behave(self, patch: dict[str, Any]) -> None:
        response = await self.simulator.test_client().put("/admin/behaviour", json=patch)
        assert response.status_code == 200, await response.get_data(as_text=True)

    async def stats(self) -> dict[str, Any]:
        response = await self.simulator.test_client().get("/admin/stats")
        return (await response.get_json())["apis"]

    async def requests_to(self, dependency: str) -> int:
        return (await self.stats())[SIM_API[dependency]]["requests"]

    def limit(self, dependency: str) -> int:
        return self.budget.process_limit("online", dependency)


@asynccontextmanager
async def online_harness(
    *,
    budget: floodgate.Budget | None = None,
    behaviour: dict[str, Any] | None = None,
    chunks: ChunkSearch | None = None,
    settings: OnlineSettings | None = None,
    membership_store: floodgate.MembershipStore | None = None,
) -> AsyncIterator[Harness]:
    budget = budget or make_budget()
    simulator = create_simulator(SimulatorSettings(seed=7, behaviour=behaviour or {}))
    transport = httpx.ASGITransport(app=simulator)
    providers = load_provider_settings(PROVIDER_DEPENDENCIES, environ={}, default_base_url=SIMULATOR_URL)
    registry = CollectorRegistry()
    settings = settings or OnlineSettings()
    async with open_downstreams(
        settings,
        providers,
        budget,
        registry=registry,
        transport=transport,
        chunks=chunks or MemoryChunks(),
        membership_store=membership_store,
    ) as wired:
        app = create_app(
            settings, budget=budget, downstreams=wired.downstreams, registry=registry, doors=wired.doors
        )
        yield Harness(app, simulator, wired, budget, registry)


@pytest.fixture
def memory_chunks() -> MemoryChunks:
    chunks = MemoryChunks()
    chunks.add(
        TENANT,
        "memo-1",
        [
            "Aldercrest Robotics agreed to acquire Norfield Analytics for 420 million dollars.",
            "The acquisition of Norfield Analytics is expected to close in May after regulatory review.",
        ],
        title="Board memo",
    )
    chunks.add(
        "rival", "secret-1", ["Rival Corp plans to acquire Norfield Analytics for 900 million dollars."]
    )
    return chunks


def finite(x: float) -> bool:
    return math.isfinite(x)


def close_door(door: floodgate.Door) -> None:
    """Make ``door`` refuse every request: a static door with no room."""
    door.adaptive = None
    door.ceiling = 0

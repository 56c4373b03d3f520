"""The one place that wires the online service's dependencies from settings and the budget.

`open_downstreams` builds the guarded dependencies (``floodgate.Dependencies.from_budget``: one
gate, breaker, retry policy and httpx client per provider, sized for this process), the caches
for reusable results (search, query embeddings, the tenants' LLM answers), the token meter the
LLM and embeddings clients report each answer's ``usage`` to (`providers.UsageMetrics`, priced from the budget file), and the
PostgreSQL pool (its size and gate from
the budget's ``db`` share, its connect and statement timeouts from ``db.timeouts``), and the
endpoints' admission doors, and closes them all on exit. With ``membership`` on, the process is a
live member of the online service while they are open (`floodgate.open_membership`): its provider
gates follow its share, and so do the doors sized on it (`_admission.resize_doors`). Tests pass
``transport`` to put an in-process simulator behind the providers, ``chunks`` to replace the
database and ``membership_store`` to join an in-memory store.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial

import floodgate
import httpx
from prometheus_client import CollectorRegistry
from providers import (
    ChatModel,
    Embedder,
    ProviderSettings,
    Reranker,
    UsageMetrics,
    WebSearch,
    api_keys,
    base_urls,
)

from ._admission import make_doors, resize_doors
from ._chunks import SESSION_SETTINGS, ChunkSearch, PgChunkSearch, keep_session
from ._context import Downstreams
from .settings import OnlineSettings

__all__ = ["SERVICE", "Wired", "open_downstreams"]

SERVICE = "online"


@dataclass(frozen=True)
class Wired:
    """What `open_downstreams` opened: the providers for handlers, and the raw parts for probes,
    statistics and tests."""

    downstreams: Downstreams
    dependencies: floodgate.Dependencies
    pool: floodgate.PgPool | None
    #: the endpoints' admission doors (`_admission.make_doors`), sized for this process's share
    doors: Mapping[str, floodgate.Door]

    @property
    def gates(self) -> dict[str, floodgate.Gate]:
        """Each dependency's gate, by dependency name."""
        return {name: dep.gate for name, dep in self.dependencies.items()}


def _cache(
    budget: floodgate.Budget, dependency: str, registry: CollectorRegistry
) -> floodgate.TTLCache | None:
    policy = budget.dependency(dependency).cache
    if policy is None:
        return None
    return floodgate.TTLCache(policy.ttl, policy.max_entries, name=dependency, registry=registry)


#: LLM answers kept at once, across endpoints and tenants (each a few kilobytes of text).
LLM_MEMO_ENTRIES = 10_000


def _llm_memo(budget: floodgate.Budget, registry: CollectorRegistry) -> floodgate.TTLCache | None:
    """The LLM client's memo, when an endpoint keeps its LLM answers (its ``cache_ttl``; each call
    names its own TTL, so the memo's default is only the longest)."""
    ttls = [policy.cache_ttl for policy in budget.endpoints.values() if policy.cache_ttl]
    if not ttls:
        return None
    return floodgate.TTLCache(max(ttls), LLM_MEMO_ENTRIES, name="llm", registry=registry)


@asynccontextmanager
async def open_downstreams(
    settings: OnlineSettings,
    providers: Mapping[str, ProviderSettings],
    budget: floodgate.Budget,
    *,
    registry: CollectorRegistry,
    transport: httpx.AsyncBaseTransport | Mapping[str, httpx.AsyncBaseTransport] | None = None,
    chunks: ChunkSearch | None = None,
    membership_store: floodgate.MembershipStore | None = None,
) -> AsyncIterator[Wired]:
    """Open everything the endpoints call, their metrics on ``registry``; under trio a trio-asyncio
    loop must be open unless ``chunks`` replaces the database. A database that does not answer
    raises `floodgate.PoolUnavailable` (`chassis.run_service` turns it into exit code 2).
    ``membership_store`` joins that store instead of the database's (tests: a
    `floodgate.InMemoryMembershipStore`, with ``chunks``)."""
    deps = floodgate.Dependencies.from_budget(
        budget,
        service=SERVICE,
        registry=registry,
        http_base_urls=base_urls(providers),
        api_keys=api_keys(providers),
        transport=transport,
    )
    usage = UsageMetrics(registry=registry, prices=budget.prices)
    doors = make_doors(budget, registry, {name: dep.gate for name, dep in deps.items()})
    async with deps:

        def assemble(chunk_search: ChunkSearch) -> Downstreams:
            return Downstreams(
                llm=ChatModel(
                    deps["llm"], model=providers["llm"].model, usage=usage, memo=_llm_memo(budget, registry)
                ),
                embedder=Embedder(
                    deps["embed"],
                    model=providers["embed"].model,
                    memo=_cache(budget, "embed", registry),
                    usage=usage,
                ),
                reranker=Reranker(deps["rerank"], model=providers["rerank"].model),
                web=WebSearch(deps["search"], memo=_cache(budget, "search", registry)),
                chunks=chunk_search,
            )

        if chunks is not None:
            wired = Wired(assemble(chunks), deps, None, doors)
            async with _member(settings, budget, wired, registry, membership_store):
                yield wired
            return
        connections = budget.process_limit(SERVICE, "db")
        async with floodgate.open_pg_pool(
            settings.database_url,
            # Opened at start-up, all of them: the budget reserves them for this process anyway,
            # and a pool that grows on demand opens its connections (TCP, auth, a backend
            # process, statements prepared again) exactly when a surge arrives, on the requests
            # of the surge, whose vector-search tail latency the overload benchmark saw jump.
            min_size=connections,
            max_size=connections,
            gate=deps["db"].gate,
            registry=registry,
            name="db",
            timeouts=budget.dependency("db").timeouts,
            server_settings=SESSION_SETTINGS,
            reset=keep_session,
        ) as pool:
            wired = Wired(assemble(PgChunkSearch(pool)), deps, pool, doors)
            async with _member(settings, budget, wired, registry, membership_store):
                yield wired


@asynccontextmanager
async def _member(
    settings: OnlineSettings,
    budget: floodgate.Budget,
    wired: Wired,
    registry: CollectorRegistry,
    store: floodgate.MembershipStore | None,
) -> AsyncIterator[None]:
    """Dynamic shares: a live member of the online service while the block runs — joined before
    serving (holding nothing until the others gave their share back), left after the last
    request — on ``store``, or with ``membership`` on and a database, on a connection of its own.
    Each new share resizes the dependency and the endpoint doors sized on it."""
    if store is None and (not settings.membership or wired.pool is None):
        yield
        return
    deps, doors = wired.dependencies, wired.doors
    shares: dict[str, int] = {}  # this process's share now, by dependency (absent: the planned)

    def resize(name: str, capacity: int) -> None:
        deps[name].resize(capacity)  # through the dependency: a learned limit stays under the share
        shares[name] = capacity
        resize_doors(budget, doors, shares)

    join = partial(
        floodgate.open_membership,
        budget=budget,
        service=SERVICE,
        gates=wired.gates,
        resize=resize,
        registry=registry,
    )
    if store is not None:
        async with join(store):
            yield
        return
    async with floodgate.open_pg_membership_store(settings.database_url) as pg_store, join(pg_store):
        yield

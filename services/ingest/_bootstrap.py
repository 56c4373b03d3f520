"""The one place that wires the ingest processes: budget -> toolkit dependencies -> pool -> app/worker.

Everything app-lifetime is opened here, inside the process's trio-asyncio loop, and handed down
explicitly; nothing below reads the environment or holds a module-level client or pool.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass

import chassis
import floodgate
import trio
from prometheus_client import CollectorRegistry
from providers import Embedder, Fetcher, ProviderSettings, UsageMetrics, api_keys, base_urls
from quart_trio import QuartTrio

from ._api import SUBMIT_ENDPOINT, IngestApi, install_routes
from ._chunking import ChunkingConfig
from ._db import register_vector_codec, release_without_session_reset
from ._listener import PgListener
from ._metrics import IngestApiMetrics, WorkerMetrics
from ._pipeline import JobPipeline, PipelineConfig
from ._quotas import running_caps
from ._timing import CallSpacer, RetryBackoff
from ._worker import Worker, WorkerConfig
from .settings import IngestApiSettings, IngestWorkerSettings

__all__ = ["WorkerProcess", "build_api_app", "open_api", "open_worker", "worker_config"]


def _load_budget(path: object) -> floodgate.Budget:
    try:
        return floodgate.load_budget(path)
    except (OSError, floodgate.BudgetError) as exc:
        raise chassis.StartupError(f"budget file: {exc}") from None


@asynccontextmanager
async def _pool(
    dsn: str,
    *,
    budget: floodgate.Budget,
    service: str,
    dependencies: floodgate.Dependencies,
    dependency: str,
    registry: CollectorRegistry,
    **pool_kwargs: object,
) -> AsyncIterator[floodgate.PgPool]:
    """The process's pool for ``dependency``: its size, gate and timeouts from the budget. A
    database that does not answer raises `floodgate.PoolUnavailable` (`chassis.run_service` turns it
    into one line and exit code 2)."""
    async with floodgate.open_pg_pool(
        dsn,
        min_size=1,
        max_size=budget.process_limit(service, dependency),
        gate=dependencies[dependency].gate,
        registry=registry,
        name=dependency,
        timeouts=budget.dependency(dependency).timeouts,
        reset=release_without_session_reset,
        **pool_kwargs,
    ) as pool:
        yield pool


def build_api_app(
    settings: IngestApiSettings,
    db: object,
    registry: CollectorRegistry,
    *,
    budget: floodgate.Budget | None = None,
) -> QuartTrio:
    """The API app on ``db``; ``budget`` defaults to the one ``settings.budget_file`` names. A
    submission gets the budget's ``omnirag_submit`` deadline, and its body the smaller of that
    endpoint's ``max_body_bytes`` and the service's setting. The endpoint's failure policy must be
    what a submission does, ``required = ["db"]`` (`chassis.StartupError` otherwise)."""
    if budget is None:
        budget = _load_budget(settings.budget_file)
    problems = budget.failure_policy_problems(SUBMIT_ENDPOINT, ["db"])  # a submission is one statement
    if budget.endpoint(SUBMIT_ENDPOINT).degradable:
        problems.append(f"endpoints.{SUBMIT_ENDPOINT}.degradable: a submission has no fallback")
    if problems:
        raise chassis.StartupError(str(floodgate.BudgetError(problems)))
    body_limit = min(settings.max_body_bytes, budget.endpoint(SUBMIT_ENDPOINT).max_body_bytes)
    app = chassis.create_app("ingest-api", registry=registry, max_body_bytes=body_limit)
    app.extensions["ingest"] = IngestApi(
        settings=settings,
        db=db,  # type: ignore[arg-type]
        metrics=IngestApiMetrics(registry),
        budget=budget,
    )
    chassis.chassis_state(app).readiness["db"] = lambda: db.fetchval("SELECT 1")  # type: ignore[attr-defined]
    install_routes(app)
    return app


@asynccontextmanager
async def open_api(settings: IngestApiSettings) -> AsyncIterator[QuartTrio]:
    """The API app with its pool (the budget's ``db`` share for ``ingest_api``). Needs the asyncio loop."""
    budget = _load_budget(settings.budget_file)
    registry = CollectorRegistry()
    deps = floodgate.Dependencies.from_budget(budget, service="ingest_api", registry=registry)
    async with (
        deps,
        _pool(
            settings.database_url,
            budget=budget,
            service="ingest_api",
            dependencies=deps,
            dependency="db",
            registry=registry,
        ) as pool,
    ):
        yield build_api_app(settings, pool, registry, budget=budget)


def worker_config(settings: IngestWorkerSettings, budget: floodgate.Budget) -> WorkerConfig:
    """The worker's configuration: its settings, and each tenant's running cap from the budget's
    tenant table (`_quotas.running_caps`)."""
    caps = running_caps(budget)
    return WorkerConfig(
        worker_id=settings.worker_id,
        job_concurrency=settings.job_concurrency,
        claim_batch=settings.claim_batch,
        lease_seconds=settings.lease_seconds,
        tenant_running_cap=caps.default,
        tenant_running_caps=caps.overrides,
        poll_interval=settings.poll_interval,
        shutdown_grace=settings.shutdown_grace,
        backoff=RetryBackoff(base=settings.retry_backoff_base, cap=settings.retry_backoff_cap),
        reap_interval=settings.reap_interval,
        maintenance_interval=settings.maintenance_interval,
        retention_seconds=settings.retention_seconds,
    )


@dataclass
class WorkerProcess:
    worker: Worker
    app: QuartTrio
    db: floodgate.PgPool
    dependencies: floodgate.Dependencies


@asynccontextmanager
async def open_worker(
    settings: IngestWorkerSettings, providers: Mapping[str, ProviderSettings]
) -> AsyncIterator[WorkerProcess]:
    """A worker wired from the budget: ``db_write`` pool, ``embed``/``fetch`` dependencies, embed
    limiter. ``providers`` must have ``embed``; without ``fetch`` the worker takes text jobs only."""
    budget = _load_budget(settings.budget_file)
    if "embed" not in providers:
        raise chassis.StartupError(
            "FLOODGATE_EMBED_BASE_URL is not set: the worker has no embeddings provider"
        )
    registry = CollectorRegistry()
    deps = floodgate.Dependencies.from_budget(
        budget,
        service="ingest_worker",
        registry=registry,
        http_base_urls=base_urls(providers),
        api_keys=api_keys(providers),
    )
    async with (
        deps,
        _pool(
            settings.database_url,
            budget=budget,
            service="ingest_worker",
            dependencies=deps,
            dependency="db_write",
            registry=registry,
            init=register_vector_codec,
        ) as pool,
    ):
        # The worker queues its own embedding work here, at the budget's limit, so the toolkit's gate
        # (bounded wait, fast rejection — right for online requests) is never oversubscribed by jobs.
        embed_slots = budget.process_limit("ingest_worker", "embed")
        embed_limiter = trio.CapacityLimiter(embed_slots)
        spacer = CallSpacer(slots=embed_slots) if settings.embed_spacing else None
        pipeline = JobPipeline(
            PipelineConfig(
                chunking=ChunkingConfig(settings.chunk_tokens, settings.chunk_overlap, settings.max_chunks),
                embed_batch_size=settings.embed_batch_size,
                embed_parallelism=settings.embed_parallelism,
                max_text_bytes=settings.max_text_bytes,
                binary_vectors=True,  # the pool registers the codec (init= above)
            ),
            db=pool,
            embedder=Embedder(
                deps["embed"],
                model=providers["embed"].model,
                usage=UsageMetrics(registry=registry, prices=budget.prices),
            ),
            fetcher=Fetcher(deps["fetch"]) if "fetch" in providers else None,
            embed_limiter=embed_limiter,
            embed_spacer=spacer,
        )
        metrics = WorkerMetrics(registry)
        pipeline._on_chunks = metrics.chunks.inc
        worker = Worker(
            worker_config(settings, budget),
            db=pool,
            runner=pipeline,
            metrics=metrics,
            listener_factory=lambda wake, cancel: PgListener(
                settings.database_url, on_jobs=wake, on_cancel=cancel
            ),
        )
        app = chassis.create_app("ingest-worker", registry=registry)
        chassis.chassis_state(app).readiness["db"] = lambda: pool.fetchval("SELECT 1")
        process = WorkerProcess(worker=worker, app=app, db=pool, dependencies=deps)
        if not settings.membership:
            yield process
            return

        def resize(name: str, capacity: int) -> None:
            # The worker's own embed queue follows the gate, so jobs never oversubscribe it.
            deps[name].resize(capacity)
            if name == "embed":
                embed_limiter.total_tokens = max(1, capacity)
                if spacer is not None:
                    spacer.slots = max(1, capacity)

        # Dynamic shares (docs/budget.md): the live workers divide the embed and fetch limits.
        async with (
            floodgate.open_pg_membership_store(settings.database_url) as store,
            floodgate.open_membership(
                store,
                budget=budget,
                service="ingest_worker",
                gates={name: deps[name].gate for name in deps},
                resize=resize,
                registry=registry,
            ),
        ):
            yield process

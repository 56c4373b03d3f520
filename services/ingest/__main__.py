"""``python -m services.ingest api|worker``: the omniRAG ingest API or one ingest worker."""

from __future__ import annotations

import functools
import os
import sys

import chassis
import trio
import trio_asyncio
from providers import ProviderSettingsError, load_provider_settings

from ._api import IngestApi
from ._bootstrap import open_api, open_worker
from ._sampler import sample_queue
from .settings import PROVIDER_DEPENDENCIES, IngestApiSettings, IngestWorkerSettings


async def serve_api(settings: IngestApiSettings, shutdown: trio.Event) -> None:
    async with trio_asyncio.open_loop(), open_api(settings) as app, trio.open_nursery() as nursery:
        api: IngestApi = app.extensions["ingest"]
        sampler = functools.partial(
            sample_queue, api.db, api.metrics, interval=settings.queue_sample_interval
        )
        await nursery.start(sampler)
        await chassis.serve(
            app,
            host=settings.host,
            port=settings.port,
            grace_period=settings.grace_period,
            shutdown_trigger=shutdown.wait,
        )
        nursery.cancel_scope.cancel()


async def serve_worker(settings: IngestWorkerSettings, shutdown: trio.Event) -> None:
    if settings.nice:
        os.nice(settings.nice)
    try:
        # Unset is "none" here: a worker without a fetch provider takes text jobs only.
        providers = load_provider_settings(PROVIDER_DEPENDENCIES, default_base_url=None)
    except ProviderSettingsError as exc:
        raise chassis.StartupError(f"invalid settings: {exc}") from None
    async with trio_asyncio.open_loop(), open_worker(settings, providers) as process:
        worker_done = trio.Event()

        async def run_worker() -> None:
            try:
                await process.worker.run(shutdown=shutdown)
            finally:
                worker_done.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_worker)
            # Probes and /metrics stay up while the worker drains; they stop after it.
            await chassis.serve(
                process.app,
                host=settings.host,
                port=settings.port,
                grace_period=settings.grace_period,
                shutdown_trigger=worker_done.wait,
            )


def main(argv: list[str]) -> int:
    role = argv[0] if argv else ""
    if role == "api":
        return chassis.run_service("ingest-api", IngestApiSettings, "INGEST_API_", serve_api)
    if role == "worker":
        return chassis.run_service("ingest-worker", IngestWorkerSettings, "INGEST_WORKER_", serve_worker)
    print("usage: python -m services.ingest api|worker", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""``python -m services.simulator``: serve the downstream simulator (settings from ``SIMULATOR_*``)."""

from __future__ import annotations

import os
import sys

import structlog
import trio
from chassis import run_service, serve

from .app import SERVICE_NAME, create_app
from .settings import ENV_PREFIX, SimulatorSettings

log = structlog.get_logger(SERVICE_NAME)


async def main(settings: SimulatorSettings, shutdown: trio.Event) -> None:
    if settings.nice:
        os.nice(settings.nice)
    app = create_app(settings)

    async def serving(task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED) -> None:
        await serve(
            app,
            host=settings.host,
            port=settings.port,
            grace_period=settings.grace_period,
            shutdown_trigger=shutdown.wait,
            task_status=task_status,
        )

    async with trio.open_nursery() as nursery:
        urls = await nursery.start(serving)
        log.info("listening", urls=urls, seed=settings.seed)


if __name__ == "__main__":
    sys.exit(run_service(SERVICE_NAME, SimulatorSettings, ENV_PREFIX, main))

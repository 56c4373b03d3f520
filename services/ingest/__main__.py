"""``python -m services.ingest api|worker``: the omniRAG ingest API or one ingest worker."""

from __future__ import annotations

import sys

import trio

import chassis

from .settings import IngestApiSettings, IngestWorkerSettings


async def serve_api(settings: IngestApiSettings, shutdown: trio.Event) -> None:
    app = chassis.create_app("ingest-api", max_body_bytes=settings.max_body_bytes)
    await chassis.serve(
        app, host=settings.host, port=settings.port, grace_period=settings.grace_period,
        shutdown_trigger=shutdown.wait,
    )


async def serve_worker(settings: IngestWorkerSettings, shutdown: trio.Event) -> None:
    app = chassis.create_app("ingest-worker")
    await chassis.serve(
        app, host=settings.host, port=settings.port, grace_period=settings.grace_period,
        shutdown_trigger=shutdown.wait,
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

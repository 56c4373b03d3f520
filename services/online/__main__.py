"""``python -m services.online``: serve the online endpoints."""

from __future__ import annotations

import sys

import trio

import chassis

from .app import create_app
from .settings import OnlineSettings


async def main(settings: OnlineSettings, shutdown: trio.Event) -> None:
    app = create_app(settings)
    await chassis.serve(
        app,
        host=settings.host,
        port=settings.port,
        grace_period=settings.grace_period,
        shutdown_trigger=shutdown.wait,
    )


if __name__ == "__main__":
    sys.exit(chassis.run_service("online", OnlineSettings, "ONLINE_", main))

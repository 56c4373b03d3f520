"""``python -m services.online``: serve the online endpoints.

Start-up order: settings (``ONLINE_*``, providers ``FLOODGATE_*``) and the budget file are
validated first — any problem is one line on stderr and exit code 2 — then the trio-asyncio loop
(for asyncpg), the providers and the pool (a database that does not answer: one line, exit code
2, from `chassis.run_service`), then the server. Shutdown runs the same way back.
"""

from __future__ import annotations

import sys

import chassis
import floodgate
import trio
import trio_asyncio
from prometheus_client import CollectorRegistry
from providers import ProviderSettingsError, load_provider_settings

from ._wiring import open_downstreams
from .app import create_app
from .settings import PROVIDER_DEPENDENCIES, OnlineSettings


async def main(settings: OnlineSettings, shutdown: trio.Event) -> None:
    try:
        providers = load_provider_settings(PROVIDER_DEPENDENCIES)
    except ProviderSettingsError as exc:
        raise chassis.StartupError(f"invalid provider settings: {exc}") from None
    try:
        budget = floodgate.load_budget(settings.budget_file)
    except floodgate.BudgetError as exc:
        raise chassis.StartupError(str(exc)) from None
    registry = CollectorRegistry()
    async with trio_asyncio.open_loop():
        # Entered with `async with`, not by hand: the membership inside keeps a task running, and
        # its nursery must be exited in the task and scope order it was entered in.
        async with open_downstreams(settings, providers, budget, registry=registry) as wired:
            pool = wired.pool
            assert pool is not None
            app = create_app(
                settings,
                budget=budget,
                downstreams=wired.downstreams,
                registry=registry,
                readiness={"database": lambda: pool.fetchval("SELECT 1")},
                doors=wired.doors,
            )
            # chassis.serve runs the loop-lag monitor on the app's registry (this one), and freezes
            # what was built so far out of the garbage collector's sight (`gc.freeze`).
            await chassis.serve(
                app,
                host=settings.host,
                port=settings.port,
                grace_period=settings.grace_period,
                shutdown_trigger=shutdown.wait,
            )


if __name__ == "__main__":
    sys.exit(chassis.run_service("online", OnlineSettings, "ONLINE_", main))

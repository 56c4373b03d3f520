"""Serving a chassis app: hypercorn's trio worker, started programmatically, with graceful shutdown.

A service's ``__main__`` calls :func:`run_service` with its settings model and an async ``main``.
``main`` opens what the process needs first (a trio-asyncio loop for asyncpg, pools, clients), then
calls :func:`serve`. SIGTERM or SIGINT sets the shutdown event: hypercorn stops accepting, lets
in-flight requests finish within ``grace_period``, then returns. A second signal cancels at once.
Once started, the process's start-up objects are frozen out of the garbage collector (`gc.freeze`).
While a chassis app is served, a `floodgate.LoopLagMonitor` reports the event loop's lag on the
app's registry: every trio service process measures it, in this one place.
"""

from __future__ import annotations

import errno
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import TypeVar

import floodgate
import structlog
import trio
from floodgate._heap import frozen_heap
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve
from pydantic import BaseModel
from quart_trio import QuartTrio

from ._app import chassis_state
from ._errors import exception_leaves
from ._logging import configure_logging
from ._settings import BaseServiceSettings, SettingsError, load_settings

__all__ = ["StartupError", "loop_lag_monitor", "run_service", "serve"]

S = TypeVar("S", bound=BaseServiceSettings)

log = structlog.get_logger("chassis")


class StartupError(Exception):
    """The process cannot start; the message is one line naming the cause."""


async def serve(
    app: QuartTrio,
    *,
    host: str,
    port: int,
    grace_period: float,
    shutdown_trigger: Callable[[], Awaitable[object]],
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` until ``shutdown_trigger`` returns; ``task_status`` gets the bound URLs.

    A chassis app (one `create_app` made) is served with its `loop_lag_monitor` running beside it.
    """
    config = HypercornConfig()
    config.bind = [f"{host}:{port}"]
    config.graceful_timeout = grace_period
    config.accesslog = None  # the chassis logs one structured event per request instead
    config.errorlog = None
    config.keep_alive_timeout = 75  # longer than the gateway's idle timeout, so Envoy closes first
    # hypercorn's default listen backlog (100) overflows when a burst of clients connects at once
    # (a gateway scaling its pool, a load test): the kernel drops the SYNs and TCP retries after
    # 1 s, 3 s... — seconds of latency the service never sees. The kernel caps it at somaxconn.
    config.backlog = 1024
    monitor = loop_lag_monitor(app)
    try:
        async with trio.open_nursery() as nursery:
            if monitor is not None:
                await nursery.start(monitor.run)
            # What the process built to start (modules, the app, pools, clients) lives as long as it
            # does: frozen, a full collection under load scans only what requests made, and its
            # pause (every tenant's stall at once) stays short. Thawed when serving ends.
            with frozen_heap():
                await hypercorn_serve(app, config, shutdown_trigger=shutdown_trigger, task_status=task_status)
            nursery.cancel_scope.cancel()
    except BaseException as exc:
        # hypercorn binds inside its nurseries, so the OSError arrives wrapped in exception groups.
        if _address_in_use(exc):
            raise StartupError(f"cannot listen on {host}:{port}: address already in use") from None
        raise


def loop_lag_monitor(app: QuartTrio) -> floodgate.LoopLagMonitor | None:
    """The event-loop lag monitor `serve` runs for ``app``, on the app's registry
    (``floodgate_loop_lag_seconds``, ``floodgate_loop_lag_max_seconds``); None for an app the
    chassis did not make (it has no registry to report on)."""
    if "chassis" not in getattr(app, "extensions", {}):
        return None
    return floodgate.LoopLagMonitor(registry=chassis_state(app).registry)


def _address_in_use(exc: BaseException) -> bool:
    return any(isinstance(leaf, OSError) and leaf.errno == errno.EADDRINUSE for leaf in exception_leaves(exc))


def run_service(
    service: str,
    settings_model: type[S],
    env_prefix: str,
    main: Callable[[S, trio.Event], Awaitable[None]],
) -> int:
    """Load settings, configure logs, run ``main(settings, shutdown_event)`` under trio; return an exit code.

    Start-up failures (bad setting, port in use, unreachable dependency raised as StartupError, a
    database pool that cannot open: `floodgate.PoolUnavailable`) print one line ``<service>:
    <cause>`` to stderr and exit 2, so a supervisor can show it as it is. Every service handles a
    database that does not answer at start-up here, the same way.
    """
    try:
        settings = load_settings(settings_model, env_prefix)
    except SettingsError as exc:
        print(f"{service}: invalid settings: {exc}", file=sys.stderr, flush=True)
        return 2
    configure_logging(service=service, log_format=settings.log_format, level=settings.log_level)
    try:
        trio.run(_run_until_signalled, service, settings, main)
    except BaseException as exc:
        startup = _find_startup_error(exc)
        if startup is None:
            raise
        print(f"{service}: {startup}", file=sys.stderr, flush=True)
        return 2
    return 0


def _find_startup_error(exc: BaseException) -> StartupError | None:
    """Nurseries wrap errors in groups; dig out the StartupError that explains a failed start (a
    pool that could not open is one: it only happens while the process opens what it needs)."""
    for leaf in exception_leaves(exc):
        if isinstance(leaf, StartupError):
            return leaf
        if isinstance(leaf, floodgate.PoolUnavailable):
            return StartupError(f"the database does not answer: {leaf}")
    return None


async def _run_until_signalled(service: str, settings: BaseModel, main: Callable) -> None:
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:

        async def watch_signals() -> None:
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for signum in signals:
                    if not shutdown.is_set():
                        log.info("shutdown_requested", signal=signal.Signals(signum).name)
                        shutdown.set()
                    else:
                        log.warning("shutdown_forced", signal=signal.Signals(signum).name)
                        nursery.cancel_scope.cancel()

        nursery.start_soon(watch_signals)
        await main(settings, shutdown)
        nursery.cancel_scope.cancel()
    log.info("stopped")

"""Wiring and serving: settings in, a running gRPC server plus its probe port out.

Why asyncio here when the rest of Floodgate runs on Trio: grpcio's server has an asyncio flavour
(``grpc.aio``) and no Trio one, and redis-py's client speaks asyncio too. This process shares no
toolkit code with the Trio services, so running it natively on asyncio costs nothing and avoids a
bridge (trio-asyncio) in the hot path of every request the gateway admits.
"""

from __future__ import annotations

import asyncio
import errno
import signal

import grpc
import structlog
from envoy.service.ratelimit.v3 import rls_pb2_grpc
from prometheus_client import CollectorRegistry

from chassis import StartupError

from ._config import ConfigError, load_config
from ._grpc import RateLimitServicer
from ._http import start_probe_server
from ._limiter import RateLimiter
from ._metrics import RateLimitMetrics
from ._settings import RateLimitSettings
from ._store import CounterStore, CounterStoreError, MemoryCounterStore, RedisCounterStore

__all__ = ["build_limiter", "serve"]

log = structlog.get_logger("ratelimit")


def build_limiter(settings: RateLimitSettings) -> RateLimiter:
    """Load the descriptor config and open the counter store the settings name."""
    try:
        config = load_config(settings.config)
    except ConfigError as exc:
        raise StartupError(f"invalid rate-limit config: {exc}") from None
    store: CounterStore
    if settings.redis_url:
        store = RedisCounterStore.from_url(
            settings.redis_url,
            max_connections=settings.redis_max_connections,
            pool_timeout=settings.redis_timeout,
            socket_timeout=settings.redis_timeout,
        )
    else:
        store = MemoryCounterStore()
    return RateLimiter(config, store, key_prefix=settings.key_prefix)


async def serve(settings: RateLimitSettings, *, stop: asyncio.Event | None = None) -> None:
    """Serve until ``stop`` is set (or SIGTERM/SIGINT), then drain in-flight calls for ``grace_period``."""
    stop = stop or asyncio.Event()
    limiter = build_limiter(settings)
    if settings.redis_url:
        try:
            await limiter.store.ping()
        except CounterStoreError as exc:
            # Start anyway: Envoy lets traffic through while Redis is away, and /readyz says why.
            log.warning("redis_unreachable_at_start", error=str(exc))
    registry = CollectorRegistry()
    metrics = RateLimitMetrics(registry)
    server = grpc.aio.server(
        maximum_concurrent_rpcs=settings.max_concurrent_rpcs,
        options=[("grpc.so_reuseport", 0)],  # a port in use must fail, not be shared
    )
    rls_pb2_grpc.add_RateLimitServiceServicer_to_server(RateLimitServicer(limiter, metrics), server)
    address = f"{settings.host}:{settings.port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError:
        bound = 0
    if bound == 0:
        raise StartupError(f"cannot listen on {address} (gRPC): address in use or not available")

    async def ready() -> str | None:
        try:
            await asyncio.wait_for(limiter.store.ping(), 1.0)
        except (CounterStoreError, TimeoutError) as exc:
            return f"counter store: {exc or 'timed out'}"
        return None

    try:
        probes = await start_probe_server(settings.host, settings.http_port, registry=registry, ready=ready)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise StartupError(f"cannot listen on {settings.host}:{settings.http_port}: address already in use") from None
        raise
    await server.start()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    log.info("serving", grpc=address, http=f"{settings.host}:{settings.http_port}", config=str(settings.config),
             store=repr(limiter.store), domains=sorted(limiter.config.domains))
    try:
        await stop.wait()
        log.info("shutdown_requested")
    finally:
        probes.close()
        await server.stop(settings.grace_period)
        await limiter.store.aclose()
        log.info("stopped", limiter=repr(limiter))

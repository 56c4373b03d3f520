"""Wiring and serving: settings in, a running gRPC server plus its probe port out.

Which gRPC server (both with the same limiter; ``make bench-gateway`` measures them side by side,
figures in docs/decisions/0002-ratelimit-service.md and docs/benchmarks.md):

- **single_thread** (default, `UnaryGrpcServer`): one thread reads a batch of calls, decides them
  and writes the answers: the shortest round trip and the most decisions per second here.
- **h2** (``RATELIMIT_GRPC_SERVER=h2``): the same loop, with the ``h2`` library's HTTP/2 framing
  (`H2LibraryGrpcConnection`) in place of our own.
- **grpcio** (``RATELIMIT_GRPC_SERVER=grpcio``): grpcio's threaded server hands every call across
  C-core's I/O thread, its completion-queue poller and a worker (and back), each hop a wake-up
  that waits for a core on a busy machine, which makes every round trip longer and caps the rate.
  ``grpc.aio`` measured no better. Kept as the fallback.

Pure-CPU decisions (memory store) cannot use a second core from one process either way (the GIL),
so one thread without hand-offs is the cheapest shape. With Redis, the calls read together are
counted in one pipelined round trip (bounded by ``RATELIMIT_REDIS_TIMEOUT``), and calls arriving
meanwhile form the next batch, where grpcio's server, even with 8 threads, makes one round trip
per call. Calls in progress are bounded (``RATELIMIT_MAX_CONCURRENT_RPCS``:
streams per connection beyond it are refused, which Envoy treats as a failure and lets the
request pass).
"""

from __future__ import annotations

import gc
import signal
import threading
from collections.abc import Callable
from concurrent import futures
from typing import Protocol

import grpc
import structlog
from chassis import StartupError, register_process_metrics
from envoy.service.ratelimit.v3 import rls_pb2_grpc
from prometheus_client import CollectorRegistry

from ._config import ConfigError, load_config
from ._grpc import RateLimitServicer
from ._h2grpc import UnaryGrpcConnection
from ._h2lib import H2LibraryGrpcConnection
from ._h2server import UnaryGrpcServer
from ._http import start_probe_server
from ._limiter import RateLimiter
from ._metrics import RateLimitMetrics
from ._openapi import build_openapi
from ._settings import RateLimitSettings
from ._store import CounterStore, CounterStoreError, MemoryCounterStore, RedisCounterStore
from ._usage import tenant_usage

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


def serve(
    settings: RateLimitSettings, *, stop: threading.Event | None = None, install_signal_handlers: bool = True
) -> None:
    """Serve until ``stop`` is set (or SIGTERM/SIGINT), then drain in-flight calls for ``grace_period``."""
    stop = stop or threading.Event()
    limiter = build_limiter(settings)
    if settings.redis_url:
        try:
            limiter.store.ping()
        except CounterStoreError as exc:
            # Start anyway: Envoy lets traffic through while Redis is away, and /readyz says why.
            log.warning("redis_unreachable_at_start", error=str(exc))
    registry = CollectorRegistry()
    register_process_metrics(registry)
    metrics = RateLimitMetrics(registry)
    servicer = RateLimitServicer(limiter, metrics)
    address = f"{settings.host}:{settings.port}"
    grpc_server = _start_grpc_server(settings, servicer, address, on_round=metrics.loop_round.observe)

    def ready() -> str | None:
        try:
            limiter.store.ping()
        except CounterStoreError as exc:
            return f"counter store: {exc}"
        return None

    try:
        probes = start_probe_server(
            settings.host,
            settings.http_port,
            registry=registry,
            ready=ready,
            usage=lambda tenant: tenant_usage(limiter, settings.usage_domain, tenant),
            openapi=build_openapi(),
        )
    except OSError as exc:
        grpc_server.stop(0)
        raise StartupError(f"cannot listen on {settings.host}:{settings.http_port}: {exc.strerror}") from None
    # Everything allocated so far (modules, protobuf descriptors, the config) lives as long as the
    # process: take it out of the cyclic GC's view, so a full collection, when it comes, walks
    # only what calls allocate instead of pausing a call for the whole heap.
    gc.freeze()
    grpc_server.start()
    if install_signal_handlers:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
    log.info(
        "serving",
        grpc=address,
        http=f"{settings.host}:{settings.http_port}",
        config=str(settings.config),
        store=repr(limiter.store),
        server=settings.grpc_server,
        domains=sorted(limiter.config.domains),
    )
    try:
        while not stop.wait(1.0):  # wake now and then: signal handlers run between waits
            pass
        log.info("shutdown_requested")
    finally:
        probes.close()
        grpc_server.stop(settings.grace_period)
        limiter.store.close()
        log.info("stopped", limiter=repr(limiter))


class _GrpcServer(Protocol):
    def start(self) -> None: ...

    def stop(self, grace: float) -> None:
        """Stop taking calls, finish the ones in progress within ``grace`` seconds, return when done."""
        ...


class _SingleThreadServer:
    """`UnaryGrpcServer` in its own (non-daemon) thread."""

    def __init__(self, server: UnaryGrpcServer) -> None:
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="rls-grpc")

    def start(self) -> None:
        self._thread.start()

    def stop(self, grace: float) -> None:
        if self._thread.is_alive():
            self._server.stop(grace)
            self._thread.join(grace + 2)
            log.info("grpc_server_stopped", statistics=str(self._server.statistics()))
        elif self._thread.ident is None:  # never started: just release the port
            self._server.close()


class _GrpcioServer:
    def __init__(self, server: grpc.Server) -> None:
        self._server = server

    def start(self) -> None:
        self._server.start()

    def stop(self, grace: float) -> None:
        self._server.stop(grace).wait(grace + 1)


def _start_grpc_server(
    settings: RateLimitSettings,
    servicer: RateLimitServicer,
    address: str,
    *,
    on_round: Callable[[float], None] | None = None,
) -> _GrpcServer:
    """Bind the gRPC port (a port in use is a `StartupError`); the caller starts serving.
    ``on_round`` hears each round of our own servers' loop (grpcio has no loop of ours to time)."""
    if settings.grpc_server in ("single_thread", "h2"):
        try:
            return _SingleThreadServer(
                UnaryGrpcServer(
                    settings.host,
                    settings.port,
                    servicer.handle_batch,
                    max_concurrent_streams=settings.max_concurrent_rpcs,
                    connection=(
                        H2LibraryGrpcConnection if settings.grpc_server == "h2" else UnaryGrpcConnection
                    ),
                    on_round=on_round,
                )
            )
        except OSError as exc:
            raise StartupError(f"cannot listen on {address} (gRPC): {exc.strerror}") from None
    threads = settings.threads or (8 if settings.redis_url else 2)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="rls"),
        maximum_concurrent_rpcs=settings.max_concurrent_rpcs,
        options=[("grpc.so_reuseport", 0)],  # a port in use must fail, not be shared
    )
    rls_pb2_grpc.add_RateLimitServiceServicer_to_server(servicer, server)
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError:
        bound = 0
    if bound == 0:
        raise StartupError(f"cannot listen on {address} (gRPC): address in use or not available")
    return _GrpcioServer(server)

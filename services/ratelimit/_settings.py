"""Settings of the rate-limit service, read once at start-up (``RATELIMIT_*`` and ``REDIS_URL``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from chassis import BaseServiceSettings
from pydantic import Field

__all__ = ["RateLimitSettings"]


class RateLimitSettings(BaseServiceSettings):
    """``port`` serves gRPC (Envoy's rate-limit filter); ``http_port`` serves /healthz, /readyz, /metrics
    and, for the gateway, ``GET /v1/usage``."""

    port: int = Field(default=8091, ge=0, le=65535)
    http_port: int = Field(default=8092, ge=0, le=65535)
    config: Path = Path("config/ratelimit.yaml")
    #: counters in Redis when set (limits global across instances), in memory otherwise
    redis_url: str | None = None
    #: gRPC calls in progress at once (per connection with single_thread, which advertises it as
    #: HTTP/2 MAX_CONCURRENT_STREAMS and refuses more streams; per process with grpcio, which
    #: answers more with RESOURCE_EXHAUSTED); Envoy treats either as a failure and lets requests pass
    max_concurrent_rpcs: int = Field(default=1024, ge=1)
    #: which gRPC server answers: ``single_thread`` (services.ratelimit._h2server: reads, decides
    #: and answers in one thread, no hand-offs, one Redis round trip per batch read; the default),
    #: ``h2`` (the same loop with the ``h2`` library's framing instead of our own,
    #: services.ratelimit._h2lib) or ``grpcio`` (grpcio's threaded server, the previous design: the
    #: fallback)
    grpc_server: Literal["single_thread", "h2", "grpcio"] = "single_thread"
    #: worker threads of the grpcio server (unused by single_thread); 0 = 2 with the memory store
    #: (CPU-bound: more threads only contend for the GIL), 8 with Redis (round trips release the GIL)
    threads: int = Field(default=0, ge=0, le=64)
    redis_max_connections: int = Field(default=32, ge=1)
    #: bounds one Redis round trip and the wait for a pooled connection (seconds)
    redis_timeout: float = Field(default=0.1, gt=0)
    key_prefix: str = ""
    #: the descriptor domain whose token and cost budgets ``GET /v1/usage`` reports (the gateway's)
    usage_domain: str = "floodgate"
    grace_period: float = Field(default=2.0, ge=0)

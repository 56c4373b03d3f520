"""What the local cluster runs: one :class:`ChildSpec` per process, built from the settings in one place.

A spec says how to start a process, what it needs before it may start (``needs``), how to tell it is
ready, and what a crash means (``on_crash``). The supervisor knows nothing about PostgreSQL or Envoy;
adding a process to the cluster is one more ``ChildSpec`` in :func:`cluster_children`.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from providers import provider_environment

from .settings import ClusterSettings

__all__ = [
    "ChildSpec",
    "CommandReady",
    "ExitReady",
    "HttpReady",
    "Readiness",
    "cluster_children",
    "replica_name",
    "service_env",
]


@dataclass(frozen=True)
class HttpReady:
    """Ready when ``GET url`` answers 200."""

    url: str


@dataclass(frozen=True)
class CommandReady:
    """Ready when ``argv`` exits 0 (for example ``pg_isready``)."""

    argv: tuple[str, ...]


@dataclass(frozen=True)
class ExitReady:
    """A one-shot step (migrations): ready when the process exits 0; any other exit is a failure."""


Readiness = HttpReady | CommandReady | ExitReady


@dataclass(frozen=True)
class ChildSpec:
    """One supervised process.

    ``on_crash``: ``"restart"`` (with backoff, within the supervisor's restart budget) or
    ``"stop_cluster"`` (the cluster cannot run without it: PostgreSQL, Envoy). ``prepare`` runs once in a
    thread before the first start (``initdb``); ``process_options`` go to ``trio.run_process`` (for
    example ``user=`` to run PostgreSQL unprivileged).
    """

    name: str
    argv: tuple[str, ...]
    ready: Readiness
    env: Mapping[str, str] = field(default_factory=dict)
    needs: tuple[str, ...] = ()
    port: int | None = None
    url: str | None = None
    on_crash: Literal["restart", "stop_cluster"] = "restart"
    stop_signal: int = signal.SIGTERM
    prepare: Callable[[], None] | None = None
    process_options: Mapping[str, object] = field(default_factory=dict)

    @property
    def one_shot(self) -> bool:
        return isinstance(self.ready, ExitReady)


def replica_name(service: str, index: int) -> str:
    """The child name of process ``index`` (1-based) of a replicated service: ``online``, ``online-2``."""
    return service if index == 1 else f"{service}-{index}"


def service_env(settings: ClusterSettings, prefix: str, port: int, *, log_format: str) -> dict[str, str]:
    """Environment of a Python service: its own ``PREFIX_*`` settings plus every provider's settings."""
    env = {
        f"{prefix}HOST": settings.host,
        f"{prefix}PORT": str(port),
        f"{prefix}LOG_FORMAT": log_format,
        "PYTHONUNBUFFERED": "1",
    }
    if prefix != "SIMULATOR_":
        env[f"{prefix}DATABASE_URL"] = settings.effective_database_url
        env[f"{prefix}BUDGET_FILE"] = str(settings.budget.resolve())
        env.update(provider_environment(settings.providers))
        # Dynamic shares: the live processes divide each global limit (docs/budget.md).
        env[f"{prefix}MEMBERSHIP"] = "1" if settings.membership else "0"
    return env


def cluster_children(
    settings: ClusterSettings,
    *,
    python: str = sys.executable,
    envoy_config: Path | None = None,
    log_format: str = "json",
) -> list[ChildSpec]:
    """The local cluster, in start order: PostgreSQL, migrations, simulator, services, Envoy last."""
    host = settings.host
    children: list[ChildSpec] = []
    db_needs: tuple[str, ...] = ()

    if settings.embedded_postgres:
        from .postgres import EmbeddedPostgres

        pg = EmbeddedPostgres(settings.pg_data_dir.resolve(), port=settings.pg_port, host=host)
        children.append(
            ChildSpec(
                "postgres",
                tuple(pg.server_command()),
                ready=CommandReady(tuple(pg.is_ready_command())),
                port=settings.pg_port,
                url=settings.effective_database_url,
                on_crash="stop_cluster",
                # SIGINT is PostgreSQL's "fast" shutdown; SIGTERM ("smart") waits for every client.
                stop_signal=signal.SIGINT,
                prepare=pg.ensure_initialised,
                process_options=pg.process_identity(),
            )
        )
        db_needs = ("postgres",)

    create = ("--create-database",) if settings.embedded_postgres else ()
    children.append(
        ChildSpec(
            "migrate",
            (python, "-m", "cluster.migrate", *create, settings.effective_database_url),
            ready=ExitReady(),
            needs=db_needs,
            env={"PYTHONUNBUFFERED": "1"},
        )
    )

    def service(
        name: str, module: tuple[str, ...], prefix: str, port: int, needs: tuple[str, ...]
    ) -> ChildSpec:
        return ChildSpec(
            name,
            (python, "-m", *module),
            ready=HttpReady(f"http://{host}:{port}/healthz"),
            env=service_env(settings, prefix, port, log_format=log_format),
            needs=needs,
            port=port,
            url=f"http://{host}:{port}",
        )

    simulator = service("simulator", ("services.simulator",), "SIMULATOR_", settings.simulator_port, ())
    children.append(replace(simulator, env={**simulator.env, "SIMULATOR_SEED": str(settings.simulator_seed)}))
    service_needs = ("migrate", "simulator")
    # Several processes of one service (FLOODGATE_ONLINE_REPLICAS...): the first keeps the service's
    # name, the others are `online-2`, `online-3`: the names `floodgate top` groups into one job.
    for i, port in enumerate(settings.online_ports(), start=1):
        name = replica_name("online", i)
        children.append(service(name, ("services.online",), "ONLINE_", port, service_needs))
    for i, port in enumerate(settings.ingest_api_ports(), start=1):
        name = replica_name("ingest-api", i)
        children.append(service(name, ("services.ingest", "api"), "INGEST_API_", port, service_needs))
    for i, port in enumerate(settings.ingest_worker_ports(), start=1):
        children.append(
            service(
                f"ingest-worker-{i}", ("services.ingest", "worker"), "INGEST_WORKER_", port, service_needs
            )
        )
    # The gateway's global rate-limit service (gRPC for Envoy; probes on its HTTP port). A crash is
    # restarted like a service: meanwhile Envoy lets requests through (failure_mode_deny: false).
    # Counters in its memory, or in Redis when REDIS_URL is set in the environment (inherited).
    ratelimit_env = {
        "RATELIMIT_HOST": host,
        "RATELIMIT_PORT": str(settings.ratelimit_port),
        "RATELIMIT_HTTP_PORT": str(settings.ratelimit_http_port),
        # config/ratelimit.yaml with the token budgets of this cluster's budget file (pre-flight writes it)
        "RATELIMIT_CONFIG": str(settings.ratelimit_config_path.resolve()),
        "RATELIMIT_LOG_FORMAT": log_format,
        "PYTHONUNBUFFERED": "1",
    }
    children.append(
        ChildSpec(
            "ratelimit",
            (python, "-m", "services.ratelimit"),
            ready=HttpReady(f"http://{host}:{settings.ratelimit_http_port}/healthz"),
            env=ratelimit_env,
            port=settings.ratelimit_port,
            url=f"grpc://{host}:{settings.ratelimit_port}",
        )
    )

    from .envoy import envoy_binary

    config = envoy_config if envoy_config is not None else settings.envoy_config_path.resolve()
    children.append(
        ChildSpec(
            "envoy",
            (
                str(envoy_binary()),
                "-c",
                str(config),
                "--log-level",
                "warn",
                # No hot-restart shared memory: several Envoys (tests, a second checkout) can coexist.
                "--disable-hot-restart",
            ),
            ready=HttpReady(f"http://127.0.0.1:{settings.envoy_admin_port}/ready"),
            needs=tuple(c.name for c in children if not c.one_shot and c.name != "postgres"),
            port=settings.gateway_port,
            url=f"http://{host}:{settings.gateway_port}",
            on_crash="stop_cluster",
        )
    )
    if settings.prometheus:
        children.append(_prometheus(settings))
    return children


def _prometheus(settings: ClusterSettings) -> ChildSpec:
    """Prometheus on the cluster's scrape configuration and alerting rules (written into
    ``prometheus_dir`` before it starts, from the settings and the budget file), its data beside them.
    Observing is optional: a crash is restarted like a service's, never stops the cluster."""
    import shutil

    from .prometheus import SCRAPE_FILE, write_prometheus_files

    directory = settings.prometheus_dir.resolve()
    address = f"{settings.host}:{settings.prometheus_port}"

    def write_configuration() -> None:
        write_prometheus_files(settings, directory)

    return ChildSpec(
        "prometheus",
        (
            shutil.which("prometheus") or "prometheus",
            f"--config.file={directory / SCRAPE_FILE}",
            f"--storage.tsdb.path={directory / 'data'}",
            f"--web.listen-address={address}",
            "--log.level=warn",
        ),
        ready=HttpReady(f"http://{address}/-/ready"),
        port=settings.prometheus_port,
        url=f"http://{address}",
        prepare=write_configuration,
    )

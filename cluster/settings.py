"""Every port and setting of the local cluster, in one place: ``FLOODGATE_*`` environment variables.

:func:`load_cluster_settings` reads them once, at start-up, into a frozen :class:`ClusterSettings`;
everything else (the supervisor's children, the rendered Envoy config, ``status``, the compose test)
derives from that object. A bad value stops start-up with one line naming the variable::

    floodgate: FLOODGATE_ONLINE_PORT: Input should be less than or equal to 65535 (got '70000')
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from providers import DEPENDENCIES, ProviderSettings, ProviderSettingsError, load_provider_settings
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

__all__ = [
    "DEPENDENCIES",
    "ENV_NAMES",
    "REPLICA_PORT_STEP",
    "ClusterSettings",
    "ClusterSettingsError",
    "load_cluster_settings",
]


class ClusterSettingsError(Exception):
    """A cluster setting is invalid; the message is one line that names the environment variable."""


class ClusterSettings(BaseModel):
    """The local cluster's configuration. Field ``x`` comes from ``FLOODGATE_X`` (see :data:`ENV_NAMES`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = "127.0.0.1"
    gateway_port: int = Field(default=8080, ge=1, le=65535)
    envoy_admin_port: int = Field(default=9901, ge=1, le=65535)
    #: Process ``i`` (1-based) of the online service listens on ``online_port + (i - 1) x
    #: REPLICA_PORT_STEP``; the same for the ingest API. Envoy balances over all of them.
    online_port: int = Field(default=8081, ge=1, le=65535)
    online_replicas: int = Field(default=1, ge=1, le=16)
    ingest_api_port: int = Field(default=8082, ge=1, le=65535)
    ingest_api_replicas: int = Field(default=1, ge=1, le=16)
    #: Worker ``i`` (1-based) listens on ``ingest_worker_port + i - 1`` (probes and metrics only).
    ingest_worker_port: int = Field(default=8083, ge=1, le=65535)
    ingest_workers: int = Field(default=2, ge=0, le=32)
    simulator_port: int = Field(default=8090, ge=1, le=65535)
    simulator_seed: int = 42
    #: The gateway's rate-limit service: gRPC for Envoy, and its /healthz, /readyz, /metrics port.
    ratelimit_port: int = Field(default=8091, ge=1, le=65535)
    ratelimit_http_port: int = Field(default=8092, ge=1, le=65535)
    #: API keys -> tenants for the gateway (FLOODGATE_API_KEYS_FILE); unset: config/api_keys.yaml,
    #: or the committed sample when that does not exist (cluster/api_keys.py).
    api_keys_file: Path | None = None
    pg_port: int = Field(default=5433, ge=1, le=65535)
    data_dir: Path = Path(".data")
    #: An external PostgreSQL; when set, no embedded server runs.
    database_url: str | None = None
    budget: Path = Path("config/budget.toml")
    #: Seconds a child has to become ready before start-up is abandoned.
    ready_timeout: float = Field(default=60.0, gt=0)
    #: Seconds a child has to exit after SIGTERM before it is killed (above the services' own 10 s
    #: grace period for in-flight requests).
    stop_grace: float = Field(default=15.0, gt=0)
    #: Crash policy for service children: restarts allowed within ``restart_window`` seconds.
    max_restarts: int = Field(default=5, ge=0)
    restart_window: float = Field(default=60.0, gt=0)
    #: Run Prometheus as one more child (off by default; needs a ``prometheus`` binary on the PATH),
    #: scraping the cluster with the configuration and rules of ``python -m cluster prometheus-config``.
    prometheus: bool = False
    prometheus_port: int = Field(default=9090, ge=1, le=65535)
    #: Live membership (each service's ``<PREFIX>MEMBERSHIP``): the processes that run divide each
    #: global limit among themselves, and the budget's ``replicas x workers`` is only the planning
    #: figure. Off: each process takes its planned share, so no more processes than the plan may run.
    membership: bool = True
    providers: Mapping[str, ProviderSettings] = Field(default_factory=dict)

    @field_validator("api_keys_file", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("database_url")
    @classmethod
    def _postgres_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if urlsplit(value).scheme not in ("postgresql", "postgres"):
            raise ValueError("must be a postgresql:// URL")
        return value

    # -- derived values ------------------------------------------------------------------------------

    @property
    def embedded_postgres(self) -> bool:
        return self.database_url is None

    @property
    def pg_data_dir(self) -> Path:
        return self.data_dir / "pg"

    @property
    def effective_database_url(self) -> str:
        """The database the services use: ``DATABASE_URL``, or ``floodgate`` on the embedded server."""
        if self.database_url is not None:
            return self.database_url
        return f"postgresql://postgres@{self.host}:{self.pg_port}/floodgate"

    @property
    def envoy_config_path(self) -> Path:
        return self.data_dir / "envoy.yaml"

    @property
    def ratelimit_config_path(self) -> Path:
        """The rate-limit service's limits as run: config/ratelimit.yaml with the budget's token budgets."""
        return self.data_dir / "ratelimit.yaml"

    @property
    def state_file(self) -> Path:
        return self.data_dir / "cluster.json"

    @property
    def prometheus_dir(self) -> Path:
        """Prometheus's configuration and its time-series database (when ``prometheus`` is on)."""
        return self.data_dir / "prometheus"

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "cluster.pid"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "cluster.log"

    def ingest_worker_ports(self) -> list[int]:
        return [self.ingest_worker_port + i for i in range(self.ingest_workers)]

    def online_ports(self) -> list[int]:
        """The ports of the online service's processes, the first on ``online_port``."""
        return [self.online_port + i * REPLICA_PORT_STEP for i in range(self.online_replicas)]

    def ingest_api_ports(self) -> list[int]:
        """The ports of the ingest API's processes, the first on ``ingest_api_port``."""
        return [self.ingest_api_port + i * REPLICA_PORT_STEP for i in range(self.ingest_api_replicas)]

    def processes(self) -> dict[str, tuple[int, str]]:
        """Budget service name -> (the processes this cluster runs of it, the variable that says so)."""
        return {
            "online": (self.online_replicas, "FLOODGATE_ONLINE_REPLICAS"),
            "ingest_api": (self.ingest_api_replicas, "FLOODGATE_INGEST_API_REPLICAS"),
            "ingest_worker": (self.ingest_workers, "FLOODGATE_INGEST_WORKERS"),
        }

    def provider(self, dependency: str) -> ProviderSettings:
        return self.providers[dependency]

    def ports(self) -> list[tuple[int, str]]:
        """Every port the cluster will listen on, with the variable that sets it (pre-flight checks)."""
        ports = [
            (self.gateway_port, "FLOODGATE_GATEWAY_PORT"),
            (self.envoy_admin_port, "FLOODGATE_ENVOY_ADMIN_PORT"),
            *_replica_ports(self.online_ports(), "FLOODGATE_ONLINE_PORT", "online"),
            *_replica_ports(self.ingest_api_ports(), "FLOODGATE_INGEST_API_PORT", "ingest API"),
            (self.simulator_port, "FLOODGATE_SIMULATOR_PORT"),
            (self.ratelimit_port, "FLOODGATE_RATELIMIT_PORT"),
            (self.ratelimit_http_port, "FLOODGATE_RATELIMIT_HTTP_PORT"),
        ]
        for i, port in enumerate(self.ingest_worker_ports(), start=1):
            ports.append((port, f"FLOODGATE_INGEST_WORKER_PORT (+{i - 1}, worker {i})"))
        if self.embedded_postgres:
            ports.append((self.pg_port, "FLOODGATE_PG_PORT"))
        if self.prometheus:
            ports.append((self.prometheus_port, "FLOODGATE_PROMETHEUS_PORT"))
        return ports

    def check_distinct_ports(self) -> None:
        seen: dict[int, str] = {}
        for port, var in self.ports():
            if port > 65535:
                raise ClusterSettingsError(f"{var}: port {port} is above 65535")
            if port in seen:
                raise ClusterSettingsError(f"{var} and {seen[port]} both use port {port}")
            seen[port] = var


#: Process ``i`` of a replicated service listens ``(i - 1) x REPLICA_PORT_STEP`` above its first port:
#: 8081, 8181, 8281 for the online service by default, clear of the other services' ports.
REPLICA_PORT_STEP = 100


def _replica_ports(ports: list[int], var: str, service: str) -> list[tuple[int, str]]:
    first = [(ports[0], var)]
    return first + [
        (port, f"{var} (+{i * REPLICA_PORT_STEP}, {service} process {i + 1})")
        for i, port in enumerate(ports[1:], start=1)
    ]


#: Field name -> environment variable. Provider variables are ``FLOODGATE_<DEP>_BASE_URL`` etc.
ENV_NAMES = {
    name: ("DATABASE_URL" if name == "database_url" else f"FLOODGATE_{name.upper()}")
    for name in ClusterSettings.model_fields
    if name != "providers"
}


def load_cluster_settings(environ: Mapping[str, str] | None = None) -> ClusterSettings:
    """Read and validate the cluster settings; raise :class:`ClusterSettingsError` naming the variable."""
    env = os.environ if environ is None else environ
    raw: dict[str, object] = {name: env[var] for name, var in ENV_NAMES.items() if var in env}
    try:
        base = ClusterSettings.model_validate(raw)
    except ValidationError as exc:
        raise ClusterSettingsError(_describe(exc, raw, ENV_NAMES)) from None

    # Unset providers are the cluster's own simulator (the services append /v1/... to the URL).
    simulator = urlunsplit(("http", f"{base.host}:{base.simulator_port}", "", "", ""))
    try:
        providers = load_provider_settings(DEPENDENCIES, environ=env, default_base_url=simulator)
    except ProviderSettingsError as exc:
        raise ClusterSettingsError(str(exc)) from None
    settings = base.model_copy(update={"providers": providers})
    settings.check_distinct_ports()
    if settings.prometheus and shutil.which("prometheus") is None:
        raise ClusterSettingsError(
            "FLOODGATE_PROMETHEUS: no `prometheus` binary on the PATH (Debian: apt-get install prometheus; "
            "or unset FLOODGATE_PROMETHEUS)"
        )
    return settings


def _describe(exc: ValidationError, raw: Mapping[str, object], names: Mapping[str, str]) -> str:
    err = exc.errors()[0]
    field = str(err["loc"][0]) if err["loc"] else "?"
    var = names.get(field, field)
    got = f" (got {raw[field]!r})" if field in raw else ""
    message = err["msg"].removeprefix("Value error, ")
    more = f" (and {len(exc.errors()) - 1} more problem(s))" if len(exc.errors()) > 1 else ""
    return f"{var}: {message}{got}{more}"

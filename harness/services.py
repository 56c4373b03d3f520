"""The project's services as child processes on free loopback ports, and the whole local cluster.

Each ``start_*`` spawns one service (`harness.processes.Proc`, logging to ``log_dir``), configured
only by environment variables, as the cluster supervisor does it. The simulator is waited on (it is
a dependency of whatever starts next); the online service and the ingest processes are returned at
once, for the caller to wait on ``/healthz`` or ``/readyz`` (several may be starting together).
`start_ratelimit` and `start_upstream` are ``with`` blocks that wait until they answer.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx

from . import REPO_ROOT
from .ports import free_port, free_ports
from .processes import Proc, run_process, spawn
from .ready import wait_until

__all__ = [
    "CLUSTER_PORTS",
    "cluster_env",
    "metric",
    "set_behaviour",
    "start_ingest_api",
    "start_ingest_worker",
    "start_online",
    "start_ratelimit",
    "start_simulator",
    "start_upstream",
    "wait_cluster_ready",
]

PY = sys.executable
DEFAULT_BUDGET = REPO_ROOT / "config" / "budget.toml"


# -- the simulator (services/simulator) ---------------------------------------------------------------


def start_simulator(
    log_dir: Path, *, name: str = "simulator", env: Mapping[str, str] | None = None, within: float = 20.0
) -> Proc:
    """The provider simulator, waited on until ``/healthz`` answers; only ``env`` sets its
    ``SIMULATOR_*`` settings, not this process's."""
    port = free_port()
    proc = spawn(
        name,
        [PY, "-m", "services.simulator"],
        log_dir=log_dir,
        env={"SIMULATOR_PORT": str(port), "SIMULATOR_LOG_FORMAT": "json", **(env or {})},
        ports={"http": port},
        drop_env=("SIMULATOR_",),
    )
    try:
        proc.wait_http("/healthz", within=within)
    except BaseException:
        proc.stop()
        raise
    return proc


def set_behaviour(simulator: Proc, behaviour: Mapping[str, Any]) -> None:
    """Change the simulator's behaviour through its admin API."""
    response = httpx.put(simulator.url + "/admin/behaviour", json=dict(behaviour), timeout=5)
    response.raise_for_status()


def metric(proc: Proc, name: str, labels: str = "") -> float:
    """Sum of a counter/gauge's samples on a service's /metrics (``labels`` is a substring filter)."""
    text = httpx.get(proc.url + "/metrics", timeout=5).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and labels in line and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


# -- the online service -------------------------------------------------------------------------------


def start_online(
    log_dir: Path,
    *,
    database_url: str,
    provider_url: str,
    name: str = "online",
    settings: Mapping[str, str] | None = None,
) -> Proc:
    """``python -m services.online`` with every provider at ``provider_url``; only its own settings
    and these (``ONLINE_*`` ``settings``) apply, not ``ONLINE_*``/``FLOODGATE_*`` of this process."""
    port = free_port()
    env = {
        "ONLINE_PORT": str(port),
        "ONLINE_DATABASE_URL": database_url,
        "ONLINE_LOG_FORMAT": "json",
        **{f"FLOODGATE_{dep}_BASE_URL": provider_url for dep in ("LLM", "EMBED", "RERANK", "SEARCH")},
        **(settings or {}),
    }
    return spawn(
        name,
        [PY, "-m", "services.online"],
        log_dir=log_dir,
        env=env,
        ports={"http": port},
        drop_env=("ONLINE_", "FLOODGATE_"),
    )


# -- the ingest API and workers -----------------------------------------------------------------------


def start_ingest_worker(name: str, dsn: str, simulator: Proc, log_dir: Path, **settings: object) -> Proc:
    """An ingest worker with short poll, reap, retry and grace intervals (``settings`` override any
    ``INGEST_WORKER_*`` by its lower-case name)."""
    port = free_port()
    env = {
        "INGEST_WORKER_DATABASE_URL": dsn,
        "INGEST_WORKER_PORT": str(port),
        "INGEST_WORKER_WORKER_ID": name,
        "INGEST_WORKER_BUDGET_FILE": str(DEFAULT_BUDGET),
        "INGEST_WORKER_LOG_FORMAT": "json",
        "INGEST_WORKER_POLL_INTERVAL": "0.2",
        "INGEST_WORKER_REAP_INTERVAL": "0.2",
        "INGEST_WORKER_RETRY_BACKOFF_BASE": "0.1",
        "INGEST_WORKER_GRACE_PERIOD": "2",
        "FLOODGATE_EMBED_BASE_URL": simulator.url,
        "FLOODGATE_FETCH_BASE_URL": simulator.url,
    }
    env.update({f"INGEST_WORKER_{k.upper()}": str(v) for k, v in settings.items()})
    return spawn(
        name, [PY, "-m", "services.ingest", "worker"], log_dir=log_dir, env=env, ports={"http": port}
    )


def start_ingest_api(dsn: str, log_dir: Path, *, name: str = "ingest-api", **settings: object) -> Proc:
    """The ingest API (``settings`` override any ``INGEST_API_*`` by its lower-case name)."""
    port = free_port()
    env = {
        "INGEST_API_DATABASE_URL": dsn,
        "INGEST_API_PORT": str(port),
        "INGEST_API_BUDGET_FILE": str(DEFAULT_BUDGET),
        "INGEST_API_LOG_FORMAT": "json",
        "INGEST_API_GRACE_PERIOD": "2",
    }
    env.update({f"INGEST_API_{k.upper()}": str(v) for k, v in settings.items()})
    return spawn(name, [PY, "-m", "services.ingest", "api"], log_dir=log_dir, env=env, ports={"http": port})


# -- the rate-limit service and the stand-in upstream ------------------------------------------------


@contextlib.contextmanager
def start_ratelimit(
    log_dir: Path,
    *,
    config: Path | None = None,
    redis_url: str | None = None,
    name: str = "ratelimit",
    extra_env: Mapping[str, str] | None = None,
    ports: Mapping[str, int] | None = None,
) -> Iterator[Proc]:
    """services/ratelimit (gRPC on ``ports["grpc"]``, health on ``ports["http"]``; free ones unless
    given), waited on until both answer."""
    grpc_port, http_port = (ports["grpc"], ports["http"]) if ports else (free_port(), free_port())
    env = {
        "RATELIMIT_HOST": "127.0.0.1",
        "RATELIMIT_PORT": str(grpc_port),
        "RATELIMIT_HTTP_PORT": str(http_port),
        "RATELIMIT_CONFIG": str(config or REPO_ROOT / "config" / "ratelimit.yaml"),
        "RATELIMIT_LOG_FORMAT": "json",
        **(extra_env or {}),
    }
    if redis_url:
        env["RATELIMIT_REDIS_URL"] = redis_url
    with run_process(
        name,
        [PY, "-m", "services.ratelimit"],
        log_dir=log_dir,
        env=env,
        ports={"grpc": grpc_port, "http": http_port},
    ) as proc:
        proc.wait_http("/healthz", within=10)
        proc.wait_tcp(grpc_port, within=10)
        yield proc


@contextlib.contextmanager
def start_upstream(
    log_dir: Path, *, name: str = "upstream", env: Mapping[str, str] | None = None
) -> Iterator[Proc]:
    """The stand-in upstream (harness/upstream.py: echo / slow / fail by env and path)."""
    port = free_port()
    with run_process(
        name,
        [PY, "-m", "harness.upstream", str(port)],
        log_dir=log_dir,
        env={"UPSTREAM_NAME": name, **(env or {})},
        ports={"http": port},
    ) as proc:
        proc.wait_http("/healthz", within=10)
        yield proc


# -- the whole local cluster (python -m cluster up) ---------------------------------------------------

#: the port settings of the cluster (FLOODGATE_<name>_PORT); the ingest workers' is apart
CLUSTER_PORTS = (
    "GATEWAY",
    "ENVOY_ADMIN",
    "ONLINE",
    "INGEST_API",
    "SIMULATOR",
    "RATELIMIT",
    "RATELIMIT_HTTP",
    "PG",
)


def cluster_env(data_dir: Path, *, ready_timeout: float, **settings: str) -> dict[str, str]:
    """The environment for ``python -m cluster`` on free ports with its data in ``data_dir``: this
    process's environment without any ``FLOODGATE_*``, ``DATABASE_URL`` or ``REDIS_URL`` (the
    rate-limit service must not count in a Redis that happens to run here), one ingest worker, and
    ``settings`` (``FLOODGATE_*`` names) on top.

    The ingest workers get consecutive ports from FLOODGATE_INGEST_WORKER_PORT, so that one is picked
    with its neighbour free as well."""
    ports = free_ports(len(CLUSTER_PORTS))
    worker = free_port()
    while worker in ports or worker + 1 in ports:
        worker = free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("FLOODGATE_") and k not in ("DATABASE_URL", "REDIS_URL")
    }
    env.update({f"FLOODGATE_{name}_PORT": str(port) for name, port in zip(CLUSTER_PORTS, ports, strict=True)})
    env.update(
        {
            "FLOODGATE_INGEST_WORKER_PORT": str(worker),
            "FLOODGATE_INGEST_WORKERS": "1",
            "FLOODGATE_DATA_DIR": str(data_dir),
            "FLOODGATE_READY_TIMEOUT": f"{ready_timeout:g}",
            "NO_COLOR": "1",
            **settings,
        }
    )
    return env


def wait_cluster_ready(
    process: subprocess.Popen, data_dir: Path, log: Path, *, within: float
) -> dict[str, Any]:
    """Until the cluster's ``cluster.json`` (in ``data_dir``) says ready; that state."""
    state_file = data_dir / "cluster.json"
    state: dict[str, Any] = {}

    def ready() -> bool:
        nonlocal state
        with contextlib.suppress(FileNotFoundError, json.JSONDecodeError):
            state = json.loads(state_file.read_text())
        return state.get("status") == "ready"

    wait_until(
        ready,
        within=within,
        interval=0.1,
        what="the cluster",
        process=process,
        log=lambda: log.read_text(errors="replace") if log.exists() else "",
    )
    return state

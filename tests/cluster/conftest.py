"""Fixtures for running ``python -m cluster`` as a subprocess on free ports, with its data in tmp."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, free_port


def _free_ports(n: int) -> list[int]:
    ports: set[int] = set()
    while len(ports) < n:
        ports.add(free_port())
    return sorted(ports)


@pytest.fixture
def cluster_env(tmp_path: Path, realtime) -> dict[str, str]:
    """Environment for a cluster that uses only free ports and ``tmp_path/data``.

    The ingest workers get consecutive ports from FLOODGATE_INGEST_WORKER_PORT, so that one is picked
    with its neighbour free as well.
    """
    gateway, admin, online, ingest_api, upstreams, ratelimit, ratelimit_http, pg = _free_ports(8)
    worker = free_port()
    while worker + 1 in (gateway, admin, online, ingest_api, upstreams, ratelimit, ratelimit_http, pg):
        worker = free_port()
    # (REDIS_URL too: the rate-limit service must not count in a Redis that happens to run here)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("FLOODGATE_") and k not in ("DATABASE_URL", "REDIS_URL")
    }
    env.update(
        {
            "FLOODGATE_GATEWAY_PORT": str(gateway),
            "FLOODGATE_ENVOY_ADMIN_PORT": str(admin),
            "FLOODGATE_ONLINE_PORT": str(online),
            "FLOODGATE_INGEST_API_PORT": str(ingest_api),
            "FLOODGATE_INGEST_WORKER_PORT": str(worker),
            "FLOODGATE_INGEST_WORKERS": "1",
            "FLOODGATE_UPSTREAMS_PORT": str(upstreams),
            "FLOODGATE_RATELIMIT_PORT": str(ratelimit),
            "FLOODGATE_RATELIMIT_HTTP_PORT": str(ratelimit_http),
            "FLOODGATE_PG_PORT": str(pg),
            "FLOODGATE_DATA_DIR": str(tmp_path / "data"),
            "FLOODGATE_BUDGET": str(REPO_ROOT / "config" / "budget.toml"),
            "FLOODGATE_READY_TIMEOUT": "40",
            "NO_COLOR": "1",
        }
    )
    return env


@pytest.fixture
def cluster_command() -> list[str]:
    return [sys.executable, "-m", "cluster"]

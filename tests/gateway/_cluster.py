"""The local cluster as `make up` runs it (embedded PostgreSQL, simulator, online service, ingest API and
worker, the rate-limit service, Envoy on the rendered config with the sample keys), on free ports, for
tests that drive it only through the gateway."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, free_port

__all__ = ["ACME", "GLOBEX", "run_cluster"]

ACME = {"x-api-key": "fg_dev_acme_8c1f2a7d4e6b"}  # config/api_keys.sample.yaml
GLOBEX = {"x-api-key": "fg_dev_globex_5b9e0d3c7a21"}

_PORTS = ("GATEWAY", "ENVOY_ADMIN", "ONLINE", "INGEST_API", "UPSTREAMS", "RATELIMIT", "RATELIMIT_HTTP", "PG")


@contextlib.contextmanager
def run_cluster(
    base: Path, *, api_keys_file: Path | None = None, ready_timeout: float = 120.0
) -> Iterator[dict[str, object]]:
    """``python -m cluster up`` with its data under ``base`` (and the sample keys unless
    ``api_keys_file`` is given); yields ``{"gateway": url, "data": dir}`` once the cluster reports
    ready, and stops it (SIGINT, then SIGKILL) when the block ends."""
    data = base / "data"
    ports: dict[str, int] = {}
    while len(set(ports.values())) < len(_PORTS):
        ports = {name: free_port() for name in _PORTS}
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("FLOODGATE_") and k not in ("DATABASE_URL", "REDIS_URL")
    }
    env.update({f"FLOODGATE_{name}_PORT": str(port) for name, port in ports.items()})
    env.update(
        {
            "FLOODGATE_INGEST_WORKER_PORT": str(free_port()),
            "FLOODGATE_INGEST_WORKERS": "1",
            "FLOODGATE_DATA_DIR": str(data),
            "FLOODGATE_READY_TIMEOUT": "60",
            # the sample keys, whatever config/api_keys.yaml this checkout has
            "FLOODGATE_API_KEYS_FILE": str(api_keys_file or REPO_ROOT / "config" / "api_keys.sample.yaml"),
            "NO_COLOR": "1",
        }
    )
    log = base / "cluster.out"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cluster", "up"],
            env=env,
            cwd=REPO_ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + ready_timeout
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the cluster exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
            with contextlib.suppress(FileNotFoundError, json.JSONDecodeError):
                if json.loads((data / "cluster.json").read_text()).get("status") == "ready":
                    break
            if time.monotonic() > deadline:
                pytest.fail(f"the cluster was not ready:\n{log.read_text()[-4000:]}")
            time.sleep(0.1)
        yield {"gateway": f"http://127.0.0.1:{ports['GATEWAY']}", "data": data}
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

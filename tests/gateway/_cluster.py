"""The local cluster as `make up` runs it (embedded PostgreSQL, simulator, online service, ingest API and
worker, the rate-limit service, Envoy on the rendered config with the sample keys), on free ports, for
tests that drive it only through the gateway."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from harness import REPO_ROOT
from harness.services import cluster_env, wait_cluster_ready

__all__ = ["ACME", "GLOBEX", "run_cluster"]

ACME = {"x-api-key": "fg_dev_acme_8c1f2a7d4e6b"}  # config/api_keys.sample.yaml
GLOBEX = {"x-api-key": "fg_dev_globex_5b9e0d3c7a21"}


@contextlib.contextmanager
def run_cluster(
    base: Path, *, api_keys_file: Path | None = None, ready_timeout: float = 120.0, **settings: str
) -> Iterator[dict[str, object]]:
    """``python -m cluster up`` with its data under ``base`` (and the sample keys unless
    ``api_keys_file`` is given; ``settings``: more ``FLOODGATE_*`` variables); yields
    ``{"gateway": url, "data": dir}`` once the cluster reports ready, and stops it (SIGINT, then
    SIGKILL) when the block ends."""
    data = base / "data"
    # the sample keys, whatever config/api_keys.yaml this checkout has
    keys = api_keys_file or REPO_ROOT / "config" / "api_keys.sample.yaml"
    env = cluster_env(data, ready_timeout=60, FLOODGATE_API_KEYS_FILE=str(keys), **settings)
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
        wait_cluster_ready(proc, data, log, within=ready_timeout)
        yield {"gateway": f"http://127.0.0.1:{env['FLOODGATE_GATEWAY_PORT']}", "data": data}
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

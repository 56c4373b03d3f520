"""``up --detach`` / ``status`` / ``down`` (make start / status / down), against an external PostgreSQL
(``DATABASE_URL``: the test session's server), so no embedded server is started here.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import psutil
import pytest

from harness import REPO_ROOT

from ._procs import wait_all_gone

pytestmark = [pytest.mark.realtime, pytest.mark.timeout(180)]  # each command may take up to 90 s


def _run(
    command: list[str], env: dict[str, str], *args: str, timeout: float = 90
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*command, *args],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_detach_status_down(cluster_env: dict[str, str], cluster_command, fresh_database_url: str) -> None:
    cluster_env["DATABASE_URL"] = fresh_database_url
    data = Path(cluster_env["FLOODGATE_DATA_DIR"])
    pids: list[int] = []
    try:
        up = _run(cluster_command, cluster_env, "up", "--detach")
        assert up.returncode == 0, up.stdout + up.stderr + (data / "cluster.log").read_text()[-3000:]
        assert "floodgate: cluster started" in up.stdout
        assert "postgres" not in [line.split()[0] for line in up.stdout.splitlines() if line.strip()]
        state = json.loads((data / "cluster.json").read_text())
        supervisor = state["supervisor_pid"]
        pids = [supervisor, *(c["pid"] for c in state["children"] if c["pid"])]
        assert psutil.pid_exists(supervisor)
        assert (data / "cluster.log").stat().st_size > 0

        again = _run(cluster_command, cluster_env, "up", "--detach")
        assert again.returncode == 1
        assert again.stderr == (
            f"floodgate: a cluster is already running (pid {supervisor}, {data / 'cluster.pid'}); "
            "stop it with `make down`\n"
        )

        status = _run(cluster_command, cluster_env, "status")
        assert status.returncode == 0
        rows = {line.split()[0]: line for line in status.stdout.splitlines()[2:]}
        assert set(rows) == {
            "migrate",
            "simulator",
            "online",
            "ingest-api",
            "ingest-worker-1",
            "ratelimit",
            "envoy",
        }
        assert all(" yes " in rows[name] for name in rows if name != "migrate")

        down = _run(cluster_command, cluster_env, "down")
        assert down.returncode == 0
        assert down.stdout == f"floodgate: cluster stopped (supervisor pid {supervisor})\n"
        assert wait_all_gone(pids, timeout=5) == []
        after = _run(cluster_command, cluster_env, "status")
        assert after.returncode == 3 and "cluster: not running (last status: stopped" in after.stdout
    finally:
        for pid in pids:
            try:
                os.killpg(pid, signal.SIGKILL) if pid != pids[0] else os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

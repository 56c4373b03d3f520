"""The real local cluster: ``python -m cluster up`` on free ports with its data in tmp — embedded
PostgreSQL, migrations, the simulator, the services, Envoy. Through the gateway every service's
/healthz answers; the simulator's chat API is switched to 100% 503 through its admin API and the change
is read back from /admin/stats; a killed service is restarted; Ctrl-C leaves no process behind.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import psutil
import pytest

from harness import REPO_ROOT
from harness.services import wait_cluster_ready

from ._procs import wait_all_gone

pytestmark = [pytest.mark.realtime, pytest.mark.timeout(180)]  # its own waits add up to more than 2 minutes


def _family(pids: list[int]) -> list[int]:
    """The children and everything in their process groups (PostgreSQL's backends...)."""
    members = set(pids)
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) in pids:
                members.add(proc.pid)
        except (ProcessLookupError, psutil.Error):
            pass
    return sorted(members)


def _child(state: dict, name: str) -> dict:
    return next(c for c in state["children"] if c["name"] == name)


def test_the_whole_cluster_through_the_gateway(
    cluster_env: dict[str, str], cluster_command, tmp_path: Path
) -> None:
    data = Path(cluster_env["FLOODGATE_DATA_DIR"])
    log = tmp_path / "cluster.out"
    gateway = f"http://127.0.0.1:{cluster_env['FLOODGATE_GATEWAY_PORT']}"
    simulator = f"http://127.0.0.1:{cluster_env['FLOODGATE_SIMULATOR_PORT']}"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [*cluster_command, "up"], env=cluster_env, cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT
        )
    family: list[int] = []
    try:
        state = wait_cluster_ready(proc, data, log, within=60)
        names = [c["name"] for c in state["children"]]
        assert names == [
            "postgres",
            "migrate",
            "simulator",
            "online",
            "ingest-api",
            "ingest-worker-1",
            "ratelimit",
            "envoy",
        ]
        family = _family([c["pid"] for c in state["children"] if c["pid"]])
        assert (data / "cluster.pid").read_text().strip() == str(proc.pid)
        assert (data / "pg" / "PG_VERSION").exists()  # the embedded server's data lives in the data dir

        with httpx.Client(timeout=5) as http:
            # Each service's /healthz, through Envoy.
            for path, service in [
                ("/healthz/online", "online"),
                ("/healthz/ingest", "ingest-api"),
                ("/healthz/ingest-worker", "ingest-worker"),
                ("/healthz/simulator", "simulator"),
            ]:
                response = http.get(gateway + path, headers={"x-request-id": f"rid-{service}"})
                assert response.status_code == 200, (path, response.text)
                assert response.json()["service"] == service
                assert response.headers["x-request-id"] == f"rid-{service}"  # preserved end to end
            # The simulator's admin API is not reachable through the gateway.
            assert http.get(gateway + "/admin/stats").status_code == 404

            # The simulator's LLM: 100% 503, set at run time and read back from /admin/stats.
            put = http.put(
                simulator + "/admin/behaviour", json={"chat": {"error_rate": 1.0, "error_status": 503}}
            )
            assert put.status_code == 200, put.text
            assert put.json()["chat"]["error_rate"] == 1.0
            chat = http.post(
                simulator + "/v1/chat/completions",
                json={"model": "sim-chat-1", "messages": [{"role": "user", "content": "hello"}]},
            )
            assert chat.status_code == 503
            stats = http.get(simulator + "/admin/stats").json()
            assert stats["apis"]["chat"]["requests"] == 1
            assert stats["apis"]["chat"]["statuses"] == {"503": 1}
            assert http.get(simulator + "/admin/behaviour").json()["chat"]["error_rate"] == 1.0

            # Crash policy: a killed service is restarted and answers through the gateway again.
            online_pid = _child(state, "online")["pid"]
            os.kill(online_pid, signal.SIGKILL)
            deadline = time.monotonic() + 20
            while True:
                state = json.loads((data / "cluster.json").read_text())
                online = _child(state, "online")
                if online["ready"] and online["pid"] not in (None, online_pid):
                    break
                assert time.monotonic() < deadline, "online was not restarted"
                time.sleep(0.1)
            assert online["restarts"] == 1
            assert http.get(gateway + "/healthz/online").status_code == 200
            family = sorted({*family, *_family([online["pid"]])})

        # `status` reads the state file and probes each process.
        status = subprocess.run(
            [*cluster_command, "status"],
            env=cluster_env,
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert status.returncode == 0, status.stdout
        assert "cluster: ready" in status.stdout
        envoy_row = next(line for line in status.stdout.splitlines() if line.startswith("envoy"))
        assert cluster_env["FLOODGATE_GATEWAY_PORT"] in envoy_row and " yes " in envoy_row

        # Ctrl-C: everything stops, in order, and nothing is left.
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
        assert wait_all_gone(family, timeout=5) == []
        assert not (data / "cluster.pid").exists()
        assert json.loads((data / "cluster.json").read_text())["status"] == "stopped"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in family:
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

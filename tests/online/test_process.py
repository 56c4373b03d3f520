"""``python -m services.online`` as a process: start-up checks, readiness, a real request, SIGTERM.

The simulator runs as its own process too, so this is real HTTP between processes, configured
only by environment variables (as the cluster supervisor does it).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from tests.conftest import REPO_ROOT, free_port


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ONLINE_", "FLOODGATE_", "UPSTREAMS_"))}
    env.update(extra, ONLINE_LOG_FORMAT="json", UPSTREAMS_LOG_FORMAT="json")
    return env


def _wait_ready(url: str, proc: subprocess.Popen, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(
                f"process exited with {proc.returncode}: {proc.stderr.read().decode()[-2000:]}"
            )
        try:
            if httpx.get(url, timeout=0.5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"{url} not ready within {timeout}s")


@pytest.mark.realtime
def test_bad_budget_file_stops_start_up_with_one_clear_message() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "services.online"],
        env=_env(ONLINE_BUDGET_FILE="/nonexistent/budget.toml"),
        cwd=REPO_ROOT,
        capture_output=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert b"online: invalid /nonexistent/budget.toml" in result.stderr
    assert b"file not found" in result.stderr


@pytest.mark.realtime
def test_the_service_process_serves_and_stops_gracefully(database_url) -> None:
    sim_port, online_port = free_port(), free_port()
    sim_url = f"http://127.0.0.1:{sim_port}"
    simulator = subprocess.Popen(
        [sys.executable, "-m", "services.upstreams"],
        env=_env(UPSTREAMS_PORT=str(sim_port)),
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    providers = {f"FLOODGATE_{dep}_BASE_URL": sim_url for dep in ("LLM", "EMBED", "RERANK", "SEARCH")}
    online = subprocess.Popen(
        [sys.executable, "-m", "services.online"],
        env=_env(ONLINE_PORT=str(online_port), ONLINE_DATABASE_URL=database_url, **providers),
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        _wait_ready(f"{sim_url}/healthz", simulator)
        _wait_ready(f"http://127.0.0.1:{online_port}/readyz", online)
        response = httpx.post(
            f"http://127.0.0.1:{online_port}/v1/nexus-assess/assessments",
            json={"subject": "Aldercrest Robotics", "rubric": [{"id": "growth", "description": "growth"}]},
            headers={"x-floodgate-tenant": "acme"},
            timeout=10,
        )
        assert response.status_code == 200, response.text
        assert response.json()["scores"][0]["id"] == "growth"
        online.send_signal(signal.SIGTERM)
        assert online.wait(timeout=15) == 0
    finally:
        for proc in (online, simulator):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()

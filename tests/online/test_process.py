"""``python -m services.online`` as a process: start-up checks, readiness, a real request, SIGTERM.

The simulator runs as its own process too, so this is real HTTP between processes, configured
only by environment variables (as the cluster supervisor does it; harness/services.py).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import httpx
import pytest

from harness import REPO_ROOT
from harness.services import start_online, start_simulator


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ONLINE_", "FLOODGATE_", "SIMULATOR_"))}
    env.update(extra, ONLINE_LOG_FORMAT="json")
    return env


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
def test_the_service_process_serves_and_stops_gracefully(database_url, tmp_path) -> None:
    simulator = start_simulator(tmp_path)
    online = start_online(tmp_path, database_url=database_url, provider_url=simulator.url)
    try:
        online.wait_http("/readyz")
        response = httpx.post(
            f"{online.url}/v1/nexus-assess/assessments",
            json={"subject": "Aldercrest Robotics", "rubric": [{"id": "growth", "description": "growth"}]},
            headers={"x-floodgate-tenant": "acme"},
            timeout=10,
        )
        assert response.status_code == 200, response.text
        assert response.json()["scores"][0]["id"] == "growth"
        online.signal(signal.SIGTERM)
        assert online.process.wait(timeout=15) == 0
    finally:
        online.stop()
        simulator.stop()

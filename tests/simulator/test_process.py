"""``python -m services.simulator`` as a real process: settings from the environment, real HTTP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from functools import partial

import httpx
import pytest

from harness import REPO_ROOT
from harness.ports import free_port
from harness.ready import http_ok, wait_until

pytestmark = pytest.mark.realtime


def start(env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "services.simulator"],
        cwd=REPO_ROOT,
        env={**os.environ, "SIMULATOR_LOG_LEVEL": "warning", **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_served_simulator_answers_and_stops_on_sigterm(tmp_path) -> None:
    port = free_port()
    behaviour = tmp_path / "behaviour.toml"
    behaviour.write_text("[chat]\nerror_rate = 1.0\n[search.latency]\nfixed_ms = 10\n")
    env = {"SIMULATOR_BEHAVIOUR": str(behaviour), "SIMULATOR_SEED": "7", "SIMULATOR_NICE": "3"}
    proc = start({"SIMULATOR_PORT": str(port), **env})
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(partial(http_ok, f"{base}/healthz"), within=15, what="the simulator", process=proc)
        # SIMULATOR_NICE: its CPU priority, 3 below this process's (19 is the lowest there is)
        assert os.getpriority(os.PRIO_PROCESS, proc.pid) == min(19, os.getpriority(os.PRIO_PROCESS, 0) + 3)
        with httpx.Client(base_url=base, timeout=5) as client:
            chat = client.post(
                "/v1/chat/completions", json={"model": "m", "messages": [{"role": "user", "content": "hi"}]}
            )
            assert chat.status_code == 503  # from the behaviour file
            client.put("/admin/behaviour", json={"chat": {"error_rate": 0.0}})
            with client.stream(
                "POST",
                "/v1/chat/completions",
                json={
                    "model": "m",
                    "stream": True,
                    "messages": [{"role": "user", "content": "Question: hi there"}],
                },
            ) as stream:
                lines = [line for line in stream.iter_lines() if line]
            assert lines[-1] == "data: [DONE]"
            assert json.loads(lines[0][6:])["object"] == "chat.completion.chunk"
            search = client.get("/v1/search", params={"q": "vector databases", "count": 3}).json()
            assert len(search["results"]) == 3
            # A refused request must leave the keep-alive connection usable for the next one
            # (hypercorn stalls a connection answered before its request body was read).
            client.put("/admin/behaviour", json={"embeddings": {"error_rate": 1.0}})
            for _ in range(60):
                refused = client.post("/v1/embeddings", json={"model": "m", "input": "x " * 200}, timeout=2)
                assert refused.status_code == 503
                assert client.get("/admin/behaviour", timeout=2).status_code == 200
            stats = client.get("/admin/stats").json()
            assert stats["seed"] == 7
            assert stats["apis"]["chat"]["statuses"] == {"200": 1, "503": 1}
            assert stats["apis"]["chat"]["current_concurrent"] == 0
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0


def test_bad_behaviour_file_stops_start_up_naming_the_variable(tmp_path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"chat": {"error_rate": 3}}))
    proc = start({"SIMULATOR_PORT": str(free_port()), "SIMULATOR_BEHAVIOUR": str(bad)})
    _, stderr = proc.communicate(timeout=15)
    assert proc.returncode == 2
    assert "SIMULATOR_BEHAVIOUR" in stderr and "chat.error_rate" in stderr

"""Real processes for the ingest tests: the simulator, ingest workers and the ingest API as children."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.conftest import REPO_ROOT, free_port


@dataclass
class Child:
    name: str
    proc: subprocess.Popen
    port: int
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal(self, signum: int) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signum)

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM, then SIGKILL if it does not exit within ``timeout``."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def start_child(name: str, args: list[str], env: dict[str, str], port: int, log_dir: Path) -> Child:
    log_path = log_dir / f"{name}.log"
    log = open(log_path, "wb")
    full_env = {**os.environ, **env}
    proc = subprocess.Popen([sys.executable, *args], cwd=REPO_ROOT, env=full_env, stdout=log, stderr=log)
    log.close()
    return Child(name, proc, port, log_path, env)


def wait_healthy(child: Child, path: str = "/healthz", timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if child.proc.poll() is not None:
            raise RuntimeError(f"{child.name} exited with {child.proc.returncode}:\n{child.log()[-3000:]}")
        try:
            if httpx.get(child.url + path, timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{child.name} not healthy after {timeout}s:\n{child.log()[-3000:]}")
        time.sleep(0.05)


def start_simulator(log_dir: Path) -> Child:
    port = free_port()
    child = start_child(
        "upstreams",
        ["-m", "services.upstreams"],
        {"UPSTREAMS_PORT": str(port), "UPSTREAMS_LOG_FORMAT": "json"},
        port,
        log_dir,
    )
    wait_healthy(child)
    return child


def start_worker(name: str, dsn: str, simulator: Child, log_dir: Path, **settings: object) -> Child:
    port = free_port()
    env = {
        "INGEST_WORKER_DATABASE_URL": dsn,
        "INGEST_WORKER_PORT": str(port),
        "INGEST_WORKER_WORKER_ID": name,
        "INGEST_WORKER_BUDGET_FILE": str(REPO_ROOT / "config" / "budget.toml"),
        "INGEST_WORKER_LOG_FORMAT": "json",
        "INGEST_WORKER_POLL_INTERVAL": "0.2",
        "INGEST_WORKER_REAP_INTERVAL": "0.2",
        "INGEST_WORKER_RETRY_BACKOFF_BASE": "0.1",
        "INGEST_WORKER_GRACE_PERIOD": "2",
        "FLOODGATE_EMBED_BASE_URL": simulator.url,
        "FLOODGATE_FETCH_BASE_URL": simulator.url,
    }
    env.update({f"INGEST_WORKER_{k.upper()}": str(v) for k, v in settings.items()})
    return start_child(name, ["-m", "services.ingest", "worker"], env, port, log_dir)


def start_api(dsn: str, log_dir: Path, **settings: object) -> Child:
    port = free_port()
    env = {
        "INGEST_API_DATABASE_URL": dsn,
        "INGEST_API_PORT": str(port),
        "INGEST_API_BUDGET_FILE": str(REPO_ROOT / "config" / "budget.toml"),
        "INGEST_API_LOG_FORMAT": "json",
        "INGEST_API_GRACE_PERIOD": "2",
    }
    env.update({f"INGEST_API_{k.upper()}": str(v) for k, v in settings.items()})
    return start_child("ingest-api", ["-m", "services.ingest", "api"], env, port, log_dir)


def set_behaviour(simulator: Child, behaviour: dict) -> None:
    response = httpx.put(simulator.url + "/admin/behaviour", json=behaviour, timeout=5)
    response.raise_for_status()


def metric(child: Child, name: str, labels: str = "") -> float:
    """Sum of a counter/gauge's samples on a child's /metrics (``labels`` is a substring filter)."""
    text = httpx.get(child.url + "/metrics", timeout=5).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and labels in line and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total

"""Real processes for the gateway tests: the rate-limit service, Envoy, small stand-in upstreams.

Each helper starts a child on free loopback ports, waits (bounded) until it answers, and stops it
(SIGTERM, then SIGKILL) when the ``with`` block ends, so no test leaves a process behind.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.conftest import REPO_ROOT, free_port

__all__ = ["Proc", "free_port", "run_process", "start_ratelimit", "start_upstream", "wait_http", "wait_tcp"]


@dataclass
class Proc:
    name: str
    process: subprocess.Popen
    log: Path
    ports: dict[str, int]

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self, timeout: float = 5.0) -> None:
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


def wait_tcp(port: int, proc: Proc, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.process.poll() is not None:
            raise RuntimeError(
                f"{proc.name} exited with {proc.process.returncode}:\n{proc.log_text()[-3000:]}"
            )
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.02)
    raise RuntimeError(f"{proc.name} did not listen on {port} within {timeout}s:\n{proc.log_text()[-3000:]}")


def wait_http(url: str, proc: Proc, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.process.poll() is not None:
            raise RuntimeError(
                f"{proc.name} exited with {proc.process.returncode}:\n{proc.log_text()[-3000:]}"
            )
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=0.5).status_code == 200:
                return
        time.sleep(0.02)
    raise RuntimeError(f"{proc.name}: {url} not ready within {timeout}s:\n{proc.log_text()[-3000:]}")


@contextlib.contextmanager
def run_process(
    name: str,
    argv: list[str],
    *,
    log_dir: Path,
    env: dict[str, str] | None = None,
    ports: dict[str, int] | None = None,
) -> Iterator[Proc]:
    log = log_dir / f"{name}.log"
    full_env = {**os.environ, **(env or {})}
    with open(log, "wb") as out:
        process = subprocess.Popen(argv, cwd=REPO_ROOT, env=full_env, stdout=out, stderr=subprocess.STDOUT)
    proc = Proc(name=name, process=process, log=log, ports=dict(ports or {}))
    try:
        yield proc
    finally:
        proc.stop()


@contextlib.contextmanager
def start_ratelimit(
    log_dir: Path,
    *,
    config: Path | None = None,
    redis_url: str | None = None,
    name: str = "ratelimit",
    extra_env: dict[str, str] | None = None,
    ports: dict[str, int] | None = None,
) -> Iterator[Proc]:
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
        [sys.executable, "-m", "services.ratelimit"],
        log_dir=log_dir,
        env=env,
        ports={"grpc": grpc_port, "http": http_port},
    ) as proc:
        wait_http(f"http://127.0.0.1:{http_port}/healthz", proc)
        wait_tcp(grpc_port, proc)
        yield proc


@contextlib.contextmanager
def start_upstream(
    log_dir: Path, *, name: str = "upstream", env: dict[str, str] | None = None
) -> Iterator[Proc]:
    """The stand-in upstream app in tests/gateway/_upstream.py (echo / slow / fail by env and path)."""
    port = free_port()
    with run_process(
        name,
        [sys.executable, "-m", "tests.gateway._upstream", str(port)],
        log_dir=log_dir,
        env={"UPSTREAM_NAME": name, **(env or {})},
        ports={"http": port},
    ) as proc:
        wait_http(f"http://127.0.0.1:{port}/healthz", proc)
        yield proc

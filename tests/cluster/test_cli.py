"""``python -m cluster``: start-up refusals are one line, exit non-zero and leave nothing behind."""

from __future__ import annotations

import json
import re
import socket
import subprocess
from pathlib import Path

import psutil

from harness import REPO_ROOT

from ._procs import pid_gone


def _run(command: list[str], env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*command, *args], env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=False
    )


def _processes_mentioning(data_dir: Path) -> list[psutil.Process]:
    """Processes whose command line mentions this test's data directory (PostgreSQL, Envoy...)."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if str(data_dir) in cmdline:
            found.append(proc)
    return found


def test_a_port_in_use_is_one_line_naming_the_variable(cluster_env: dict[str, str], cluster_command) -> None:
    port = int(cluster_env["FLOODGATE_ONLINE_PORT"])
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        result = _run(cluster_command, cluster_env, "up")
    assert result.returncode == 1
    assert result.stderr == f"floodgate: port {port} (FLOODGATE_ONLINE_PORT) is already in use\n"
    assert result.stdout == ""
    data_dir = Path(cluster_env["FLOODGATE_DATA_DIR"])
    assert not (data_dir / "cluster.pid").exists()
    assert _processes_mentioning(data_dir) == []


def test_a_bad_setting_is_one_line(cluster_env: dict[str, str], cluster_command) -> None:
    cluster_env["FLOODGATE_INGEST_WORKERS"] = "many"
    result = _run(cluster_command, cluster_env, "up")
    assert result.returncode == 2
    assert result.stderr.startswith("floodgate: FLOODGATE_INGEST_WORKERS: Input should be a valid integer")
    assert result.stderr.count("\n") == 1


def test_a_broken_budget_file_is_one_line(
    cluster_env: dict[str, str], cluster_command, tmp_path: Path
) -> None:
    budget = tmp_path / "budget.toml"
    budget.write_text("[deployment\nthis is not toml")
    cluster_env["FLOODGATE_BUDGET"] = str(budget)
    result = _run(cluster_command, cluster_env, "up")
    assert result.returncode == 1
    assert result.stderr.startswith(f"floodgate: budget file {budget} (FLOODGATE_BUDGET) is ")
    assert result.stderr.count("\n") == 1


def test_down_and_status_without_a_cluster(cluster_env: dict[str, str], cluster_command) -> None:
    down = _run(cluster_command, cluster_env, "down")
    assert (down.returncode, down.stdout) == (0, "floodgate: no cluster is running\n")
    status = _run(cluster_command, cluster_env, "status")
    assert status.returncode == 3
    assert "no cluster has run here" in status.stdout


def test_down_never_signals_a_stranger_that_reuses_a_stale_pid(
    cluster_env: dict[str, str], cluster_command
) -> None:
    # A supervisor that died left its pid file; the OS has since given that pid to another process.
    stranger = subprocess.Popen(["sleep", "30"])
    try:
        data_dir = Path(cluster_env["FLOODGATE_DATA_DIR"])
        data_dir.mkdir(parents=True)
        (data_dir / "cluster.pid").write_text(f"{stranger.pid}\n")
        down = _run(cluster_command, cluster_env, "down")
        assert (down.returncode, down.stdout) == (0, "floodgate: no cluster is running\n")
        assert stranger.poll() is None
        assert not (data_dir / "cluster.pid").exists()
    finally:
        stranger.kill()
        stranger.wait()


def test_a_child_that_fails_to_start_stops_everything_with_its_last_lines(
    cluster_env: dict[str, str], cluster_command, fresh_database_url: str
) -> None:
    """A real service with a bad setting exits at once: the cluster names it, shows its output, and
    stops what it had started (migrations ran, the simulator was up)."""
    cluster_env["DATABASE_URL"] = fresh_database_url  # the session's PostgreSQL: no initdb here
    cluster_env["ONLINE_LOG_LEVEL"] = "loud"
    result = _run(cluster_command, cluster_env, "up")
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert lines[0] == "floodgate: online exited with code 2 before it was ready"
    assert any("ONLINE_LOG_LEVEL" in line for line in lines[1:])
    started = re.search(r"^cluster +\| simulator ready at \S+ \(pid (\d+)\)", result.stdout, re.MULTILINE)
    assert started is not None, result.stdout
    state = json.loads((Path(cluster_env["FLOODGATE_DATA_DIR"]) / "cluster.json").read_text())
    assert state["status"] == "failed"
    assert all(c["pid"] is None for c in state["children"])  # the supervisor saw each one exit
    assert pid_gone(int(started.group(1)))
    assert _processes_mentioning(Path(cluster_env["FLOODGATE_DATA_DIR"])) == []

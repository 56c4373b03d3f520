"""``python -m cluster up [--detach] | down | status | prometheus-config | k8s``: what ``make up/start/down/status`` run.

``up`` runs the supervisor in the foreground (Ctrl-C stops everything); ``up --detach`` starts the
same command in a new session with its output in ``.data/cluster.log``, waits until the cluster is
ready or has failed, and prints the status table. The supervisor writes ``.data/cluster.pid`` and
``.data/cluster.json``; ``down`` signals that pid, ``status`` reads that file and probes each process.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import floodgate
import trio

from ._output import LogOutput
from .children import cluster_children
from .preflight import PreflightError, run_preflight
from .restarts import RestartPolicy
from .settings import ClusterSettings, ClusterSettingsError, load_cluster_settings
from .state import StateFile, pid_alive, render_table, status_rows
from .supervisor import Supervisor, SupervisorStatistics

__all__ = ["main"]


def _error(message: str) -> None:
    print(f"floodgate: {message}", file=sys.stderr, flush=True)


def _running_pid(settings: ClusterSettings) -> int | None:
    try:
        pid = int(settings.pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    return pid if pid_alive(pid) and _is_supervisor(pid) else None


def _is_supervisor(pid: int) -> bool:
    """Is ``pid`` a ``python -m cluster up``? A pid file left by a supervisor that died (or by a
    reboot) may name a pid the OS has since given to another process: `down` must never signal it.
    Without procfs there is no telling; the pid is trusted as before."""
    if not Path("/proc/self/cmdline").exists():
        return True
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except FileNotFoundError:  # it exited meanwhile
        return False
    except PermissionError:
        return True
    return b"cluster" in argv


def _check_not_running(settings: ClusterSettings) -> bool:
    pid = _running_pid(settings)
    if pid is not None and pid != os.getpid():
        _error(f"a cluster is already running (pid {pid}, {settings.pid_file}); stop it with `make down`")
        return False
    return True


# -- up (foreground) -------------------------------------------------------------------------------


def cmd_up(settings: ClusterSettings) -> int:
    if not _check_not_running(settings):
        return 1
    try:
        envoy_config = run_preflight(settings)
    except PreflightError as exc:
        _error(str(exc))
        return 1
    colour_console = sys.stdout.isatty()
    specs = cluster_children(
        settings, envoy_config=envoy_config, log_format="console" if colour_console else "json"
    )
    output = LogOutput([s.name for s in specs])
    state = StateFile(
        settings.state_file, specs, gateway_url=f"http://{settings.host}:{settings.gateway_port}"
    )
    gateway = f"http://{settings.host}:{settings.gateway_port}"
    announced = False

    def on_change(stats: SupervisorStatistics) -> None:
        nonlocal announced
        state.write(stats)
        if stats.status == "ready" and not announced:
            announced = True
            output.say(
                f"gateway at {gateway} — try: curl {gateway}/healthz/online   (Ctrl-C stops everything)"
            )

    supervisor = Supervisor(
        specs,
        output=output,
        ready_timeout=settings.ready_timeout,
        stop_grace=settings.stop_grace,
        restart_policy=RestartPolicy(max_restarts=settings.max_restarts, window=settings.restart_window),
        on_change=on_change,
    )
    settings.pid_file.write_text(f"{os.getpid()}\n")
    try:
        code = trio.run(supervisor.run)
    finally:
        with contextlib.suppress(FileNotFoundError, ValueError):
            if int(settings.pid_file.read_text()) == os.getpid():
                settings.pid_file.unlink()
    stats = supervisor.statistics()
    if code != 0 and stats.failure:
        _error(stats.failure)
        for line in stats.failure_tail:
            print(f"    {line}", file=sys.stderr)
    return code


# -- up --detach -----------------------------------------------------------------------------------


def cmd_up_detached(settings: ClusterSettings, *, wait_timeout: float | None = None) -> int:
    if not _check_not_running(settings):
        return 1
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    settings.state_file.unlink(missing_ok=True)
    with open(settings.log_file, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "cluster", "up"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # outlives this command and the terminal
            env={**os.environ, "NO_COLOR": "1"},
        )
    # Every child may take up to ready_timeout, one after the other in the worst case.
    timeout = wait_timeout if wait_timeout is not None else settings.ready_timeout * 4 + 30
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = StateFile.read(settings.state_file)
        if state is not None and state.get("supervisor_pid") == process.pid:
            if state.get("status") == "ready":
                print(
                    f"floodgate: cluster started (supervisor pid {process.pid}); logs in {settings.log_file}"
                )
                print(render_table(status_rows(state)))
                print(f"gateway: {state['gateway_url']}   stop: make down")
                return 0
            if state.get("status") == "failed":
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=settings.stop_grace * 2 + 10)
                return _report_detached_failure(settings, process.pid)
        if process.poll() is not None:
            return _report_detached_failure(settings, process.pid)
        time.sleep(0.2)
    _error(
        f"the cluster did not become ready within {timeout:g} s; see {settings.log_file} (make down stops it)"
    )
    return 1


def _report_detached_failure(settings: ClusterSettings, pid: int) -> int:
    state = StateFile.read(settings.state_file)
    if state is not None and state.get("supervisor_pid") == pid and state.get("failure"):
        _error(state["failure"])
        for line in state.get("failure_tail", []):
            print(f"    {line}", file=sys.stderr)
    else:
        # Failed before supervising anything (bad setting, port in use): its last line says why.
        lines = [ln for ln in settings.log_file.read_text(errors="replace").splitlines() if ln.strip()]
        print(
            lines[-1] if lines else f"floodgate: the cluster exited; see {settings.log_file}", file=sys.stderr
        )
    print(f"floodgate: full log in {settings.log_file}", file=sys.stderr)
    return 1


# -- down, status ----------------------------------------------------------------------------------


def cmd_down(settings: ClusterSettings) -> int:
    pid = _running_pid(settings)
    if pid is None:
        settings.pid_file.unlink(missing_ok=True)
        print("floodgate: no cluster is running")
        return 0
    os.kill(pid, signal.SIGTERM)
    timeout = settings.stop_grace * 2 + 15
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            print(f"floodgate: cluster stopped (supervisor pid {pid})")
            return 0
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)  # its orphan guard then stops the children
    _error(f"the supervisor (pid {pid}) did not stop within {timeout:g} s and was killed")
    return 1


def cmd_status(settings: ClusterSettings) -> int:
    state = StateFile.read(settings.state_file)
    if state is None:
        print(
            f"floodgate: no cluster has run here ({settings.state_file} is missing); start one with `make up`"
        )
        return 3
    pid = state.get("supervisor_pid")
    running = pid_alive(pid) and state.get("status") not in ("stopped", "failed")
    if running:
        print(f"cluster: {state['status']} (supervisor pid {pid}), gateway {state['gateway_url']}")
    else:
        print(f"cluster: not running (last status: {state.get('status')}, at {state.get('updated_at')})")
        if state.get("failure"):
            print(f"last failure: {state['failure']}")
    print(render_table(status_rows(state)))
    return 0 if running else 3


def cmd_prometheus_config(settings: ClusterSettings, out: Path | None) -> int:
    from .prometheus import SCRAPE_FILE, prometheus_files, write_prometheus_files

    try:
        if out is None:
            print(prometheus_files(settings)[SCRAPE_FILE], end="")
            return 0
        for path in write_prometheus_files(settings, out):
            print(f"wrote {path}")
    except (floodgate.BudgetError, LookupError) as exc:
        _error(str(exc))
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cluster", description="the Floodgate local cluster")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start the cluster (foreground; --detach for background)")
    up.add_argument("--detach", action="store_true", help="run in the background, print status when ready")
    sub.add_parser("down", help="stop a cluster started in the background (or in another terminal)")
    sub.add_parser("status", help="what runs, where, and whether it answers")
    prom = sub.add_parser(
        "prometheus-config",
        help="Prometheus's scrape configuration for the cluster's ports (and, with --out, the alerting rules)",
    )
    prom.add_argument(
        "--out",
        type=Path,
        default=None,
        help="write prometheus.yml and rules.yml (floodgate alerts for the budget) into this directory",
    )
    k8s = sub.add_parser(
        "k8s", help="write the Kubernetes base and simulator component (numbers from the budget file)"
    )
    k8s.add_argument(
        "--out",
        type=Path,
        default=Path("deploy/kubernetes"),
        help="the directory (default deploy/kubernetes)",
    )
    args = parser.parse_args(argv)
    try:
        settings = load_cluster_settings()
    except ClusterSettingsError as exc:
        _error(str(exc))
        return 2
    if args.command == "up":
        return cmd_up_detached(settings) if args.detach else cmd_up(settings)
    if args.command == "down":
        return cmd_down(settings)
    if args.command == "prometheus-config":
        return cmd_prometheus_config(settings, args.out)
    if args.command == "k8s":
        from .k8s import write_manifests

        for path in write_manifests(settings, args.out):
            print(path)
        return 0
    return cmd_status(settings)


if __name__ == "__main__":
    sys.exit(main())

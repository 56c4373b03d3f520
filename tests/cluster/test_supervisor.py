"""The supervisor with fake children (tiny ``python -c`` scripts): start order and readiness, the crash
policy, failures that stop everything, and no process left behind — not even when the supervisor is
SIGKILLed. These start real processes, so they run on the wall clock, with short timeouts.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from functools import partial
from pathlib import Path

import psutil
import pytest
import trio

from cluster._output import LogOutput
from cluster.children import ChildSpec, CommandReady, ExitReady
from cluster.restarts import RestartPolicy
from cluster.supervisor import Supervisor, SupervisorStatistics
from harness.ready import wait_until_async

from ._procs import pid_gone, wait_all_gone

pytestmark = pytest.mark.realtime

PY = sys.executable


def py(code: str) -> tuple[str, ...]:
    return (PY, "-c", textwrap.dedent(code))


#: Python that blocks until a signal ends the process: a service that runs until it is stopped
#: (no timer: nothing here waits on the clock).
UNTIL_STOPPED = "import signal; signal.pause()"


def sleeper(name: str, marker: Path | None = None) -> tuple[str, ...]:
    """A child that prints its pid, optionally touches ``marker`` (its readiness), then runs until
    stopped. (The supervisor's probe sees it "starting" before the marker exists either way: the
    probe runs after the start.)"""
    touch = f"open({str(marker)!r}, 'w').close()" if marker else "pass"
    return py(
        f"""
        import os, signal
        print("pid", os.getpid(), flush=True)
        {touch}
        signal.pause()
        """
    )


def file_ready(path: Path) -> CommandReady:
    return CommandReady(("test", "-e", str(path)))


class Recorder:
    """Keeps every published statistics snapshot, to check the order of transitions."""

    def __init__(self) -> None:
        self.snapshots: list[SupervisorStatistics] = []

    def __call__(self, stats: SupervisorStatistics) -> None:
        self.snapshots.append(stats)

    def first(self, name: str, state: str) -> int:
        for i, snap in enumerate(self.snapshots):
            if any(c.name == name and c.state == state for c in snap.children):
                return i
        raise AssertionError(f"{name} never was {state}")

    def pids(self) -> set[int]:
        return {c.pid for snap in self.snapshots for c in snap.children if c.pid is not None}


def make(children: list[ChildSpec], recorder: Recorder, **kwargs: object) -> tuple[Supervisor, io.StringIO]:
    out = io.StringIO()
    kwargs.setdefault("ready_timeout", 5.0)
    kwargs.setdefault("stop_grace", 2.0)
    kwargs.setdefault("probe_interval", 0.02)
    supervisor = Supervisor(
        children,
        output=LogOutput([c.name for c in children], stream=out, colour=False),
        on_change=recorder,
        handle_signals=False,
        **kwargs,  # type: ignore[arg-type]
    )
    return supervisor, out


#: poll a condition on the supervisor (real processes: no event to wait on), at most 10 s
wait_until = partial(wait_until_async, within=10, interval=0.02)


async def test_children_start_in_order_each_after_what_it_needs_is_ready(tmp_path: Path) -> None:
    db_marker, svc_marker = tmp_path / "db", tmp_path / "svc"
    children = [
        ChildSpec("db", sleeper("db", db_marker), ready=file_ready(db_marker)),
        ChildSpec(
            "migrate",
            py(f"import os; assert os.path.exists({str(db_marker)!r}); print('migrated')"),
            ready=ExitReady(),
            needs=("db",),
        ),
        ChildSpec("svc", sleeper("svc", svc_marker), ready=file_ready(svc_marker), needs=("migrate",)),
    ]
    recorder = Recorder()
    supervisor, out = make(children, recorder)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(supervisor.run)
        await wait_until(lambda: supervisor.statistics().status == "ready")
        stats = {c.name: c for c in supervisor.statistics().children}
        assert stats["db"].ready and stats["svc"].ready
        assert stats["migrate"].state == "done" and stats["migrate"].pid is None
        supervisor.request_stop()
    assert recorder.first("db", "ready") < recorder.first("migrate", "starting")
    assert recorder.first("migrate", "done") < recorder.first("svc", "starting")
    assert recorder.first("svc", "ready") < recorder.first("svc", "stopped") < recorder.first("db", "stopped")
    text = out.getvalue()
    assert "migrate | migrated" in text  # fixed-width prefix: the longest name is "cluster"/"migrate"
    assert "cluster | all 3 processes ready" in text
    assert wait_all_gone(sorted(recorder.pids()), timeout=2) == []


async def test_a_crashed_service_is_restarted_with_backoff(tmp_path: Path) -> None:
    marker = tmp_path / "up"
    children = [ChildSpec("svc", sleeper("svc", marker), ready=file_ready(marker))]
    recorder = Recorder()
    policy = RestartPolicy(max_restarts=3, window=60, base_delay=0.1, max_delay=0.1)
    supervisor, out = make(children, recorder, restart_policy=policy)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(supervisor.run)
        await wait_until(lambda: supervisor.statistics().status == "ready")
        first_pid = supervisor.statistics().children[0].pid
        assert first_pid is not None
        os.kill(first_pid, signal.SIGKILL)
        await wait_until(
            lambda: (c := supervisor.statistics().children[0]).ready and c.pid not in (None, first_pid)
        )
        svc = supervisor.statistics().children[0]
        assert svc.restarts == 1
        assert supervisor.statistics().status == "ready"  # the rest of the cluster kept running
        supervisor.request_stop()
    assert f"svc (pid {first_pid}) exited with code -9" in out.getvalue()
    assert "svc exited with code -9; restart 1 in 0.1 s" in out.getvalue()
    assert wait_all_gone(sorted(recorder.pids()), timeout=2) == []


async def test_a_service_that_keeps_crashing_brings_the_cluster_down(tmp_path: Path) -> None:
    marker, up = tmp_path / "db", tmp_path / "flaky-up"
    children = [
        ChildSpec("db", sleeper("db", marker), ready=file_ready(marker)),
        # Dies with code 4 when told (SIGUSR1), which the test does as soon as the supervisor has
        # published it ready — every time, so a crash after start, never before. Ready = its
        # marker, written once the handler is in place and removed as it dies (no stale marker
        # for the next instance).
        ChildSpec(
            "flaky",
            py(
                f"""
                import os, signal, sys
                def crash(*_):
                    os.remove({str(up)!r})
                    sys.exit(4)
                signal.signal(signal.SIGUSR1, crash)
                open({str(up)!r}, "w").close()
                signal.pause()
                """
            ),
            ready=file_ready(up),
        ),
    ]
    recorder = Recorder()
    told: set[int] = set()

    def crash_when_ready(stats: SupervisorStatistics) -> None:
        recorder(stats)
        for child in stats.children:
            if child.name == "flaky" and child.ready and child.pid is not None and child.pid not in told:
                told.add(child.pid)
                os.kill(child.pid, signal.SIGUSR1)

    policy = RestartPolicy(max_restarts=2, window=60, base_delay=0.05, max_delay=0.05)
    supervisor, _ = make(children, crash_when_ready, restart_policy=policy)  # type: ignore[arg-type]
    with trio.fail_after(15):
        code = await supervisor.run()
    assert code == 1
    stats = supervisor.statistics()
    assert stats.status == "failed"
    assert stats.failure == "flaky crashed 3 times within 60 s (last exit code 4); giving up"
    assert wait_all_gone(sorted(recorder.pids()), timeout=2) == []


async def test_an_essential_child_crashing_stops_the_whole_cluster(tmp_path: Path) -> None:
    db_marker, svc_marker = tmp_path / "db", tmp_path / "svc"
    children = [
        ChildSpec("db", sleeper("db", db_marker), ready=file_ready(db_marker), on_crash="stop_cluster"),
        ChildSpec("svc", sleeper("svc", svc_marker), ready=file_ready(svc_marker), needs=("db",)),
    ]
    recorder = Recorder()
    supervisor, _ = make(children, recorder)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(supervisor.run)
        await wait_until(lambda: supervisor.statistics().status == "ready")
        db_pid = supervisor.statistics().children[0].pid
        assert db_pid is not None
        os.kill(db_pid, signal.SIGKILL)
    stats = supervisor.statistics()
    assert stats.status == "failed"
    assert stats.failure == "db exited unexpectedly with code -9; the cluster cannot run without it"
    assert all(c.pid is None for c in stats.children)
    assert wait_all_gone(sorted(recorder.pids()), timeout=2) == []


async def test_a_child_that_never_gets_ready_stops_everything_started_so_far(tmp_path: Path) -> None:
    marker = tmp_path / "db"
    children = [
        ChildSpec("db", sleeper("db", marker), ready=file_ready(marker)),
        ChildSpec(
            "stuck",
            py(f"print('waiting for a config that never comes', flush=True); {UNTIL_STOPPED}"),
            ready=CommandReady(("false",)),
            needs=("db",),
        ),
        ChildSpec("never", sleeper("never"), ready=CommandReady(("true",)), needs=("stuck",)),
    ]
    recorder = Recorder()
    supervisor, _ = make(children, recorder, ready_timeout=1.0)
    with trio.fail_after(10):
        code = await supervisor.run()
    assert code == 1
    stats = supervisor.statistics()
    assert stats.failure == "stuck did not become ready within 1 s"
    assert "waiting for a config that never comes" in stats.failure_tail
    never = next(c for c in stats.children if c.name == "never")
    assert never.state == "waiting"  # never started
    assert wait_all_gone(sorted(recorder.pids()), timeout=2) == []


async def test_a_child_that_exits_before_it_is_ready_fails_start_up_with_its_output() -> None:
    children = [
        ChildSpec(
            "bad", py("print('cannot read config.toml'); raise SystemExit(2)"), ready=CommandReady(("false",))
        )
    ]
    supervisor, _ = make(children, Recorder())
    with trio.fail_after(10):
        assert await supervisor.run() == 1
    stats = supervisor.statistics()
    assert stats.failure == "bad exited with code 2 before it was ready"
    assert stats.failure_tail == ("cannot read config.toml",)


async def test_a_missing_binary_fails_with_one_line() -> None:
    children = [ChildSpec("ghost", ("/nonexistent/bin/ghost",), ready=CommandReady(("true",)))]
    supervisor, _ = make(children, Recorder())
    with trio.fail_after(10):
        assert await supervisor.run() == 1
    failure = supervisor.statistics().failure
    assert failure is not None and failure.startswith("ghost cannot start: ") and "No such file" in failure


async def test_stop_reaches_grandchildren_and_kills_what_ignores_sigterm(tmp_path: Path) -> None:
    """Each child has its own process group: its own children are stopped with it."""
    code = """
        import signal, subprocess, sys
        signal.signal(signal.SIGTERM, signal.SIG_IGN)   # a child that ignores the polite signal
        grandchild = subprocess.Popen([sys.executable, "-c", "import signal; signal.pause()"])
        print("grandchild", grandchild.pid, flush=True)
        signal.pause()   # an ignored signal does not end pause(): only SIGKILL does
    """
    children = [ChildSpec("parent", py(code), ready=CommandReady(("true",)))]
    recorder = Recorder()
    supervisor, out = make(children, recorder, stop_grace=0.5)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(supervisor.run)
        await wait_until(lambda: "grandchild" in out.getvalue())
        supervisor.request_stop()
    grandchild = int(out.getvalue().split("grandchild ")[1].split()[0])
    assert "parent did not stop within 0.5 s: killing it" in out.getvalue()
    assert wait_all_gone([*recorder.pids(), grandchild], timeout=3) == []


def test_a_sigkilled_supervisor_leaves_no_orphans(tmp_path: Path) -> None:
    """The orphan guard notices the supervisor's death (its stdin pipe closes) and kills the groups."""
    script = tmp_path / "supervise.py"
    state = tmp_path / "state.json"
    script.write_text(
        textwrap.dedent(
            f"""
            import json, sys, trio
            from dataclasses import asdict
            from cluster.children import ChildSpec, CommandReady
            from cluster.supervisor import Supervisor
            code = "import signal, subprocess, sys; subprocess.Popen([sys.executable, '-c', 'import signal; signal.pause()']); signal.pause()"
            children = [ChildSpec(f"c{{i}}", (sys.executable, "-c", code), ready=CommandReady(("true",))) for i in range(3)]
            def publish(stats):
                with open({str(state)!r}, "w") as f:
                    json.dump(asdict(stats), f)
            trio.run(Supervisor(children, on_change=publish, stop_grace=1).run)
            """
        )
    )
    proc = subprocess.Popen([PY, str(script)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 15
        while True:
            assert time.monotonic() < deadline, "the supervisor did not get ready"
            try:
                stats = json.loads(state.read_text())
            except (FileNotFoundError, json.JSONDecodeError):
                stats = {}
            if stats.get("status") == "ready":
                break
            time.sleep(0.05)
        pids = [c["pid"] for c in stats["children"]]

        # Grandchildren too: every process in the children's groups.
        def family() -> list[int]:
            return [p.pid for p in psutil.process_iter() if _safe_pgid(p.pid) in pids]

        while len(family()) < 6:  # the children start their own child right after they start
            assert time.monotonic() < deadline, f"expected 3 children and 3 grandchildren, got {family()}"
            time.sleep(0.05)
        members = family()
        proc.kill()
        proc.wait()
        assert wait_all_gone(members, timeout=10) == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _safe_pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def test_pid_gone_helper_sees_a_live_process() -> None:
    assert not pid_gone(os.getpid())

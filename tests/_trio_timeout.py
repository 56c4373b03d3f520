"""pytest-timeout's signal method, made safe for a trio test that hangs in an await.

pytest-timeout's SIGALRM handler raises ``Failed`` in whatever frame is running. When a trio test hangs
in an await, that frame is trio's scheduler waiting in epoll: the exception tears the run loop down
half-way, and every later trio test in the session then fails with "Attempted to call run() from
inside a run()". So when the alarm finds the main thread inside trio's scheduler (in a trio run, in no
task), this handler records where every task is waiting, cancels the test's nurseries through the run's
token and lets trio unwind; the phase is then reported as failed with those stacks. A hang that ignores
the cancellation (a shielded scope, a blocked thread) gets the plain pytest-timeout failure after
``GRACE`` more seconds. Everything else (a sync test, a trio task busy in its own code) gets the plain
pytest-timeout failure at once, which is already clean there.
"""

from __future__ import annotations

import signal
import threading
import traceback
from collections.abc import Iterator
from pathlib import Path

import outcome
import pytest
import pytest_timeout
import pytest_trio
import trio

__all__ = ["pytest_runtest_makereport", "pytest_timeout_set_timer"]

#: seconds a cancelled trio run gets to unwind before the plain pytest-timeout failure
GRACE = 5.0

_FIRED = pytest.StashKey[str]()
_LIBRARIES = tuple(str(Path(module.__file__).parent) for module in (trio, pytest_trio, outcome))


def _in_trio_scheduler() -> bool:
    """In a trio run on this thread, but between task steps (where trio's own loop is running)."""
    if not trio.lowlevel.in_trio_run():
        return False
    try:
        trio.lowlevel.current_task()
    except RuntimeError:
        return True
    return False


def _tasks(task: trio.lowlevel.Task) -> Iterator[trio.lowlevel.Task]:
    yield task
    for nursery in task.child_nurseries:
        for child in sorted(nursery.child_tasks, key=lambda t: t.name):
            yield from _tasks(child)


def _where_tasks_wait(root: trio.lowlevel.Task) -> str:
    """Each task's await stack, without the frames of trio and pytest-trio themselves."""
    parts = []
    for task in _tasks(root):
        own = [(f, n) for f, n in task.iter_await_frames() if not f.f_code.co_filename.startswith(_LIBRARIES)]
        frames = traceback.StackSummary.extract(own)
        if frames:
            parts.append(f"task {task.name!r}:\n{''.join(frames.format())}")
    return "\n".join(parts)


def _cancel_the_test(item: pytest.Item, timeout: float) -> None:
    """Runs as a trio system callback: note the stacks, then cancel every nursery of every task the
    run started (pytest-trio runs the fixtures and the test in one of them)."""
    root = trio.lowlevel.current_root_task()
    if root is None:
        return
    item.stash[_FIRED] = (
        f"Timeout (>{timeout}s) from pytest-timeout: the trio run was cancelled.\n"
        f"Where each task was waiting:\n\n{_where_tasks_wait(root)}"
    )
    for nursery in root.child_nurseries:
        for task in nursery.child_tasks:
            for own in task.child_nurseries:
                own.cancel_scope.cancel()


@pytest.hookimpl(tryfirst=True)
def pytest_timeout_set_timer(item: pytest.Item, settings) -> bool | None:
    if settings.method != "signal" or threading.current_thread() is not threading.main_thread():
        return None  # pytest-timeout's own thread method

    cancelling = False

    def on_alarm(signum, frame) -> None:
        nonlocal cancelling
        __tracebackhide__ = True
        if _in_trio_scheduler() and not cancelling:
            cancelling = True
            trio.lowlevel.current_trio_token().run_sync_soon(_cancel_the_test, item, settings.timeout)
            signal.setitimer(signal.ITIMER_REAL, GRACE)
            return
        if cancelling and _FIRED in item.stash:
            item.stash[_FIRED] += (
                f"\nThe run was still going {GRACE} s after the cancellation (a shielded wait, a blocked thread?)."
            )
        pytest_timeout.timeout_sigalrm(item, settings)

    def cancel() -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, signal.SIG_DFL)

    item.cancel_timeout = cancel
    signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, settings.timeout)
    return True


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    message = item.stash.get(_FIRED, None)
    if message is not None:
        del item.stash[_FIRED]
        report.outcome = "failed"
        report.longrepr = message  # (what it raised is the Cancelled of our own making)
    if trio.lowlevel.in_trio_run():
        # No trio run is active in a pytest hook: the last one was abandoned half-way (a hang that
        # ignored the cancellation), and no later trio test can start on this thread.
        item.session.shouldstop = f"{item.nodeid} hung through the cancellation of its trio run"
    return report

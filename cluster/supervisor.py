"""A small trio supervisor: a nursery of ``trio.run_process`` children, started in order, each only when
what it needs is ready, stopped in reverse order.

Life of a child (see :class:`~cluster.children.ChildSpec`)::

    waiting --(needs ready)--> starting --(probe answers)--> ready --(exits)--> restarting --> starting
                                   |                                    \\--(on_crash="stop_cluster",
                                   \\--(timeout / exits first)--> cluster fails     or budget spent)--> cluster fails

Crash policy: a crashed *service* (``on_crash="restart"``) is restarted after a backoff (0.5 s, 1 s,
2 s... at most ``RestartPolicy.max_restarts`` times within ``RestartPolicy.window`` seconds); one crash
more and the whole cluster stops. PostgreSQL and Envoy (``on_crash="stop_cluster"``) are not restarted:
without them nothing works, so their exit stops the cluster with a non-zero status. A child that does
not become ready within ``ready_timeout`` (or exits before it is ready) stops everything started so far.

Stopping (SIGINT/SIGTERM, :meth:`Supervisor.request_stop`, or a failure): children get their stop
signal in reverse start order (the services, started together, stop together), ``stop_grace`` seconds each, then SIGKILL. A second signal kills at once.
Every child runs in its own process group (``start_new_session``), so the signal reaches its own
children too, and a terminal's Ctrl-C reaches only the supervisor, which then stops them in order.
Should the supervisor itself die (even by SIGKILL), the orphan guard (:mod:`cluster._guardian`) kills
the groups it left.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Literal

import httpx
import trio

from ._output import LogOutput
from .children import ChildSpec, CommandReady, ExitReady, HttpReady
from .restarts import RestartPolicy, RestartTracker

__all__ = ["ChildStatus", "Supervisor", "SupervisorStatistics"]

ClusterStatus = Literal["starting", "ready", "stopping", "stopped", "failed"]
TAIL_LINES = 15


@dataclass(frozen=True)
class ChildStatus:
    name: str
    state: str
    pid: int | None
    port: int | None
    url: str | None
    ready: bool
    restarts: int


@dataclass(frozen=True)
class SupervisorStatistics:
    status: ClusterStatus
    failure: str | None
    failure_tail: tuple[str, ...]
    children: tuple[ChildStatus, ...]


class _Child:
    """The supervisor's mutable record of one child; only the supervisor touches it."""

    def __init__(self, spec: ChildSpec, policy: RestartPolicy) -> None:
        self.spec = spec
        self.tracker = RestartTracker(policy)
        self.first_ready = trio.Event()  # dependents wait for this once
        self.state = "waiting"
        self.is_ready = False
        self.process: trio.Process | None = None
        self.tail: deque[str] = deque(maxlen=TAIL_LINES)

    def status(self) -> ChildStatus:
        pid = self.process.pid if self.process is not None else None
        return ChildStatus(
            self.spec.name,
            self.state,
            pid,
            self.spec.port,
            self.spec.url,
            self.is_ready,
            self.tracker.statistics().restarts,
        )


class Supervisor:
    """Run ``children`` (in the given start order) until a stop is requested or something fails.

    ``on_change`` receives a fresh :class:`SupervisorStatistics` after every state change (the CLI
    writes it to ``.data/cluster.json`` for ``status``). :meth:`run` returns the exit status: 0 after a
    requested stop, 1 after a failure (see ``statistics().failure``).
    """

    def __init__(
        self,
        children: Sequence[ChildSpec],
        *,
        output: LogOutput | None = None,
        ready_timeout: float = 60.0,
        stop_grace: float = 10.0,
        restart_policy: RestartPolicy | None = None,
        probe_interval: float = 0.1,
        on_change: Callable[[SupervisorStatistics], None] | None = None,
        handle_signals: bool = True,
        orphan_guard: bool = True,
    ) -> None:
        names = [c.name for c in children]
        if len(set(names)) != len(names):
            raise ValueError(f"child names must be unique: {names}")
        for spec in children:
            unknown = [n for n in spec.needs if n not in names[: names.index(spec.name)]]
            if unknown:
                raise ValueError(f"{spec.name} needs {unknown}, which are not earlier children")
        restart_policy = restart_policy if restart_policy is not None else RestartPolicy()
        self._children = {spec.name: _Child(spec, restart_policy) for spec in children}
        self._output = output if output is not None else LogOutput(names)
        self._ready_timeout = ready_timeout
        self._stop_grace = stop_grace
        self._policy = restart_policy
        self._probe_interval = probe_interval
        self._on_change = on_change
        self._handle_signals = handle_signals
        self._orphan_guard = orphan_guard
        self._status: ClusterStatus = "starting"
        self._failure: str | None = None
        self._failure_tail: tuple[str, ...] = ()
        self._stop = trio.Event()
        self._stopping = False
        self._guardian: _Guardian | None = None
        self._http: httpx.AsyncClient | None = None

    # -- public surface ------------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Ask the supervisor to stop every child (in reverse order) and return from :meth:`run`."""
        self._stop.set()

    def statistics(self) -> SupervisorStatistics:
        return SupervisorStatistics(
            self._status,
            self._failure,
            self._failure_tail,
            tuple(child.status() for child in self._children.values()),
        )

    def __repr__(self) -> str:
        ready = sum(c.is_ready for c in self._children.values())
        return f"<Supervisor {self._status} ready={ready}/{len(self._children)}>"

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> int:
        if self._orphan_guard:
            self._guardian = _Guardian.start()
        try:
            # Connection: close — an idle keep-alive probe connection would make a service's graceful
            # shutdown wait for it.
            client = httpx.AsyncClient(timeout=1.0, headers={"connection": "close"})
            async with client as http, trio.open_nursery() as nursery:
                self._http = http
                if self._handle_signals:
                    nursery.start_soon(self._watch_signals, nursery.cancel_scope)
                for child in self._children.values():
                    nursery.start_soon(self._supervise, child)
                nursery.start_soon(self._announce_ready)
                self._publish()
                task_status.started()
                await self._stop.wait()
                await self._stop_children()
                nursery.cancel_scope.cancel()
        finally:
            if self._guardian is not None:
                self._guardian.close()
        if self._failure is None:
            self._status = "stopped"
        self._publish()
        self._output.say("failed; everything stopped" if self._failure else "stopped")
        return 1 if self._failure else 0

    # -- state transitions (sync) --------------------------------------------------------------------

    def _publish(self) -> None:
        if self._on_change is not None:
            self._on_change(self.statistics())

    def _fail(self, child: _Child | None, message: str) -> None:
        """Record the first failure and start stopping; later failures are consequences of it."""
        if self._failure is None and not self._stopping:
            self._failure = message
            self._failure_tail = tuple(child.tail) if child is not None else ()
            self._status = "failed"
            self._output.say(f"FAILED: {message}")
            self._publish()
        self._stop.set()

    def _mark_ready(self, child: _Child) -> None:
        child.is_ready = True
        child.state = "done" if child.spec.one_shot else "ready"
        child.first_ready.set()
        if child.spec.one_shot:
            self._output.say(f"{child.spec.name} finished")
        else:
            where = f" at {child.spec.url}" if child.spec.url else ""
            pid = child.process.pid if child.process is not None else "?"
            self._output.say(f"{child.spec.name} ready{where} (pid {pid})")
        self._publish()

    # -- tasks ---------------------------------------------------------------------------------------

    async def _announce_ready(self) -> None:
        for child in self._children.values():
            await child.first_ready.wait()
        if not self._stopping:
            self._status = "ready"
            self._output.say(f"all {len(self._children)} processes ready")
            self._publish()

    async def _supervise(self, child: _Child) -> None:
        spec = child.spec
        for need in spec.needs:
            await self._children[need].first_ready.wait()
        if self._stopping:
            return
        if spec.prepare is not None:
            child.state = "preparing"
            try:
                await trio.to_thread.run_sync(spec.prepare)
            except Exception as exc:
                self._fail(child, f"{spec.name} cannot be prepared: {exc}")
                return
        while not self._stopping:
            code = await self._run_once(child)
            if self._stopping or code is None:
                return
            if spec.one_shot and code == 0:
                self._mark_ready(child)
                return
            if not child.first_ready.is_set():
                self._fail(child, f"{spec.name} exited with code {code} before it was ready")
                return
            if spec.on_crash == "stop_cluster":
                self._fail(
                    child,
                    f"{spec.name} exited unexpectedly with code {code}; the cluster cannot run without it",
                )
                return
            delay = child.tracker.on_crash(trio.current_time())
            if delay is None:
                self._fail(
                    child,
                    f"{spec.name} crashed {self._policy.max_restarts + 1} times within "
                    f"{self._policy.window:g} s (last exit code {code}); giving up",
                )
                return
            child.state = "restarting"
            child.is_ready = False
            self._output.say(
                f"{spec.name} exited with code {code}; restart {child.tracker.statistics().restarts} "
                f"in {delay:g} s"
            )
            self._publish()
            await trio.sleep(delay)

    async def _run_once(self, child: _Child) -> int | None:
        """Start the child, probe it until ready, wait for it to exit; return its exit code.

        None means it could not be started at all (the failure is recorded).
        """
        spec = child.spec
        child.state = "starting"
        child.is_ready = False
        async with trio.open_nursery() as nursery:
            try:
                process: trio.Process = await nursery.start(
                    partial(
                        trio.run_process,
                        list(spec.argv),
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.PIPE,
                        stderr=subprocess.STDOUT,
                        check=False,
                        start_new_session=True,  # its own process group: see the module docstring
                        env={**os.environ, **spec.env},
                        deliver_cancel=_kill_group,
                        **spec.process_options,
                    )
                )
            except OSError as exc:
                self._fail(child, f"{spec.name} cannot start: {exc}")
                return None
            child.process = process
            if self._guardian is not None:
                self._guardian.track(process.pid)
            self._publish()
            drained = trio.Event()
            nursery.start_soon(self._pump, child, process.stdout, drained)
            probe_scope = trio.CancelScope()
            nursery.start_soon(self._probe, child, probe_scope)
            code = await process.wait()
            probe_scope.cancel()
            # Let the last lines through; a grandchild that keeps the pipe open must not hold us up.
            with trio.move_on_after(1.0):
                await drained.wait()
            nursery.cancel_scope.cancel()
        _signal_group(process.pid, signal.SIGKILL)  # stragglers the leader left in its group
        if self._guardian is not None:
            self._guardian.untrack(process.pid)
        child.process = None
        child.is_ready = False
        if not self._stopping:
            child.state = "exited"
            if not (spec.one_shot and code == 0):
                self._output.say(f"{spec.name} (pid {process.pid}) exited with code {code}")
            self._publish()
        return code

    async def _probe(self, child: _Child, scope: trio.CancelScope) -> None:
        spec = child.spec
        with scope, trio.move_on_after(self._ready_timeout) as deadline:
            if isinstance(spec.ready, ExitReady):
                await trio.sleep_forever()  # ready means "exited 0"; _supervise sees that
            while True:
                if await self._check(spec.ready):
                    break
                await trio.sleep(self._probe_interval)
            self._mark_ready(child)
        if deadline.cancelled_caught:
            self._fail(child, f"{spec.name} did not become ready within {self._ready_timeout:g} s")

    async def _check(self, ready: HttpReady | CommandReady) -> bool:
        if isinstance(ready, HttpReady):
            assert self._http is not None
            try:
                response = await self._http.get(ready.url)
            except httpx.HTTPError:
                return False
            return response.status_code == 200
        result = await trio.run_process(
            list(ready.argv), check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        return result.returncode == 0

    async def _pump(self, child: _Child, stream: trio.abc.ReceiveStream, drained: trio.Event) -> None:
        buffer = b""
        try:
            async for chunk in stream:
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    self._emit(child, line)
                if len(buffer) > 65536:  # a very long line without newline: show it in pieces
                    self._emit(child, buffer)
                    buffer = b""
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass
        finally:
            if buffer:
                self._emit(child, buffer)
            drained.set()

    def _emit(self, child: _Child, raw: bytes) -> None:
        text = raw.decode("utf-8", "replace").rstrip("\r")
        child.tail.append(text)
        self._output.line(child.spec.name, text)

    async def _watch_signals(self, cancel_scope: trio.CancelScope) -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
            async for signum in signals:
                name = signal.Signals(signum).name
                if not self._stop.is_set():
                    self._output.say(f"{name} received: stopping (send it again to kill at once)")
                    self.request_stop()
                else:
                    self._output.say(f"{name} received again: killing every child")
                    for child in self._children.values():
                        if child.process is not None:
                            _signal_group(child.process.pid, signal.SIGKILL)
                    cancel_scope.cancel()

    async def _stop_children(self) -> None:
        self._stopping = True
        if self._status != "failed":
            self._status = "stopping"
        self._publish()
        for tier in reversed(self._stop_tiers()):
            running = [child.spec.name for child in tier if child.process is not None]
            if running:
                self._output.say(f"stopping {', '.join(running)}")
            async with trio.open_nursery() as nursery:
                for child in tier:
                    nursery.start_soon(self._stop_child, child)

    def _stop_tiers(self) -> list[list[_Child]]:
        """Children in start order, grouped: neighbours that need the same things started together and
        stop together (the services), so a slow graceful shutdown is paid once per tier, not per child.
        """
        tiers: list[list[_Child]] = []
        for child in self._children.values():
            if tiers and tiers[-1][0].spec.needs == child.spec.needs and child.spec.needs:
                tiers[-1].append(child)
            else:
                tiers.append([child])
        return tiers

    async def _stop_child(self, child: _Child) -> None:
        process = child.process
        if process is None:
            if child.state not in ("waiting", "done"):  # never started / finished stay as they are
                child.state = "stopped"
            return
        child.state = "stopping"
        self._publish()
        _signal_group(process.pid, child.spec.stop_signal)
        with trio.move_on_after(self._stop_grace):
            await process.wait()
        if process.returncode is None:
            self._output.say(f"{child.spec.name} did not stop within {self._stop_grace:g} s: killing it")
            _signal_group(process.pid, signal.SIGKILL)
            with trio.move_on_after(5):
                await process.wait()
        _signal_group(process.pid, signal.SIGKILL)
        child.state = "stopped"
        child.is_ready = False
        self._publish()


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


async def _kill_group(process: trio.Process) -> None:
    """``deliver_cancel`` for ``run_process``: the supervisor is being torn down; no grace left."""
    _signal_group(process.pid, signal.SIGKILL)


class _Guardian:
    """The supervisor's end of :mod:`cluster._guardian`."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self._process = process

    @classmethod
    def start(cls) -> _Guardian:
        process = subprocess.Popen(
            [sys.executable, "-m", "cluster._guardian"],
            stdin=subprocess.PIPE,
            start_new_session=True,  # a terminal's Ctrl-C must not reach it
        )
        return cls(process)

    def _send(self, line: str) -> None:
        assert self._process.stdin is not None
        try:
            self._process.stdin.write(line.encode() + b"\n")
            self._process.stdin.flush()
        except (BrokenPipeError, ValueError):
            pass  # the guard is gone; the children still get stopped normally

    def track(self, pgid: int) -> None:
        self._send(f"+{pgid}")

    def untrack(self, pgid: int) -> None:
        self._send(f"-{pgid}")

    def close(self) -> None:
        assert self._process.stdin is not None
        try:
            self._process.stdin.close()
        except BrokenPipeError:
            pass
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()

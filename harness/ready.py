"""Waiting until a started thing is ready: every wait polls a condition and has a deadline.

`wait_until` polls on the wall clock; it raises `NotReady` at the deadline, or at once when the
process that should get ready has exited (with the tail of its log). `http_ok` and `tcp_open` are the
conditions most waits poll (`redis_answers` too, for what runs only where a Redis does). `wait_until_async` is the trio twin, for a test that polls another
process's writes from inside trio (its deadline is a ``trio.fail_after``).
"""

from __future__ import annotations

import inspect
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable

import httpx
import trio

__all__ = ["NotReady", "http_ok", "redis_answers", "tcp_open", "wait_until", "wait_until_async"]

#: how much of a log a failed wait quotes
LOG_TAIL = 3000


class NotReady(RuntimeError):
    """A wait ran out of time, or the process it waited on exited first."""


def wait_until(
    ready: Callable[[], object],
    *,
    within: float,
    what: str,
    interval: float = 0.05,
    process: subprocess.Popen | None = None,
    log: Callable[[], str] | None = None,
) -> None:
    """Call ``ready`` every ``interval`` seconds until it returns true, for at most ``within`` seconds.

    ``what`` names the thing waited for in the error; ``process``, when given, is watched: its exit
    ends the wait at once. ``log`` returns the text quoted (its tail) when the wait fails."""
    deadline = time.monotonic() + within
    while True:
        if process is not None and process.poll() is not None:
            raise NotReady(_with_log(f"{what}: the process exited with {process.returncode}", log))
        if ready():
            return
        if time.monotonic() > deadline:
            raise NotReady(_with_log(f"{what}: not ready within {within:g} s", log))
        time.sleep(interval)


async def wait_until_async(
    ready: Callable[[], object | Awaitable[object]], *, within: float, interval: float = 0.05
) -> None:
    """Poll ``ready`` (a function or a coroutine function) on trio's clock until it returns true;
    ``trio.TooSlowError`` after ``within`` seconds."""
    with trio.fail_after(within):
        while True:
            result = ready()
            if inspect.isawaitable(result):
                result = await result
            if result:
                return
            await trio.sleep(interval)


def http_ok(url: str, *, timeout: float = 0.5) -> bool:
    """A GET of ``url`` answers 200 now."""
    try:
        return httpx.get(url, timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def tcp_open(port: int, host: str = "127.0.0.1") -> bool:
    """Something accepts TCP connections on ``host:port`` now."""
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def redis_answers(host: str = "127.0.0.1", port: int = 6379) -> bool:
    """A Redis server answers PING on ``host:port`` now (the Redis-backend tests and benchmark run
    only where one does)."""
    try:
        with socket.create_connection((host, port), timeout=0.2) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _with_log(head: str, log: Callable[[], str] | None) -> str:
    tail = log()[-LOG_TAIL:] if log is not None else ""
    return f"{head}:\n{tail}" if tail else head

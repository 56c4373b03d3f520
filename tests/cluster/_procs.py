"""Helpers for tests that start real processes: is a pid gone, wait until it is."""

from __future__ import annotations

import time

import psutil


def pid_gone(pid: int) -> bool:
    """Gone, or a zombie nobody reaped yet (in a container PID 1 may never reap orphans)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_all_gone(pids: list[int], timeout: float = 10.0) -> list[int]:
    """Poll until every pid is gone; return those still alive at the deadline."""
    deadline = time.monotonic() + timeout
    alive = [p for p in pids if not pid_gone(p)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = [p for p in alive if not pid_gone(p)]
    return alive

"""The orphan guard: kills the supervisor's process groups if the supervisor dies without doing it.

The supervisor starts this tiny process first (in its own session, so a terminal's Ctrl-C does not
reach it) and keeps the write end of its stdin. For every child it starts it writes ``+PGID``, and
``-PGID`` once that child is gone. When stdin reaches end of file — the supervisor exited, however it
died, SIGKILL included, because the kernel closes its descriptors — every group still listed gets
SIGTERM, then SIGKILL after a grace period.

Why not ``PR_SET_PDEATHSIG``: it fires when the *thread* that forked the child exits, and
``trio.run_process`` forks from a worker thread that trio retires after a few idle seconds — the
children would be killed at random. It is also Linux-only; this works on any POSIX system.
"""

from __future__ import annotations

import os
import signal
import sys
import time

GRACE_SECONDS = 5.0


def _alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _signal_all(groups: set[int], sig: int) -> None:
    for pgid in groups:
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def main() -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # only end-of-file on stdin ends the watch
    groups: set[int] = set()
    for line in sys.stdin:
        line = line.strip()
        if line.startswith("+") and line[1:].isdigit():
            groups.add(int(line[1:]))
        elif line.startswith("-") and line[1:].isdigit():
            groups.discard(int(line[1:]))
    groups = {g for g in groups if _alive(g)}
    if not groups:
        return 0
    _signal_all(groups, signal.SIGTERM)
    deadline = time.monotonic() + GRACE_SECONDS
    while time.monotonic() < deadline:
        groups = {g for g in groups if _alive(g)}
        if not groups:
            return 0
        time.sleep(0.05)
    _signal_all(groups, signal.SIGKILL)
    return 0


if __name__ == "__main__":
    sys.exit(main())

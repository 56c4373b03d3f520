"""LISTEN for the queue's notifications on a dedicated connection, reconnecting when it drops.

Notifications only make workers react sooner: a job inserted wakes the claim loop, a cancel request
reaches the worker running that job at once. Nothing depends on them arriving — the claim loop polls
and heartbeats see cancel requests — so the listener may be down (PostgreSQL restarting, or a
transaction-mode pooler that does not pass LISTEN) without losing work.
"""

from __future__ import annotations

from collections.abc import Callable

import asyncpg
import structlog
import trio
import trio_asyncio
from floodgate import is_transient_pg_error

from ._timing import ClaimPacer

__all__ = ["CANCEL_CHANNEL", "JOBS_CHANNEL", "PgListener"]

JOBS_CHANNEL = "ingest_jobs"
CANCEL_CHANNEL = "ingest_cancel"

log = structlog.get_logger("ingest.listener")


class PgListener:
    def __init__(self, dsn: str, *, on_jobs: Callable[[], None], on_cancel: Callable[[int], None]) -> None:
        self._dsn = dsn
        self._on_jobs = on_jobs
        self._on_cancel = on_cancel
        self.connected = False
        self.reconnects = 0

    def _callback(self, _conn: object, _pid: int, channel: str, payload: str) -> None:
        # Runs as an asyncio callback inside trio-asyncio's loop, i.e. in trio's thread.
        if channel == JOBS_CHANNEL:
            self._on_jobs()
        elif channel == CANCEL_CHANNEL:
            try:
                self._on_cancel(int(payload))
            except ValueError:
                log.warning("bad_cancel_notification", payload=payload[:100])

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen until cancelled. Reports started at once: a worker must not wait for LISTEN to work."""
        task_status.started()
        pacer = ClaimPacer(error_base=0.2, max_error_delay=5.0)
        while True:
            conn = None
            try:
                conn = await trio_asyncio.aio_as_trio(asyncpg.connect)(self._dsn, timeout=5)
                await trio_asyncio.aio_as_trio(conn.add_listener)(JOBS_CHANNEL, self._callback)
                await trio_asyncio.aio_as_trio(conn.add_listener)(CANCEL_CHANNEL, self._callback)
                dropped = trio.Event()
                conn.add_termination_listener(lambda _conn, ev=dropped: ev.set())
                self.connected = True
                pacer.after_claim(claimed=1, asked=1)  # reset the error backoff
                self._on_jobs()  # anything inserted while we were away: claim now
                await dropped.wait()  # asyncpg delivers the notifications meanwhile
                log.info("listener_connection_lost")
            except Exception as exc:
                if not is_transient_pg_error(exc):
                    log.exception("listener_failed")
                else:
                    log.info("listener_disconnected", error=f"{type(exc).__name__}: {exc}")
            finally:
                self.connected = False
                if conn is not None and not conn.is_closed():
                    with trio.CancelScope(shield=True), trio.move_on_after(2):
                        await trio_asyncio.aio_as_trio(conn.close)()
            self.reconnects += 1
            await trio.sleep(pacer.after_error())

"""The API's queue sampler: the queue's depth, oldest runnable job and expired leases, on an interval.

Workers sample the same figures before each reap. The API samples them too because every deployment
has one, while a deployment may run no worker at all, and a queue nobody works is the one an operator
must see (`_metrics.QueueGauges`).
"""

from __future__ import annotations

import structlog
import trio
from floodgate import FloodgateError, is_transient_pg_error

from . import _queue as q
from ._db import Database
from ._metrics import QueueGauges

__all__ = ["sample_queue"]

log = structlog.get_logger("ingest.sampler")


async def sample_queue(
    db: Database,
    gauges: QueueGauges,
    *,
    interval: float,
    sample_within: float = 10.0,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Sample now, then every ``interval`` seconds, until cancelled. A sample that fails or takes
    longer than ``sample_within`` seconds is skipped (the gauges keep their last values) and logged."""
    task_status.started()
    while True:
        try:
            with trio.fail_after(sample_within):
                depth = await db.run(q.queue_depth)
            gauges.set_depth(depth)
        except Exception as exc:
            if isinstance(exc, trio.TooSlowError | FloodgateError) or is_transient_pg_error(exc):
                log.info("queue_sample_skipped", error=f"{type(exc).__name__}: {exc}")
            else:
                log.exception("queue_sample_failed")
        await trio.sleep(interval)

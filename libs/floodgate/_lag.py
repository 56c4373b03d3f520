"""Event-loop lag: how late does a ``sleep`` wake up?

A task that is never scheduled late means the loop is keeping up; lag that grows means some
code blocks the loop (CPU work, a sync call) and every deadline in the process slips with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import anyio
import structlog

from ._metrics import metrics_for

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

__all__ = ["LoopLagMonitor", "LoopLagStatistics"]

_log = structlog.get_logger("floodgate")


@dataclass(frozen=True)
class LoopLagStatistics:
    """A snapshot of a `LoopLagMonitor`: how late (seconds) the last and the worst wake-up were."""

    samples: int
    last_lag: float
    max_lag: float


class LoopLagMonitor:
    """Run ``await nursery.start(monitor.run)``: every ``interval`` seconds it measures how
    late ``sleep(interval)`` returned, reports it in ``floodgate_loop_lag_seconds`` and logs a
    warning when the lag exceeds ``warn_after``."""

    def __init__(
        self, *, interval: float = 0.25, warn_after: float = 0.1, registry: CollectorRegistry | None = None
    ):
        if interval <= 0:
            raise ValueError("interval must be > 0")
        self.interval = interval
        self.warn_after = warn_after
        self._metrics = metrics_for(registry)
        self._samples = 0
        self._last = 0.0
        self._max = 0.0

    def record(self, lag: float) -> None:
        lag = max(0.0, lag)
        self._samples += 1
        self._last = lag
        if lag > self._max:
            self._max = lag
            if self._metrics is not None:
                self._metrics.loop_lag_max.set(lag)
        if self._metrics is not None:
            self._metrics.loop_lag.observe(lag)
        if lag > self.warn_after:
            _log.warning("floodgate.loop_lag", lag=round(lag, 4))

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            start = anyio.current_time()
            await anyio.sleep(self.interval)
            self.record(anyio.current_time() - start - self.interval)

    def statistics(self) -> LoopLagStatistics:
        return LoopLagStatistics(self._samples, self._last, self._max)

    def __repr__(self) -> str:
        return f"<LoopLagMonitor samples={self._samples} last={self._last:.4f}s max={self._max:.4f}s>"

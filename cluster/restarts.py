"""The crash policy's arithmetic: when a crashed child is restarted, and when the supervisor gives up.

Pure state, no clock reads: the supervisor passes ``now`` in, so the policy is tested exhaustively
without processes or sleeps.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import floodgate

__all__ = ["RestartPolicy", "RestartStatistics", "RestartTracker"]


@dataclass(frozen=True)
class RestartPolicy:
    """Restart a crashed child after ``base_delay * 2**(n-1)`` seconds, capped at ``max_delay``
    (``floodgate.backoff_ceiling``), where ``n`` counts its crashes inside the last ``window``
    seconds; the crash that would make it more than ``max_restarts`` in the window is not
    restarted (the supervisor stops the cluster instead).
    """

    max_restarts: int = 5
    window: float = 60.0
    base_delay: float = 0.5
    max_delay: float = 8.0


@dataclass(frozen=True)
class RestartStatistics:
    restarts: int
    crashes_in_window: int
    gave_up: bool


class RestartTracker:
    """One child's crash history under a :class:`RestartPolicy`."""

    def __init__(self, policy: RestartPolicy) -> None:
        self._policy = policy
        self._recent: deque[float] = deque()
        self._restarts = 0
        self._gave_up = False

    def on_crash(self, now: float) -> float | None:
        """Record a crash at ``now``; return the delay before restarting, or None to give up."""
        while self._recent and now - self._recent[0] >= self._policy.window:
            self._recent.popleft()
        if len(self._recent) >= self._policy.max_restarts:
            self._gave_up = True
            return None
        self._recent.append(now)
        self._restarts += 1
        policy = self._policy
        return floodgate.backoff_ceiling(len(self._recent), base=policy.base_delay, cap=policy.max_delay)

    def statistics(self) -> RestartStatistics:
        return RestartStatistics(self._restarts, len(self._recent), self._gave_up)

    def __repr__(self) -> str:
        return f"<RestartTracker restarts={self._restarts} in_window={len(self._recent)} {self._policy}>"

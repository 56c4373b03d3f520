"""Degradation: run a step that may fail without failing the request, and say so.

``optional`` runs a step; when its dependency is overloaded, open, too slow or failing (any
`FloodgateError`), or the step's own ``within`` time runs out, it returns the fallback and
records the step in `Degradations`, so that the response can say ``"degraded": ["rerank"]`` —
with the dependency that failed, why, and (``fallback_name``) what was served instead.
Cancellation of the request itself is never swallowed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import structlog

from ._errors import FloodgateError
from ._metrics import metrics_for

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

__all__ = ["Degradation", "Degradations", "optional"]

T = TypeVar("T")
_log = structlog.get_logger("floodgate")


@dataclass(frozen=True)
class Degradation:
    step: str
    dependency: str
    reason: str
    #: what was served instead (a name the caller chose, e.g. the budget file's ``fused_score``)
    fallback: str | None = None

    def as_dict(self) -> dict[str, str]:
        item = {"step": self.step, "dependency": self.dependency, "reason": self.reason}
        if self.fallback is not None:
            item["fallback"] = self.fallback
        return item


class Degradations:
    """The steps of one request that fell back. One per request; safe to share between the
    tasks of a nursery (trio tasks do not run in parallel)."""

    def __init__(self, *, registry: CollectorRegistry | None = None):
        self._items: list[Degradation] = []
        self._metrics = metrics_for(registry)

    def record(
        self, step: str, *, dependency: str | None = None, reason: str, fallback: str | None = None
    ) -> None:
        item = Degradation(step, dependency or step, reason, fallback)
        self._items.append(item)
        if self._metrics is not None:
            self._metrics.degraded.labels(step, reason).inc()
        _log.warning("floodgate.degraded", step=step, dependency=item.dependency, reason=reason)

    @property
    def steps(self) -> list[str]:
        """Names of the degraded steps, each once, in the order they first fell back."""
        return list(dict.fromkeys(item.step for item in self._items))

    def as_list(self) -> list[dict[str, str]]:
        return [item.as_dict() for item in self._items]

    def __iter__(self) -> Iterator[Degradation]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __bool__(self) -> bool:
        return bool(self._items)

    def __repr__(self) -> str:
        return f"<Degradations {self.steps}>"


async def optional(
    step: str,
    fn: Callable[..., Awaitable[T]],
    *args: Any,
    fallback: Any = None,
    fallback_factory: Callable[[FloodgateError | None], Any] | None = None,
    degradations: Degradations | None = None,
    within: float | None = None,
    dependency: str | None = None,
    fallback_name: str | None = None,
) -> Any:
    """``await fn(*args)``, or the fallback when the step cannot be done in time.

    Falls back on any `FloodgateError` (Overloaded, CircuitOpen, DeadlineExceeded,
    DependencyError, RetryBudgetExhausted) and, when ``within`` is given, when the step
    takes longer than ``within`` seconds (reason ``"timeout"``). ``fallback_factory`` (called
    with the error, or None on ``within``) computes the fallback instead of ``fallback``.
    Other exceptions and the request's own cancellation propagate.

    The record names the dependency the error names, else ``dependency`` (the one the step
    calls: what a ``within`` timeout is charged to), else the step; and ``fallback_name``.
    """

    def fall_back(error: FloodgateError | None, reason: str, failed: str | None) -> Any:
        charged = failed or dependency
        if degradations is not None:
            degradations.record(step, dependency=charged, reason=reason, fallback=fallback_name)
        else:
            _log.warning("floodgate.degraded", step=step, dependency=charged or step, reason=reason)
        return fallback_factory(error) if fallback_factory is not None else fallback

    try:
        if within is None:
            return await fn(*args)
        with anyio.CancelScope(deadline=anyio.current_time() + within) as scope:
            return await fn(*args)
        # Only reached when our own scope was cancelled (the step ran out of its time).
        assert scope.cancelled_caught
        return fall_back(None, "timeout", None)
    except FloodgateError as exc:
        return fall_back(exc, exc.code, exc.dependency)

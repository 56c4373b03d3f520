"""The clock, the deadline and cancel scopes on the hot path, bound to the running backend.

A guarded call reads the clock twice, the effective deadline once and usually opens one
cancel scope. Through anyio each of these dispatches via sniffio and wraps trio's objects,
which is most of a guarded call's overhead. `hot_path()` resolves the backend once per call
and hands back direct functions: trio's own under trio, anyio's under anything else. The
semantics are the same (anyio delegates to these very functions under trio); everything off
the hot path uses anyio.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import anyio
import sniffio

__all__ = ["HotPath", "hot_path"]


class HotPath(NamedTuple):
    current_time: Callable[[], float]
    current_effective_deadline: Callable[[], float]
    #: ``cancel_scope(deadline)``: a cancel scope with ``.cancelled_caught``
    cancel_scope: Callable[[float], Any]


def _anyio_scope(deadline: float) -> anyio.CancelScope:
    return anyio.CancelScope(deadline=deadline)


_ANYIO = HotPath(anyio.current_time, anyio.current_effective_deadline, _anyio_scope)
_TRIO: HotPath | None = None


def _trio_hot_path() -> HotPath:
    global _TRIO
    if _TRIO is None:
        import trio

        def trio_scope(deadline: float) -> trio.CancelScope:
            return trio.CancelScope(deadline=deadline)

        _TRIO = HotPath(trio.current_time, trio.current_effective_deadline, trio_scope)
    return _TRIO


def hot_path() -> HotPath:
    """The hot-path operations for the backend running the current task."""
    if sniffio.current_async_library() == "trio":
        return _TRIO if _TRIO is not None else _trio_hot_path()
    return _ANYIO

"""Bounded fan-out inside one request: all-or-nothing (`gather_strict`) or best-effort (`gather_settled`).

Two limits bound every fan-out. The per-request one is a `trio.CapacityLimiter` of the endpoint's
``fan_out`` (so one request cannot take a whole dependency budget); the global one is the
dependency's gate inside the toolkit call (so all requests together stay inside the budget). Every
branch runs in one nursery: when the request ends, for whatever reason, no branch outlives it.

Trio nurseries raise an ``ExceptionGroup``; a service edge needs the one error that explains the
failure (an ``Overloaded`` is a 429, a ``DeadlineExceeded`` a 504). `collapse` picks it, but
never swallows a ``Cancelled``: that belongs to an enclosing cancel scope (the request deadline).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import chassis
import floodgate
import trio

__all__ = ["Settled", "collapse", "gather_settled", "gather_strict"]

T = TypeVar("T")


@dataclass(frozen=True)
class Settled(Generic[T]):
    """The outcome of one best-effort branch: a value, or the toolkit error that ended it."""

    value: T | None = None
    error: floodgate.FloodgateError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def collapse(group: BaseExceptionGroup) -> BaseException:
    """The exception to raise for a nursery's ``group``: its first toolkit error, unless the group
    holds a ``Cancelled`` (then the group itself, for the cancel scope that is unwinding)."""
    cancelled, _ = group.split(trio.Cancelled)
    if cancelled is not None:
        return group
    for leaf in chassis.exception_leaves(group):
        if isinstance(leaf, floodgate.FloodgateError):
            return leaf
    return group


async def gather_strict(calls: Sequence[Callable[[], Awaitable[T]]], *, limit: int) -> list[T]:
    """Run ``calls`` at most ``limit`` at a time; all results in order, or the first failure.

    The first branch to fail cancels the others and its error is raised unwrapped.
    """
    results: list[T | None] = [None] * len(calls)

    async def run(index: int, call: Callable[[], Awaitable[T]]) -> None:
        results[index] = await call()

    await _run_bounded(calls, limit, run)
    return results  # type: ignore[return-value]


async def gather_settled(calls: Sequence[Callable[[], Awaitable[T]]], *, limit: int) -> list[Settled[T]]:
    """Run ``calls`` at most ``limit`` at a time; each one's value or toolkit error, in order.

    Only toolkit errors (overload, open breaker, deadline, dependency failure) are settled;
    anything else is a bug and propagates.
    """
    outcomes: list[Settled[T]] = [Settled() for _ in calls]

    async def run(index: int, call: Callable[[], Awaitable[T]]) -> None:
        try:
            outcomes[index] = Settled(value=await call())
        except floodgate.FloodgateError as exc:
            outcomes[index] = Settled(error=exc)

    await _run_bounded(calls, limit, run)
    return outcomes


async def _run_bounded(
    calls: Sequence[Callable[[], Awaitable[T]]],
    limit: int,
    run: Callable[[int, Callable[[], Awaitable[T]]], Awaitable[None]],
) -> None:
    """``run(index, call)`` for every call in one nursery, at most ``limit`` at a time; a failure
    cancels the rest and is raised unwrapped when it is the only meaningful one (``collapse``)."""
    limiter = trio.CapacityLimiter(limit)

    async def bounded(index: int, call: Callable[[], Awaitable[T]]) -> None:
        async with limiter:
            await run(index, call)

    try:
        async with trio.open_nursery() as nursery:
            for index, call in enumerate(calls):
                nursery.start_soon(bounded, index, call)
    except BaseExceptionGroup as group:
        chosen = collapse(group)
        if chosen is group:
            raise
        raise chosen from None

"""Time spent per step of a request, reported in the ``Server-Timing`` response header.

A handler wraps each step in ``with timing.step("embed"):``; steps that run in parallel each
record their own duration, so the header shows where the wall time went (``embed;dur=21.0,
vector_search;dur=4.2, search;dur=151.3, rerank;dur=50.8, answer;dur=402.1, total;dur=612.4``).
Durations come from trio's clock, so under a MockClock they are exact virtual times.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import trio

__all__ = ["ServerTiming", "StepTime"]

_TOKEN = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclass(frozen=True)
class StepTime:
    name: str
    seconds: float
    dependency: str | None = None
    cancelled: bool = False  # the step was cut by a cancellation (the request deadline)


class ServerTiming:
    """Collects step durations of one request (not shared between requests)."""

    def __init__(self, *, clock: Callable[[], float] = trio.current_time) -> None:
        self._clock = clock
        self._started_at = clock()
        self._steps: list[StepTime] = []

    @contextmanager
    def step(self, name: str, *, dependency: str | None = None) -> Iterator[None]:
        """Record the time spent in the block as ``name``, whether it succeeds, fails or is cancelled."""
        if not _TOKEN.match(name):
            raise ValueError(f"step name {name!r} is not a valid Server-Timing token")
        start = self._clock()
        cancelled = False
        try:
            yield
        except BaseException as exc:
            # A nursery inside the step re-raises its children's cancellations as a group.
            cancelled = isinstance(exc, trio.Cancelled) or (
                isinstance(exc, BaseExceptionGroup) and exc.split(trio.Cancelled)[0] is not None
            )
            raise
        finally:
            self._steps.append(StepTime(name, self._clock() - start, dependency, cancelled))

    def steps(self) -> tuple[StepTime, ...]:
        return tuple(self._steps)

    def cancelled_steps(self) -> tuple[StepTime, ...]:
        """Steps a cancellation cut short: what the request was waiting for when its deadline hit."""
        return tuple(s for s in self._steps if s.cancelled)

    def header(self) -> str:
        """The ``Server-Timing`` value: each step in the order it ended, then ``total``."""
        parts = [
            f"{s.name};dur={s.seconds * 1000:.1f}" + (';desc="cancelled"' if s.cancelled else "")
            for s in self._steps
        ]
        parts.append(f"total;dur={(self._clock() - self._started_at) * 1000:.1f}")
        return ", ".join(parts)

    def __repr__(self) -> str:
        return f"<ServerTiming steps={[s.name for s in self._steps]}>"

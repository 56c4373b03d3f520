"""Circuit breaker: stop calling a dependency that is failing or too slow, then probe it.

::

    closed ──(failure rate or slow-call rate >= threshold, over >= min_calls in window)──> open
    open ──(open_duration elapsed, at the next call)──> half_open
    half_open ──(half_open_probes probes all succeed)──> closed
    half_open ──(any probe fails or is slow)──> open

All transitions are synchronous methods taking ``now``; `Dependency` wraps them around each
attempt. In half-open, at most ``half_open_probes`` calls are let through at a time; the rest
get `CircuitOpen`. Results of calls that started in an earlier state are ignored, so a slow
call from before the circuit opened cannot close it.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

from ._errors import CircuitOpen
from ._window import RollingCounts

if TYPE_CHECKING:
    from ._budget import BreakerPolicy

__all__ = ["BreakerState", "BreakerStatistics", "CircuitBreaker", "Ticket"]


class Ticket(NamedTuple):
    """What `CircuitBreaker.admit` hands out: the state generation and whether it is a probe."""

    generation: int
    probe: bool


class BreakerState(enum.IntEnum):
    """A circuit's state; the values are the ones exported in the floodgate_breaker_state gauge."""

    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


@dataclass(frozen=True)
class BreakerStatistics:
    """A snapshot of a `CircuitBreaker`; ``calls``, ``failures`` and ``slow_calls`` cover the
    sliding window, ``transitions`` counts every state change since creation."""

    name: str
    state: BreakerState
    calls: int
    failures: int
    slow_calls: int
    probes_in_flight: int
    opened_at: float | None
    transitions: int


class CircuitBreaker:
    """A failure-rate and slow-call-rate circuit breaker over a sliding window.

    Use ``ticket = breaker.admit(now)`` before an attempt (raises `CircuitOpen`), then exactly
    one of ``breaker.record(now, ticket, failed=..., duration=...)`` or
    ``breaker.cancel(ticket)`` (the attempt was cancelled or its outcome says nothing about
    the dependency's health). The ticket remembers the state's generation, so outcomes of
    calls admitted before a transition are ignored.
    """

    def __init__(
        self,
        name: str,
        policy: BreakerPolicy,
        *,
        on_transition: Callable[[str, BreakerState, BreakerState], None] | None = None,
    ):
        self.name = name
        self.policy = policy
        self._on_transition = on_transition
        self._state = BreakerState.CLOSED
        self._counts = RollingCounts(policy.window, fields=3)  # calls, failures, slow
        self._opened_at: float | None = None
        self._probes_in_flight = 0
        self._probe_successes = 0
        self._transitions = 0

    @property
    def state(self) -> BreakerState:
        return self._state

    def _move(self, to: BreakerState, now: float) -> None:
        before = self._state
        self._state = to
        self._transitions += 1
        self._probes_in_flight = 0
        self._probe_successes = 0
        if to is BreakerState.OPEN:
            self._opened_at = now
        elif to is BreakerState.CLOSED:
            self._opened_at = None
            self._counts.clear()
        if self._on_transition is not None:
            self._on_transition(self.name, before, to)

    def admit(self, now: float) -> Ticket:
        """Let a call through or raise `CircuitOpen`."""
        state = self._state
        if state is BreakerState.CLOSED:
            return Ticket(self._transitions, False)
        if state is BreakerState.OPEN:
            assert self._opened_at is not None
            reopen_at = self._opened_at + self.policy.open_duration
            if now < reopen_at:
                raise CircuitOpen("circuit open", dependency=self.name, retry_after=reopen_at - now)
            self._move(BreakerState.HALF_OPEN, now)
        if self._probes_in_flight >= self.policy.half_open_probes:
            raise CircuitOpen(
                "circuit half-open, probes in flight",
                dependency=self.name,
                retry_after=self.policy.open_duration,
            )
        self._probes_in_flight += 1
        return Ticket(self._transitions, True)

    def record(self, now: float, ticket: Ticket, *, failed: bool, duration: float) -> None:
        """Record the outcome of an admitted call."""
        if ticket.generation != self._transitions:
            return  # admitted before the last transition: says nothing about now
        slow = duration >= self.policy.slow_call_duration
        if ticket.probe:
            self._probes_in_flight -= 1
            if failed or slow:
                self._move(BreakerState.OPEN, now)
                return
            self._probe_successes += 1
            if self._probe_successes >= self.policy.half_open_probes:
                self._move(BreakerState.CLOSED, now)
            return
        self._counts.add(now, 1, int(failed), int(slow))
        calls, failures, slow_calls = self._counts.totals(now)
        if calls >= self.policy.min_calls and (
            failures >= self.policy.failure_rate * calls or slow_calls >= self.policy.slow_call_rate * calls
        ):
            self._move(BreakerState.OPEN, now)

    def cancel(self, ticket: Ticket) -> None:
        """The admitted call ended without an outcome worth recording."""
        if ticket.probe and ticket.generation == self._transitions:
            self._probes_in_flight -= 1

    def statistics(self, now: float) -> BreakerStatistics:
        calls, failures, slow_calls = self._counts.totals(now)
        return BreakerStatistics(
            self.name,
            self._state,
            calls,
            failures,
            slow_calls,
            self._probes_in_flight,
            self._opened_at,
            self._transitions,
        )

    def __repr__(self) -> str:
        return f"<CircuitBreaker {self.name!r} {self._state.name.lower()} transitions={self._transitions}>"

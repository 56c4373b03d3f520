"""Degradable steps: run a step, and when its dependency fails, fall back and say so.

The budget file names, per endpoint, which dependencies may degrade and the name of their
fallback (``degradable = { rerank = "fused_score", llm = "passages_only" }``). `degradable`
runs a step under that policy with ``floodgate.optional``: a toolkit error (overloaded, circuit
open, deadline, dependency error, retry budget spent) becomes the fallback value, and the step is
recorded in the request's ``floodgate.Degradations`` (metric + log event), which the response
lists as ``degraded``. A dependency the policy does not list fails the request instead: the
operator decides in the budget file, not the code. The file must say so, too: every dependency an
endpoint calls is named either ``degradable`` or ``required``, and nothing else is (checked when
the app is built: ``floodgate.Budget.failure_policy_problems``), so the failure policy that
``floodgate plan`` prints is the one the endpoint follows.

A degradable step never eats the whole request deadline: it gets the time left minus
``reserve``, so the request still has time to answer with the fallback instead of ending in a
504 (reason ``deadline_exceeded``).
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Mapping
from typing import TypeVar

import floodgate

from ._models import DegradationNote

__all__ = ["degradable", "degradations_of"]

T = TypeVar("T")


async def degradable(
    step: str,
    call: Callable[[], Awaitable[T]],
    *,
    dependency: str,
    policy: floodgate.EndpointPolicy,
    fallback: Callable[[], T],
    degradations: floodgate.Degradations,
    reserve: float,
) -> T:
    """``await call()``, or — if the policy lets ``dependency`` degrade and it fails — ``fallback()``."""
    if dependency not in policy.degradable:
        return await call()
    left = floodgate.time_left()
    within = None if math.isinf(left) else max(0.0, left - reserve)

    async def bounded() -> T:
        try:
            with floodgate.deadline_after(within):
                return await call()
        except floodgate.DeadlineExceeded as exc:
            if exc.dependency is not None:
                raise
            raise floodgate.DeadlineExceeded(
                f"{step} cut short to keep {reserve:g}s of the request deadline for the answer",
                dependency=dependency,
            ) from exc

    return await floodgate.optional(
        step,
        bounded,
        fallback_factory=lambda _error: fallback(),
        degradations=degradations,
        dependency=dependency,
        fallback_name=policy.degradable[dependency],
    )


def degradations_of(
    degradations: floodgate.Degradations,
    policy: floodgate.EndpointPolicy,
    *,
    extra: Mapping[str, str] | None = None,
) -> list[DegradationNote]:
    """The response's ``degraded`` list: each fallen-back step, its dependency, why, and the
    fallback served — as recorded (the budget file's name, see `degradable`), else looked up
    (``extra`` names fallbacks of endpoint-built-in steps)."""
    names = {**policy.degradable, **(extra or {})}
    return [
        DegradationNote(
            step=item.step,
            dependency=item.dependency,
            reason=item.reason,
            fallback=item.fallback or names.get(item.step) or names.get(item.dependency, "none"),
        )
        for item in degradations
    ]

"""Token and cost budgets per tenant: the windows, the descriptors that count them, the client's headers.

The gateway asks before each LLM request whether the tenant has anything left, with descriptors of
zero hits ``[("budget", <window>), ("tenant", <t>)]`` (over when the window's counter has reached its
limit), and reports what the answer used once the response is complete (Envoy's
``apply_on_stream_done``, the hits taken from the online service's usage header): the same
descriptors with the tokens (or the cost in micro-dollars) as hits, plus
``[("budget", <window>), ("tenant", <t>), ("route", <endpoint>)]`` that only count, for
``GET /v1/usage``. With each ask and each report comes one start or one end of the tenant's
request (`in_flight_descriptor_entries`): the ask then also reserves the requests in flight at their
mean use (`_in_flight`), so a window ends over its budget only by how far they differ from it. The
limits live in ``config/ratelimit.yaml`` under ``key: budget``, generated from
the budget file's tenant table (``python -m cluster.ratelimit_config``), each named after its window
(``rate_limit.name``): that name is how a status is recognised as a budget's here.

A budget's status carries no ``current_limit`` in the answer to Envoy, so Envoy's own
``x-ratelimit-*`` headers keep describing the request limits; the budgets get their own headers,
in OpenAI's convention (`budget_headers`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ._config import Unit
from ._in_flight import BUDGET_KEY, REQUESTS_FINISHED, REQUESTS_STARTED
from ._limiter import Code, DescriptorDecision

__all__ = [
    "BUDGET_KEY",
    "BUDGET_WINDOWS",
    "COST_SCALE",
    "REQUESTS_FINISHED",
    "REQUESTS_STARTED",
    "BudgetWindow",
    "budget_descriptor_entries",
    "budget_headers",
    "budget_window",
    "in_flight_descriptor_entries",
    "reset_duration",
]

#: counter units per US dollar: costs are counted in micro-dollars (counters are integers)
COST_SCALE = 1_000_000


@dataclass(frozen=True)
class BudgetWindow:
    """One budget window: its name (the budget file's key and the limit's ``name``), its unit, what
    it counts (``tokens`` or ``cost``) and the counter units per unit of that (1 or `COST_SCALE`)."""

    name: str
    unit: Unit
    measure: str
    scale: int

    def amount(self, counted: int) -> float | int:
        """A counter value in the window's own unit (tokens, or dollars)."""
        return counted if self.scale == 1 else counted / self.scale


BUDGET_WINDOWS = (
    BudgetWindow("tokens_per_minute", Unit.MINUTE, "tokens", 1),
    BudgetWindow("tokens_per_day", Unit.DAY, "tokens", 1),
    BudgetWindow("cost_per_day", Unit.DAY, "cost", COST_SCALE),
)
_BY_NAME = {window.name: window for window in BUDGET_WINDOWS}


def budget_window(name: str | None) -> BudgetWindow | None:
    """The budget window a limit named ``name`` counts, or None for any other limit."""
    return _BY_NAME.get(name) if name is not None else None


def reset_duration(seconds: float) -> str:
    """``seconds`` (rounded up) as OpenAI writes ``x-ratelimit-reset-tokens``: ``59s``, ``6m0s``, ``13h2m5s``."""
    whole = max(0, math.ceil(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def _format(window: BudgetWindow, counted: int) -> str:
    amount = window.amount(counted)
    return str(amount) if isinstance(amount, int) else f"{amount:.6f}".rstrip("0").rstrip(".")


def budget_headers(statuses: Iterable[DescriptorDecision]) -> list[tuple[str, str]]:
    """``x-ratelimit-{limit,remaining,reset}-{tokens,cost}`` for the budget statuses of one decision:
    per measure, the window with the least left (on a tie, the one that resets last), so the client
    sees what will stop it first. Empty when the decision has no budget status."""
    tightest: dict[str, tuple[BudgetWindow, DescriptorDecision]] = {}
    for status in statuses:
        limit = status.limit
        window = budget_window(limit.name) if limit is not None else None
        if window is None or status.duration_until_reset is None:
            continue
        seen = tightest.get(window.measure)
        if seen is None or _tighter(status, seen[1]):
            tightest[window.measure] = (window, status)
    headers = []
    for measure, (window, status) in tightest.items():
        assert status.limit is not None and status.duration_until_reset is not None
        headers += [
            (f"x-ratelimit-limit-{measure}", _format(window, status.limit.requests_per_unit)),
            (f"x-ratelimit-remaining-{measure}", _format(window, status.limit_remaining)),
            (f"x-ratelimit-reset-{measure}", reset_duration(status.duration_until_reset)),
        ]
    return headers


def _tighter(status: DescriptorDecision, than: DescriptorDecision) -> bool:
    if status.code is not than.code:
        return status.code is Code.OVER_LIMIT
    if status.limit_remaining != than.limit_remaining:
        return status.limit_remaining < than.limit_remaining
    return (status.duration_until_reset or 0.0) > (than.duration_until_reset or 0.0)


def budget_descriptor_entries(
    window: str, tenant: str, route: str | None = None
) -> Sequence[tuple[str, str]]:
    """The entries of a budget descriptor (with ``route``: the per-endpoint count)."""
    entries = [(BUDGET_KEY, window), ("tenant", tenant)]
    if route is not None:
        entries.append(("route", route))
    return tuple(entries)


def in_flight_descriptor_entries(tenant: str, *, finished: bool = False) -> Sequence[tuple[str, str]]:
    """The entries of the descriptor that counts one of ``tenant``'s requests starting (the ask) or,
    with ``finished``, ending (the report at the end of the stream): `_in_flight`'s reservation."""
    return ((BUDGET_KEY, REQUESTS_FINISHED if finished else REQUESTS_STARTED), ("tenant", tenant))

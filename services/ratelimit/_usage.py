"""``GET /v1/usage``: what a tenant has used of its token and cost budgets in the current windows.

Read from the same counters the gateway's decisions use (memory or Redis), counting nothing. The
tenant is the gateway's header (set from the API key; a client cannot choose it), so a caller only
ever sees its own usage: there is no parameter that names another tenant.
"""

from __future__ import annotations

from typing import Any

from ._budgets import BUDGET_WINDOWS, budget_descriptor_entries
from ._limiter import Descriptor, RateLimiter

__all__ = ["USAGE_PATH", "tenant_usage"]

USAGE_PATH = "/v1/usage"


def tenant_usage(limiter: RateLimiter, domain: str, tenant: str) -> dict[str, Any]:
    """The usage report of ``tenant``: per budget window its limit, what was used (in all, and per
    endpoint counted under it), what is left and when the window resets; and its requests in flight,
    whose mean use the next ask reserves. Windows without a configured limit are left out. Raises
    `CounterStoreError`."""
    config = limiter.config.domain(domain)
    plan: list[tuple[str, list[str]]] = []
    descriptors: list[Descriptor] = []
    for window in BUDGET_WINDOWS:
        entries = budget_descriptor_entries(window.name, tenant)
        node = config.node(entries) if config is not None else None
        if node is None or node.rate_limit is None or node.rate_limit.unlimited:
            continue
        routes = sorted(
            child.value for child in node.children.values() if child.key == "route" and child.value
        )
        plan.append((window.name, routes))
        descriptors.append(Descriptor(tuple(entries)))
        descriptors += [Descriptor(tuple(budget_descriptor_entries(window.name, tenant, r))) for r in routes]
    readings = iter(limiter.read(domain, descriptors))
    by_name = {window.name: window for window in BUDGET_WINDOWS}
    windows: dict[str, Any] = {}
    for name, routes in plan:
        window = by_name[name]
        total = next(readings)
        assert total is not None  # matched above
        endpoints = {}
        for route in routes:
            reading = next(readings)
            endpoints[route] = window.amount(reading.used if reading is not None else 0)
        limit = total.limit.requests_per_unit
        windows[name] = {
            "unit": "tokens" if window.measure == "tokens" else "usd",
            "limit": window.amount(limit),
            "used": window.amount(total.used),
            "remaining": window.amount(max(0, limit - total.used)),
            "resets_in_seconds": round(total.reset_in, 3),
            "endpoints": endpoints,
        }
    # what the budgets hold back for the requests still running (each at the mean a request used)
    return {
        "tenant": tenant,
        "windows": windows,
        "requests_in_flight": limiter.requests_in_flight(domain, tenant),
    }

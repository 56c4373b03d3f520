"""The token and cost budgets of ``config/ratelimit.yaml``, written from the budget file's tenant table.

The budgets are set once, in ``config/budget.toml`` (``[tenants.default]`` and ``[tenants.<name>]``:
``tokens_per_minute``, ``tokens_per_day``, ``cost_per_day``); the rate-limit service reads limits in
the reference service's descriptor format. This module writes the second from the first: the part of
``config/ratelimit.yaml`` below `MARKER` (the request limits above it are written by hand), one tree
per budget window under ``key: budget`` (`services.ratelimit._budgets`):

- ``tenant`` (any tenant): ``[tenants.default]``'s limit; ``tenant: <name>``: a tenant whose own
  table sets another value (``unlimited`` when it sets none where the default has one);
- under each, one ``route`` per online endpoint that calls the LLM, in shadow mode (counted for
  ``GET /v1/usage``, never refusing).

Costs are counted in micro-dollars (`services.ratelimit.COST_SCALE`): counters are integers.
``python -m cluster.ratelimit_config`` rewrites the file; ``--check`` exits 1 when it is stale
(``tests/gateway/test_ratelimit_budgets.py`` runs the same check). The local cluster runs a copy
rendered from its own budget file at start (`write_ratelimit_config`, in its pre-flight).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from pathlib import Path

import floodgate

from services.online import ENDPOINTS
from services.ratelimit import BUDGET_KEY, BUDGET_WINDOWS, BudgetWindow

__all__ = [
    "MARKER",
    "RATELIMIT_CONFIG",
    "budget_section",
    "llm_routes",
    "main",
    "render",
    "write_ratelimit_config",
]

RATELIMIT_CONFIG = Path(__file__).resolve().parent.parent / "config" / "ratelimit.yaml"
BUDGET_FILE = Path(__file__).resolve().parent.parent / "config" / "budget.toml"

#: the first line of the generated part; everything from it to the end of the file is rewritten
MARKER = "  # ---- Token and cost budgets per tenant: GENERATED from config/budget.toml [tenants]"


def llm_routes(budget: floodgate.Budget) -> list[str]:
    """The online endpoints whose requests call the LLM (their tokens count against the budgets)."""
    return [e.name for e in ENDPOINTS if "llm" in budget.endpoint(e.name).calls]


def _limit(window: BudgetWindow, value: float | None) -> str:
    if value is None:
        return f"{{unlimited: true, name: {window.name}}}"
    count = round(value * window.scale)
    return f"{{unit: {window.unit.name.lower()}, requests_per_unit: {count}, name: {window.name}}}"


def _tenant_node(
    window: BudgetWindow, value: float | None, routes: Iterable[str], tenant: str | None
) -> list[str]:
    limit = _limit(window, value)
    head = "      - key: tenant"
    lines = [head if tenant is None else f"{head}\n        value: {tenant}"]
    lines.append(f"        rate_limit: {limit}")
    if value is not None:
        lines.append("        descriptors:")
        lines += [
            f"          - {{key: route, value: {route}, shadow_mode: true, rate_limit: {limit}}}"
            for route in routes
        ]
    return lines


def budget_section(budget: floodgate.Budget) -> str:
    """The generated part of ``config/ratelimit.yaml`` for ``budget`` (from `MARKER` to the end)."""
    table = budget.tenants
    default = table.policy("default")
    routes = llm_routes(budget)
    lines = [
        MARKER,
        "  # (python -m cluster.ratelimit_config; do not edit below: edit the budget file and run it again).",
        "  # The gateway asks [budget, tenant] with zero hits before an LLM request (over when nothing is",
        "  # left) and reports the tokens (cost: micro-dollars) the answer used to [budget, tenant] and",
        "  # [budget, tenant, route] (shadow: counted for GET /v1/usage, never refusing). docs/tenants.md",
    ]
    for window in BUDGET_WINDOWS:
        default_value = getattr(default, window.name)
        overrides = sorted(
            (name, value)
            for name in table.configured
            if (value := getattr(table.policy(name), window.name)) != default_value
        )
        if default_value is None and not overrides:
            continue
        lines += [f"  - key: {BUDGET_KEY}", f"    value: {window.name}", "    descriptors:"]
        lines += _tenant_node(window, default_value, routes, None)
        for name, value in overrides:
            lines += _tenant_node(window, value, routes, name)
    return "\n".join(lines) + "\n"


def render(current: str, budget: floodgate.Budget) -> str:
    """``current`` (the file's text) with its generated part replaced by ``budget``'s."""
    head, found, _ = current.partition(MARKER)
    if not found:
        head = current.rstrip("\n") + "\n\n"
    return head + budget_section(budget)


def write_ratelimit_config(budget: floodgate.Budget, path: Path, *, source: Path = RATELIMIT_CONFIG) -> Path:
    """``source`` with ``budget``'s token budgets, written to ``path`` (the local cluster runs this
    copy, so a budget file of its own, ``FLOODGATE_BUDGET``, has its budgets enforced)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(source.read_text(), budget))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cluster.ratelimit_config", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--budget", type=Path, default=BUDGET_FILE)
    parser.add_argument("--config", type=Path, default=RATELIMIT_CONFIG)
    parser.add_argument(
        "--check", action="store_true", help="exit 1 when the file is not what the budget gives"
    )
    args = parser.parse_args(argv)
    current = args.config.read_text()
    wanted = render(current, floodgate.load_budget(args.budget))
    if args.check:
        if wanted != current:
            print(
                f"{args.config}: the token budgets differ from {args.budget}; run python -m cluster.ratelimit_config"
            )
            return 1
        return 0
    if wanted != current:
        args.config.write_text(wanted)
        print(f"{args.config}: token budgets written from {args.budget}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Helpers for the toolkit's tests: a small budget built in code, and a Dependency made from it."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import floodgate
import pytest

REPO_BUDGET = Path(__file__).resolve().parents[2] / "config" / "budget.toml"


def budget_dict(**dependency_overrides: Any) -> dict[str, Any]:
    """A small valid budget as a dict: one service, one http dependency "api", one db."""
    api: dict[str, Any] = {
        "kind": "http",
        "global_concurrency": 2,
        "shares": {"svc": 1.0},
        "max_waiters": 2,
        "max_wait": 1.0,
        "timeouts": {"connect": 1.0, "read": 5.0, "attempt": 5.0, "min_time_to_start": 0.05},
        "retry": {
            "max_attempts": 3,
            "max_total": 30.0,
            "backoff_base": 0.1,
            "backoff_cap": 1.0,
            "retry_after_cap": 5.0,
        },
        "retry_budget": {"ratio": 1.0, "window": 10.0, "min_retries": 100},
        "breaker": {
            "window": 10.0,
            "min_calls": 100,
            "failure_rate": 0.5,
            "open_duration": 5.0,
            "slow_call_duration": 100.0,
        },
    }
    for key, value in dependency_overrides.items():
        if isinstance(value, dict) and isinstance(api.get(key), dict):
            api[key] = {**api[key], **value}
        else:
            api[key] = value
    return {
        "deployment": {"database_max_connections": 20, "database_reserve": 2},
        "services": {"svc": {"replicas": 1, "workers": 1}},
        "dependencies": {
            "api": api,
            "db": {"kind": "postgres", "global_concurrency": 4, "shares": {"svc": 1.0}},
        },
        "endpoints": {
            "ep": {"deadline": 2.0, "slo_p95_ms": 100, "slo_p99_ms": 200, "required": ["api"]},
        },
    }


def make_dependency(*, rng: Any = None, **overrides: Any) -> floodgate.Dependency:
    budget = floodgate.parse_budget(copy.deepcopy(budget_dict(**overrides)))
    return floodgate.Dependency(
        "api",
        budget.dependency("api"),
        capacity=budget.process_limit("svc", "api"),
        rate=budget.process_rate("svc", "api"),
        rng=rng or (lambda: 1.0),
    )


@pytest.fixture
def repo_budget() -> floodgate.Budget:
    return floodgate.load_budget(REPO_BUDGET)

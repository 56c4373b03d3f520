"""The public surface: the export list, the exception tree and its HTTP mapping."""

from __future__ import annotations

import inspect

import floodgate
import pytest


def test_all_lists_exactly_the_public_names():
    public = {name for name in vars(floodgate) if not name.startswith("_")}
    # submodules imported as a side effect of the package's own imports are not API
    modules = {name for name in public if inspect.ismodule(getattr(floodgate, name))}
    assert set(floodgate.__all__) == public - modules
    assert len(floodgate.__all__) == len(set(floodgate.__all__))


@pytest.mark.parametrize(
    ("cls", "status", "code"),
    [
        (floodgate.Overloaded, 429, "overloaded"),
        (floodgate.CircuitOpen, 503, "circuit_open"),
        (floodgate.DeadlineExceeded, 504, "deadline_exceeded"),
        (floodgate.DependencyError, 502, "dependency_error"),
        (floodgate.RetryBudgetExhausted, 503, "retry_budget_exhausted"),
    ],
)
def test_each_error_maps_to_one_http_status(cls, status, code):
    exc = cls("too busy", dependency="llm", retry_after=1.2)
    assert isinstance(exc, floodgate.FloodgateError)
    assert (exc.http_status, exc.code, exc.dependency, exc.retry_after, exc.reason) == (
        status,
        code,
        "llm",
        1.2,
        "too busy",
    )
    body = floodgate.error_body(exc)
    assert body["code"] == code
    assert body["message"] == "llm: too busy"
    assert body["details"]["dependency"] == "llm"
    assert body["details"]["retry_after"] == 1.2
    assert floodgate.retry_after_header(exc) == "2"


def test_dependency_error_carries_the_downstream_status():
    exc = floodgate.DependencyError("HTTP 503", dependency="search", status=503)
    assert floodgate.error_body(exc)["details"] == {
        "dependency": "search",
        "reason": "HTTP 503",
        "retry_after": None,
        "status": 503,
    }
    assert floodgate.retry_after_header(exc) is None


def test_contract_names_exist():
    for name in [
        "Gate",
        "Dependencies",
        "Dependency",
        "Degradations",
        "optional",
        "Singleflight",
        "TTLCache",
        "CacheStore",
        "open_pg_pool",
        "FloodgateMetrics",
        "LoopLagMonitor",
        "deadline_after",
        "time_left",
        "deadline_from_headers",
        "deadline_headers",
        "load_budget",
        "BudgetError",
    ]:
        assert name in floodgate.__all__

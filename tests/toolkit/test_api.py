"""The public surface: the export list, the exception tree and its HTTP mapping, the names no service
uses (exercised here as public API), and an ``import floodgate`` that needs no PostgreSQL driver."""

from __future__ import annotations

import dataclasses
import inspect
import subprocess
import sys
import typing

import anyio
import floodgate
import pytest

from .conftest import REPO_BUDGET


def test_all_lists_exactly_the_public_names():
    # dir(): the PostgreSQL names are imported on first use, not at import
    public = {name for name in dir(floodgate) if not name.startswith("_")}
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
        (floodgate.PoolUnavailable, 502, "dependency_error"),
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
        "PoolUnavailable",
        "Door",
        "AdaptiveLimit",
        "LoopLagMonitor",
        "deadline_after",
        "time_left",
        "deadline_from_headers",
        "deadline_headers",
        "load_budget",
        "BudgetError",
    ]:
        assert name in floodgate.__all__


@pytest.mark.realtime  # a fresh interpreter: the only way to see what a bare import loads
def test_import_floodgate_needs_neither_asyncpg_nor_trio_asyncio():
    check = (
        "import sys, floodgate\n"
        "assert 'asyncpg' not in sys.modules and 'trio_asyncio' not in sys.modules, 'imported eagerly'\n"
        "floodgate.open_pg_pool\n"
        "assert 'asyncpg' in sys.modules, 'not imported on first use'\n"
    )
    result = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_metrics_are_passed_one_way_a_registry():
    constructors = [
        floodgate.Gate,
        floodgate.Door,
        floodgate.Dependency,
        floodgate.Dependencies.from_budget,
        floodgate.TTLCache,
        floodgate.Singleflight,
        floodgate.Degradations,
        floodgate.LoopLagMonitor,
        floodgate.PgPool,
        floodgate.open_pg_pool,
    ]
    for constructor in constructors:
        parameters = inspect.signature(constructor).parameters
        assert "registry" in parameters and "metrics" not in parameters, constructor
        assert parameters["registry"].kind is inspect.Parameter.KEYWORD_ONLY, constructor
    assert "FloodgateMetrics" not in floodgate.__all__


# -- public names no service uses: kept, and exercised here as public API ---------------------------


def _assert_frozen(snapshot: object, cls: type) -> None:
    assert type(snapshot) is cls
    field = dataclasses.fields(snapshot)[0].name  # type: ignore[arg-type]
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(snapshot, field, None)


async def test_each_statistics_type_is_what_its_objects_statistics_return(autojump_clock):
    budget = floodgate.load_budget(REPO_BUDGET)
    dependency = floodgate.Dependency("llm", budget.dependency("llm"), capacity=2, rate=10.0)
    gate = floodgate.Gate("g", 1, max_waiters=0, max_wait=0.0)
    now = anyio.current_time()
    snapshots = [
        (floodgate.AdaptiveLimit(4).statistics(), floodgate.AdaptiveLimitStatistics),
        (floodgate.TTLCache(1.0, 1).statistics(), floodgate.CacheStatistics),
        (floodgate.Singleflight().statistics(), floodgate.SingleflightStatistics),
        (dependency.statistics(), floodgate.DependencyStatistics),
        (floodgate.Door("d", 1).statistics(), floodgate.DoorStatistics),
        (gate.statistics(), floodgate.GateStatistics),
        (floodgate.LoopLagMonitor().statistics(), floodgate.LoopLagStatistics),
        (floodgate.RetryBudget(ratio=0.1, window=10.0).statistics(now), floodgate.RetryBudgetStatistics),
        (floodgate.TokenBucket(rate=1.0, burst=1).statistics(now), floodgate.TokenBucketStatistics),
        (dependency.breaker.statistics(now), floodgate.BreakerStatistics),
    ]
    for snapshot, cls in snapshots:
        _assert_frozen(snapshot, cls)
    assert isinstance(dependency.statistics().rate_limit, floodgate.TokenBucketStatistics)
    # the pool's snapshot needs a database: its type is what statistics() is declared to return
    assert typing.get_type_hints(floodgate.PgPool.statistics)["return"] is floodgate.PgPoolStatistics


def test_the_budgets_parts_are_the_exported_policy_types():
    budget = floodgate.load_budget(REPO_BUDGET)
    assert isinstance(budget.deployment, floodgate.DeploymentPolicy)
    assert isinstance(budget.service("online"), floodgate.ServiceShape)
    assert isinstance(budget.endpoint("deal_brain").admission, floodgate.AdmissionPolicy)
    assert isinstance(budget.dependency("search").cache, floodgate.CachePolicy)
    assert isinstance(budget.dependency("llm").rate_limit, floodgate.RateLimitPolicy)
    # policies are values: built in code as well as read from the file, and frozen
    admission = floodgate.AdmissionPolicy(adaptive=False)
    assert admission.adaptive is False
    with pytest.raises(Exception, match="frozen"):
        admission.adaptive = True  # type: ignore[misc]


async def test_a_caller_without_a_tenant_holds_its_slot_as_the_default_tenant(autojump_clock):
    gate = floodgate.Gate("db", 2, max_waiters=0, max_wait=0.0)
    async with gate.slot():
        assert gate.statistics().in_use_by_tenant == {floodgate.DEFAULT_TENANT: 1}
    assert gate.statistics().in_use == 0

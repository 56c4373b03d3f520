"""floodgate plan: derived limits, Little's law, warnings, exit codes."""

from __future__ import annotations

import io
import json
import tomllib

import floodgate
import pytest
from floodgate._plan import make_plan
from floodgate.cli import main

from .conftest import REPO_BUDGET


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def test_plan_of_the_repo_budget():
    code, out, _ = run("plan", "--budget", str(REPO_BUDGET))
    assert code == 0
    assert "online         llm         http      16      1      1      16.00  16" in out
    assert "= 60 of 90 usable" in out
    assert "deal_brain" in out and "rerank->fused_score" in out


def test_littles_law_and_overridden_latency(repo_budget):
    plan = make_plan(repo_budget, {"llm": 2.0})
    llm = next(r for r in plan.dependencies if r.service == "online" and r.dependency == "llm")
    assert (llm.limit, llm.latency, llm.rps_per_process) == (16, 2.0, 8.0)
    with pytest.raises(LookupError):
        make_plan(repo_budget, {"gpu": 1.0})


def test_production_shape_warnings():
    data = tomllib.loads(REPO_BUDGET.read_text())
    data["deployment"]["database_max_connections"] = 200
    data["services"]["online"] = {"replicas": 5, "workers": 4}
    deps = data["dependencies"]
    deps["db"]["global_concurrency"] = 150
    deps["llm"]["global_concurrency"] = 100
    for name in ("search", "rerank"):
        deps[name]["global_concurrency"] = 100
    deps["embed"]["global_concurrency"] = 200
    plan = make_plan(floodgate.parse_budget(data), {"llm": 0.1})
    db = next(r for r in plan.dependencies if r.service == "online" and r.dependency == "db")
    assert (db.processes, db.exact, db.limit) == (20, 4.5, 4)  # 150 x 0.6 / 20
    assert plan.database_used == 80 + 60 + 20  # online db + ingest_api db + db_write
    warnings = "\n".join(plan.warnings)
    assert "online.llm: concurrency carries 1000.0/s but the provider's RPM share allows 100.0/s" in warnings
    assert "online.db: rounding down 4.50 to 4 wastes 10 slots over 20 processes" in warnings


def test_strict_exits_1_on_warnings(tmp_path):
    path = tmp_path / "budget.toml"
    path.write_text(
        REPO_BUDGET.read_text().replace(
            "max_waiters = 32\nmax_wait = 1.0\ntypical_latency = 0.4",
            "max_waiters = 500\nmax_wait = 1.0\ntypical_latency = 0.4",
        )
    )
    code, out, _ = run("plan", "--budget", str(path), "--strict")
    assert code == 1
    assert "online.llm: 500 waiters need 12.50s to drain at 40.0/s but max_wait is 1s" in out


def test_json_output():
    code, out, _ = run("plan", "--budget", str(REPO_BUDGET), "--json")
    data = json.loads(out)
    assert code == 0 and data["database_used"] == 60
    assert {r["dependency"] for r in data["dependencies"]} >= {"llm", "db_write"}


def test_invalid_budget_and_arguments_exit_2(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(REPO_BUDGET.read_text().replace("max_waiters = 32", "max_waiters = -1", 1))
    code, _, err = run("plan", "--budget", str(bad))
    assert code == 2 and "dependencies.llm.max_waiters: must be >= 0" in err
    code, _, _ = run("plan", "--latency", "llm")
    assert code == 2
    assert isinstance(floodgate.load_budget(REPO_BUDGET), floodgate.Budget)

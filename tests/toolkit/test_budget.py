"""The budget file: derived limits, and every invalid budget rejected with the key named."""

from __future__ import annotations

import copy

import floodgate
import pytest

from .conftest import REPO_BUDGET, budget_dict


def test_repo_budget_loads_and_derives_local_limits(repo_budget):
    assert repo_budget.process_limit("online", "llm") == 16
    assert repo_budget.process_limit("online", "embed") == 8
    assert (
        repo_budget.process_limit("ingest_worker", "embed") == 12
    )  # 32 x 0.75 over the 2 planned worker processes
    assert repo_budget.process_limit("online", "db") == 24
    assert repo_budget.process_limit("ingest_api", "db") == 16
    assert set(repo_budget.dependencies_of("online")) == {"llm", "search", "embed", "rerank", "db"}
    assert set(repo_budget.dependencies_of("ingest_worker")) == {"embed", "fetch", "db_write"}
    assert repo_budget.dependencies_of("ingest_api") == ["db"]
    ep = repo_budget.endpoint("deal_brain")
    assert ep.degradable["rerank"] and "llm" in ep.degradable and ep.deadline > 0
    for name in ["deal_brain", "shadow_hunter", "nexus_assess", "omnirag_submit"]:
        repo_budget.endpoint(name)


def test_budget_is_frozen(repo_budget):
    with pytest.raises(Exception, match="frozen"):
        repo_budget.dependency("llm").max_wait = 3.0


def test_production_shape_works_back_from_max_connections():
    data = budget_dict()
    data["deployment"] = {"database_max_connections": 200, "database_reserve": 0}
    data["services"]["svc"] = {"replicas": 5, "workers": 4}
    del data["dependencies"]["db"]["global_concurrency"]  # postgres: defaults to max_connections - reserve
    data["dependencies"]["api"]["global_concurrency"] = 100
    budget = floodgate.parse_budget(data)
    assert budget.process_limit("svc", "db") == 10  # 200 / (5 x 4)
    assert budget.process_limit("svc", "api") == 5


def test_rate_is_split_across_processes():
    data = budget_dict(rate_limit={"rpm": 1200, "burst": 2})
    data["services"]["svc"] = {"replicas": 2, "workers": 1}
    data["dependencies"]["api"]["global_concurrency"] = 4
    budget = floodgate.parse_budget(data)
    assert budget.process_rate("svc", "api") == pytest.approx(10.0)  # 1200/min / 2 processes


def problems_of(data) -> list[str]:
    with pytest.raises(floodgate.BudgetError) as info:
        floodgate.parse_budget(data)
    return info.value.problems


def test_error_names_the_key_path():
    data = budget_dict(retry={"max_attempts": 0})
    assert problems_of(data) == ["dependencies.api.retry.max_attempts: must be >= 1"]


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d: d["dependencies"]["api"].update(max_wait=-1), "dependencies.api.max_wait: must be >= 0"),
        (lambda d: d["dependencies"]["api"].pop("shares"), "dependencies.api.shares: is required"),
        (
            lambda d: d["deployment"].pop("database_max_connections"),
            "deployment.database_max_connections: is required",
        ),
        (lambda d: d["dependencies"]["api"].update(colour="red"), "dependencies.api.colour: unknown key"),
        (
            lambda d: d["dependencies"]["api"]["timeouts"].update(attempt=0),
            "dependencies.api.timeouts.attempt: must be > 0",
        ),
        (lambda d: d["services"]["svc"].update(workers=0), "services.svc.workers: must be >= 1"),
        (
            lambda d: d["endpoints"]["ep"].update(slo_p95_ms=500),
            "endpoints.ep: slo_p95_ms must be <= slo_p99_ms",
        ),
        (
            lambda d: d["dependencies"]["api"]["shares"].update(svc=1.5),
            "dependencies.api.shares.svc: must be <= 1",
        ),
        (
            lambda d: d["dependencies"]["api"].pop("global_concurrency"),
            "dependencies.api: global_concurrency is required for kind = 'http'",
        ),
        (
            lambda d: d["dependencies"]["api"]["retry"].update(backoff_cap=0.01),
            "dependencies.api.retry: backoff_cap must be >= backoff_base",
        ),
        (
            lambda d: d["endpoints"]["ep"].update(admission={"latency_tolerance": 0.9}),
            "endpoints.ep.admission.latency_tolerance: must be >= 1",
        ),
        (
            lambda d: d["endpoints"]["ep"].update(admission={"min_fraction": 0}),
            "endpoints.ep.admission.min_fraction: must be > 0",
        ),
        (
            lambda d: d["endpoints"]["ep"].update(admission={"bottleneck_queue": -1}),
            "endpoints.ep.admission.bottleneck_queue: must be >= 0",
        ),
        (
            lambda d: d["endpoints"]["ep"].update(admission={"adaptiv": False}),
            "endpoints.ep.admission.adaptiv: unknown key",
        ),
    ],
)
def test_invalid_values_are_named(mutate, expected):
    data = copy.deepcopy(budget_dict())
    mutate(data)
    assert expected in problems_of(data)


@pytest.mark.parametrize(
    ("key", "value", "named"),
    [
        ("retry", {"max_attempts": 3}, "retry"),
        ("retry_budget", {"ratio": 0.1}, "retry_budget"),
        ("breaker", {"min_calls": 5}, "breaker"),
        ("rate_limit", {"rpm": 600}, "rate_limit"),
        ("cache", {"ttl": 60.0, "max_entries": 100}, "cache"),
        ("timeouts", {"read": 1.0, "attempt": 2.0}, "timeouts.read"),
    ],
)
def test_a_postgres_dependency_refuses_keys_its_pool_does_not_use(key, value, named):
    # The pool runs each unit of work once behind its gate, with one timeout per statement: a key it
    # would ignore is an error, not a setting that silently does nothing.
    data = copy.deepcopy(budget_dict())
    data["dependencies"]["db"][key] = value
    [problem] = problems_of(data)
    assert problem.startswith(f"dependencies.db: {named} has no effect on a postgres dependency")


def test_a_postgres_dependency_takes_the_timeouts_its_pool_uses():
    data = copy.deepcopy(budget_dict())
    data["dependencies"]["db"]["timeouts"] = {"connect": 1.0, "attempt": 2.0, "min_time_to_start": 0.01}
    timeouts = floodgate.parse_budget(data).dependency("db").timeouts
    assert (timeouts.connect, timeouts.attempt, timeouts.min_time_to_start) == (1.0, 2.0, 0.01)


def test_failure_policy_problems_compare_required_and_degradable_with_the_calls():
    data = copy.deepcopy(budget_dict())
    data["endpoints"]["ep"]["degradable"] = {"db": "cached"}
    budget = floodgate.parse_budget(data)  # required = ["api"], degradable = {db}
    assert budget.failure_policy_problems("ep", ["api", "db"]) == []
    assert budget.failure_policy_problems("ep", ["api"]) == ["endpoints.ep: names db, which it does not call"]
    assert budget.failure_policy_problems("ep", ["api", "db", "llm"]) == [
        "endpoints.ep: calls llm but names it neither required nor degradable"
    ]


def test_an_endpoint_without_fan_out_makes_one_call_at_a_time():
    data = copy.deepcopy(budget_dict())
    assert "fan_out" not in data["endpoints"]["ep"]
    assert floodgate.parse_budget(data).endpoint("ep").fan_out == 1


def test_provider_shares_over_one_do_not_fit():
    data = budget_dict()
    data["services"]["other"] = {"replicas": 1, "workers": 1}
    data["dependencies"]["api"]["shares"] = {"svc": 0.7, "other": 0.6}
    data["dependencies"]["api"]["global_concurrency"] = 10
    assert "dependencies.api.shares: shares sum to 1.3, more than 1.0 of the dependency" in problems_of(data)


def test_database_pools_that_exceed_max_connections_do_not_fit():
    data = budget_dict()
    data["deployment"] = {"database_max_connections": 100, "database_reserve": 10}
    data["services"]["svc"] = {"replicas": 5, "workers": 4}
    data["services"]["worker"] = {"replicas": 2, "workers": 2}
    data["dependencies"]["api"]["global_concurrency"] = 20
    data["dependencies"]["db"] = {"kind": "postgres", "global_concurrency": 80, "shares": {"svc": 1.0}}
    data["dependencies"]["db_write"] = {
        "kind": "postgres",
        "global_concurrency": 40,
        "shares": {"worker": 1.0},
    }
    [problem] = problems_of(data)
    assert problem.startswith("dependencies: database pools of all services need 120 connections")
    assert "database_max_connections - database_reserve = 90" in problem


def test_share_too_small_for_one_slot_per_process():
    data = budget_dict()
    data["services"]["svc"] = {"replicas": 5, "workers": 4}
    data["dependencies"]["api"]["global_concurrency"] = 10
    problems = problems_of(data)
    assert (
        "dependencies.api.shares.svc: 1 of 10 over 5 replicas x 4 workers is 0.50 per process "
        "(shares cannot fit: each process needs at least 1)"
    ) in problems
    assert any(p.startswith("dependencies.db.shares.svc: 1 of 4 over") for p in problems)


def test_unknown_service_and_dependency_names():
    data = budget_dict()
    data["dependencies"]["api"]["shares"]["ghost"] = 0.1
    data["endpoints"]["ep"]["degradable"] = {"nope": "skip"}
    problems = problems_of(data)
    assert any(p.startswith("dependencies.api.shares.ghost: unknown service") for p in problems)
    assert "endpoints.ep.degradable.nope: unknown dependency" in problems


def test_load_budget_reports_bad_files(tmp_path):
    with pytest.raises(floodgate.BudgetError, match="file not found"):
        floodgate.load_budget(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[deployment\n")
    with pytest.raises(floodgate.BudgetError, match="not valid TOML"):
        floodgate.load_budget(bad)
    text = REPO_BUDGET.read_text().replace("max_attempts = 3", "max_attempts = -2", 1)
    broken = tmp_path / "budget.toml"
    broken.write_text(text)
    with pytest.raises(floodgate.BudgetError) as info:
        floodgate.load_budget(broken)
    assert "dependencies.llm.retry.max_attempts: must be >= 1" in str(info.value)


def test_lookups_name_what_exists(repo_budget):
    with pytest.raises(LookupError, match="unknown dependency 'gpu'"):
        repo_budget.dependency("gpu")
    with pytest.raises(LookupError, match="has no share"):
        repo_budget.process_limit("ingest_api", "llm")


def test_prices_are_validated_and_priced_per_1000_tokens(repo_budget):
    chat = repo_budget.price("sim-chat-1")
    assert chat is not None and repo_budget.price("no-such-model") is None
    assert chat.cost(prompt_tokens=2000, completion_tokens=1000) == pytest.approx(
        2 * chat.prompt_per_1k_tokens_usd + chat.completion_per_1k_tokens_usd
    )
    data = budget_dict()
    data["prices"] = {"m": {"prompt_per_1k_tokens_usd": -1}, "n": {"completion_per_1k_tokens_usd": 1}}
    assert problems_of(data) == [
        "prices.m.prompt_per_1k_tokens_usd: must be >= 0",
        "prices.n.prompt_per_1k_tokens_usd: is required",
    ]

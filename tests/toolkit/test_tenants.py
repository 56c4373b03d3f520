"""The tenant table (``[tenants]`` and ``tenant_share``): keys resolved default-then-tenant, slot
caps by fraction, count and weight, and every invalid table refused with its key path."""

from __future__ import annotations

import floodgate
import pytest
from floodgate._tenants import TENANT_DEFAULTS

from .conftest import budget_dict


def tenant_budget(**tenants) -> floodgate.Budget:
    data = budget_dict(global_concurrency=16, tenant_share=0.5)
    data["endpoints"]["ep"]["admission"] = {"tenant_share": 4}
    data["tenants"] = tenants
    return floodgate.parse_budget(data)


def problems_of(data) -> list[str]:
    with pytest.raises(floodgate.BudgetError) as info:
        floodgate.parse_budget(data)
    return info.value.problems


def test_a_tenant_overrides_single_keys_of_the_default():
    budget = tenant_budget(
        default={"queued_jobs": 50, "running_jobs": 2, "tokens_per_minute": 1000, "share": {"db": 1}},
        acme={"weight": 3, "tokens_per_minute": 9000, "cost_per_day": 5.0, "share": {"api": 0.75}},
    )
    acme = budget.tenants.policy("acme")
    assert acme == floodgate.TenantPolicy(
        name="acme",
        weight=3,
        queued_jobs=50,
        running_jobs=2,
        tokens_per_minute=9000,
        tokens_per_day=TENANT_DEFAULTS["tokens_per_day"],
        cost_per_day=5.0,
        share={"db": 1, "api": 0.75},  # the default's overrides, then the tenant's
    )
    other = budget.tenants.policy("other")
    assert (other.name, other.weight, other.queued_jobs, other.tokens_per_minute) == ("other", 1, 50, 1000)
    assert other.cost_per_day is None and dict(other.share) == {"db": 1}
    assert budget.tenants.configured == {"acme"}


def test_without_a_tenants_table_every_tenant_gets_the_built_in_defaults():
    budget = floodgate.parse_budget(budget_dict())
    policy = budget.tenants.policy("anyone")
    assert {key: getattr(policy, key) for key in TENANT_DEFAULTS} == dict(TENANT_DEFAULTS)
    assert budget.tenants.share_limit("anyone", "api", 2) == 2  # no tenant_share: the whole


def test_policies_are_frozen():
    budget = tenant_budget(acme={"weight": 2})
    with pytest.raises(AttributeError):
        budget.tenants.policy("acme").weight = 5
    assert budget.tenants is budget.tenants


@pytest.mark.parametrize(
    ("tenant", "name", "slots", "expected"),
    [
        ("b", "api", 16, 8),  # tenant_share 0.5 of 16
        ("b", "api", 5, 2),  # 2.5 rounds down: two tenants at half never exceed the whole
        ("b", "api", 1, 1),  # at least one slot
        ("b", "ep", 26, 4),  # a count, whatever the door's limit
        ("b", "ep", 3, 3),  # ... but never more than the slots
        ("gold", "api", 16, 16),  # weight 3: 0.5 x 3 capped at the whole
        ("gold", "ep", 26, 12),  # a count times the weight
        ("silver", "api", 16, 6),  # its own override, as written (no weight)
        ("silver", "ep", 26, 24),
        ("b", "db", 4, 4),  # no tenant_share: the whole
    ],
)
def test_share_limit(tenant, name, slots, expected):
    budget = tenant_budget(gold={"weight": 3}, silver={"weight": 2, "share": {"api": 0.375, "ep": 24}})
    assert budget.tenants.share_limit(tenant, name, slots) == expected


def test_shares_in_toml_tell_counts_from_fractions(tmp_path):
    path = tmp_path / "budget.toml"
    path.write_text(
        """
[deployment]
database_max_connections = 20
[services.svc]
replicas = 1
workers = 1
[dependencies.api]
global_concurrency = 8
shares = { svc = 1.0 }
tenant_share = 1
[dependencies.db]
kind = "postgres"
global_concurrency = 4
shares = { svc = 1.0 }
tenant_share = 1.0
[tenants.default]
weight = 1
[tenants.acme]
weight = 2
share = { api = 0.25 }
"""
    )
    budget = floodgate.load_budget(path)
    assert budget.tenants.share_limit("x", "api", 8) == 1  # the integer 1: one slot
    assert budget.tenants.share_limit("x", "db", 4) == 4  # the float 1.0: all of them
    assert budget.tenants.share_limit("acme", "api", 8) == 2


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (
            lambda d: d["dependencies"]["api"].update(tenant_share=0),
            "dependencies.api.tenant_share: a count of slots must be >= 1",
        ),
        (
            lambda d: d["dependencies"]["api"].update(tenant_share=1.5),
            "dependencies.api.tenant_share: a fraction of the slots must be > 0 and <= 1 (a count is an integer)",
        ),
        (
            lambda d: d["dependencies"]["api"].update(tenant_share=True),
            "dependencies.api.tenant_share: must be a fraction of the slots (0 < x <= 1) or a count (an integer >= 1)",
        ),
        (
            lambda d: d["endpoints"]["ep"].update(admission={"tenant_share": "half"}),
            "endpoints.ep.admission.tenant_share: must be a fraction of the slots (0 < x <= 1) or a count (an integer >= 1)",
        ),
        (lambda d: d.update(tenants={"acme": {"weight": 0}}), "tenants.acme.weight: must be >= 1"),
        (lambda d: d.update(tenants={"default": {"colour": "red"}}), "tenants.default.colour: unknown key"),
        (
            lambda d: d.update(tenants={"acme": {"running_jobs": -1}}),
            "tenants.acme.running_jobs: must be >= 0",
        ),
        (lambda d: d.update(tenants={"acme": {"queued_jobs": 0}}), "tenants.acme.queued_jobs: must be >= 1"),
        (
            lambda d: d.update(tenants={"acme": {"tokens_per_minute": 0}}),
            "tenants.acme.tokens_per_minute: must be >= 1",
        ),
        (lambda d: d.update(tenants={"acme": {"cost_per_day": 0}}), "tenants.acme.cost_per_day: must be > 0"),
        (
            lambda d: d.update(tenants={"acme": {"share": {"api": 2.0}}}),
            "tenants.acme.share.api: a fraction of the slots must be > 0 and <= 1 (a count is an integer)",
        ),
        (
            lambda d: d.update(tenants={"acme": {"share": {"nope": 1}}}),
            "tenants.acme.share.nope: unknown dependency or endpoint (known: api, db, ep)",
        ),
    ],
)
def test_invalid_tenant_tables_are_named(mutate, expected):
    data = budget_dict()
    mutate(data)
    assert problems_of(data) == [expected]


def test_a_tenant_name_follows_the_services_rule():
    data = budget_dict()
    data["tenants"] = {"no spaces": {"weight": 2}}
    [problem] = problems_of(data)
    assert problem.startswith("tenants.no spaces.[key]: ")


def test_a_shared_name_needs_to_be_one_thing():
    data = budget_dict(tenant_share=0.5)
    data["endpoints"]["api"] = {"deadline": 2.0, "slo_p95_ms": 100, "slo_p99_ms": 200}
    assert problems_of(data) == [
        "endpoints.api: api is also a dependency; a tenant_share needs one of them renamed"
    ]
    data["dependencies"]["api"].pop("tenant_share")
    data["tenants"] = {"acme": {"share": {"api": 1}}}
    assert problems_of(data) == [
        "tenants.acme.share.api: api is both a dependency and an endpoint (rename one)"
    ]


def test_the_repo_budget_has_a_tenant_table(repo_budget):
    table = repo_budget.tenants
    assert table.policy("anyone").weight == 1
    assert repr(table).startswith("<TenantTable ")

"""floodgate alerts: the rules follow the budget (SLO latencies, max_wait, pool sizes, [cost]),
every alert carries its severity and runbook, and the YAML is what a YAML parser reads back."""

from __future__ import annotations

import io
import tomllib

import floodgate
import pytest
import yaml
from floodgate.cli import main

from .conftest import REPO_BUDGET

ROUTES = {
    "deal_brain": "/v1/deal-brain/answers",
    "shadow_hunter": "/v1/shadow-hunter/hunts",
    "nexus_assess": "/v1/nexus-assess/assessments",
    "omnirag_submit": "/v1/omnirag/jobs",
}


def repo_data() -> dict:
    return tomllib.loads(REPO_BUDGET.read_text())


def alerts_of(document: dict, name: str) -> list[dict]:
    return [rule for group in document["groups"] for rule in group["rules"] if rule.get("alert") == name]


def records_of(document: dict) -> list[dict]:
    return [rule for group in document["groups"] for rule in group["rules"] if "record" in rule]


def test_every_alert_has_severity_summary_description_and_its_runbook():
    document = floodgate.alert_rules(floodgate.load_budget(REPO_BUDGET), routes=ROUTES)
    names = set()
    for group in document["groups"]:
        for rule in group["rules"]:
            if "alert" not in rule:
                continue
            names.add(rule["alert"])
            assert rule["labels"]["severity"] in ("warning", "critical")
            assert rule["annotations"]["summary"] and rule["annotations"]["description"]
            assert rule["annotations"]["runbook_url"] == f"docs/runbooks/{rule['alert']}.md"
    assert names == set(floodgate._alerts.ALERT_NAMES)


def test_slo_thresholds_follow_the_budget():
    data = repo_data()
    data["endpoints"]["deal_brain"]["slo_p95_ms"] = 1200
    document = floodgate.alert_rules(floodgate.parse_budget(data), routes=ROUTES)
    deal_brain_p95 = [
        r for r in records_of(document) if r["labels"] == {"endpoint": "deal_brain", "slo": "p95"}
    ]
    assert len(deal_brain_p95) == 4  # 5m, 30m, 1h, 6h
    for record in deal_brain_p95:
        assert 'route="/v1/deal-brain/answers"' in record["expr"]
        assert 'le="1.2"' in record["expr"]
    # a whole number of seconds matches the Python client's "3.0" and Prometheus 3's "3"
    deal_brain_p99 = [
        r for r in records_of(document) if r["labels"] == {"endpoint": "deal_brain", "slo": "p99"}
    ]
    assert all('le=~"3(\\\\.0)?"' in r["expr"] for r in deal_brain_p99)
    (cpu,) = [
        a for a in alerts_of(document, "FloodgateSlowWhileCPUIdle") if a["labels"]["endpoint"] == "deal_brain"
    ]
    assert "> 1.2\n" in cpu["expr"]
    fast = [
        a
        for a in alerts_of(document, "FloodgateLatencySLOFastBurn")
        if a["labels"]["endpoint"] == "deal_brain"
    ]
    assert sorted(a["expr"].rsplit("> ", 1)[1] for a in fast) == ["0.144", "0.72"]  # 14.4 x 1 %, 14.4 x 5 %


def test_gate_and_pool_thresholds_follow_the_budget():
    data = repo_data()
    data["dependencies"]["llm"]["max_wait"] = 2.0
    data["dependencies"]["db"]["shares"] = {"online": 0.5, "ingest_api": 0.4}
    document = floodgate.alert_rules(floodgate.parse_budget(data), routes=ROUTES)
    (llm,) = [
        a for a in alerts_of(document, "FloodgateGateWaitNearMaxWait") if a["labels"]["dependency"] == "llm"
    ]
    assert llm["expr"].endswith("> 1.6")  # 0.8 x max_wait
    pools = {
        (a["labels"]["service"], a["labels"]["dependency"]): a["expr"]
        for a in alerts_of(document, "FloodgateDbPoolExhausted")
    }
    assert set(pools) == {("online", "db"), ("ingest_api", "db"), ("ingest_worker", "db_write")}
    assert 'floodgate_pool_in_use{job="online",pool="db"}[5m]) >= 20' in pools[("online", "db")]
    assert pools[("ingest_worker", "db_write")].endswith("> 2.5")  # half of db_write's max_wait


def test_provider_and_ingest_alerts_follow_the_budget():
    document = floodgate.alert_rules(floodgate.load_budget(REPO_BUDGET), routes=ROUTES)
    throttled = {a["labels"]["dependency"] for a in alerts_of(document, "FloodgateProviderThrottled")}
    assert throttled == {"llm", "search", "embed", "rerank", "fetch"}  # the http dependencies
    # ingestion shares embed with dealBrain and the database with the submissions; nothing with the others
    slowed = {a["labels"]["endpoint"] for a in alerts_of(document, "FloodgateIngestSlowingOnline")}
    assert slowed == {"deal_brain", "omnirag_submit"}


def test_spend_alerts_only_for_the_limits_the_budget_sets():
    data = repo_data()
    data["cost"] = {"max_tokens_per_hour": 1000}
    document = floodgate.alert_rules(floodgate.parse_budget(data), routes=ROUTES)
    (spend,) = alerts_of(document, "FloodgateSpendOverBudget")
    assert spend["labels"]["kind"] == "tokens"
    assert spend["expr"] == "sum(rate(floodgate_tokens_total[1h])) * 3600 > 1000"
    del data["cost"]
    assert (
        alerts_of(
            floodgate.alert_rules(floodgate.parse_budget(data), routes=ROUTES), "FloodgateSpendOverBudget"
        )
        == []
    )


@pytest.mark.parametrize(
    ("cost", "problem"),
    [
        ({}, "cost: set max_usd_per_hour, max_tokens_per_hour or both"),
        ({"max_usd_per_hour": 0}, "cost.max_usd_per_hour: must be > 0"),
        ({"max_usd_per_hour": 1, "max_dollars": 2}, "cost.max_dollars: unknown key"),
    ],
)
def test_the_cost_table_is_validated(cost, problem):
    data = repo_data()
    data["cost"] = cost
    with pytest.raises(floodgate.BudgetError) as info:
        floodgate.parse_budget(data)
    assert any(p.startswith(problem) for p in info.value.problems), info.value.problems


def test_yaml_reads_back_as_the_document():
    document = floodgate.alert_rules(floodgate.load_budget(REPO_BUDGET), routes=ROUTES)
    text = floodgate.rules_yaml(document, header=["a comment"])
    assert text.startswith("# a comment\ngroups:\n")
    assert yaml.safe_load(text) == document


def test_slo_bucket_bounds_of_the_repo_budget():
    assert floodgate.slo_bucket_bounds(floodgate.load_budget(REPO_BUDGET)) == (
        0.1,
        0.3,
        1.5,
        2.5,
        3.0,
        5.0,
        6.0,
    )


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def test_cli_prints_the_rules():
    routes = [f"--route={name}={route}" for name, route in ROUTES.items()]
    code, out, err = run(
        "alerts", "--budget", str(REPO_BUDGET), "--runbook-base", "https://x/runbooks/", *routes
    )
    assert (code, err) == (0, "")
    document = yaml.safe_load(out)
    rules = [r for g in document["groups"] for r in g["rules"] if "alert" in r]
    assert all(r["annotations"]["runbook_url"].startswith("https://x/runbooks/Floodgate") for r in rules)


def test_cli_needs_a_route_for_every_endpoint(capsys):
    code, out, err = run(
        "alerts", "--budget", str(REPO_BUDGET), "--route", "deal_brain=/v1/deal-brain/answers"
    )
    assert (code, out) == (2, "")
    assert "no route for endpoint(s) nexus_assess, omnirag_submit, shadow_hunter" in err
    code, _, _ = run("alerts", "--route", "deal_brain")
    assert code == 2 and "expected ENDPOINT=[METHOD ]ROUTE" in capsys.readouterr().err

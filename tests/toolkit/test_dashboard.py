"""floodgate dashboard: a row per endpoint and per dependency of the budget, SLO lines from it, every
expression exported for promtool."""

from __future__ import annotations

import io
import json

import floodgate
import pytest
from floodgate._dashboard import (
    DashboardError,
    build_dashboard,
    dashboard_expressions,
    recording_rules,
    referenced_metrics,
)
from floodgate.cli import main

from .conftest import REPO_BUDGET

ROUTES = {
    "deal_brain": "/v1/deal-brain/answers",
    "shadow_hunter": "/v1/shadow-hunter/hunts",
    "nexus_assess": "/v1/nexus-assess/assessments",
    "omnirag_submit": "POST /v1/omnirag/jobs",
}


@pytest.fixture(scope="module")
def budget() -> floodgate.Budget:
    return floodgate.load_budget(REPO_BUDGET)


def rows(board) -> list[str]:
    return [p["title"] for p in board["panels"] if p["type"] == "row"]


def test_a_row_per_endpoint_and_per_dependency(budget):
    board = build_dashboard(budget, routes=ROUTES)
    titles = rows(board)
    for name in budget.endpoints:
        assert any(t.startswith(f"Endpoint {name} (") for t in titles), name
    for name, dep in budget.dependencies.items():
        assert f"Dependency {name} ({dep.kind})" in titles
    assert {"Overview", "Queue (omniRAG ingestion)", "Processes"} <= set(titles)
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    # no two panels on the same place of the grid
    places = [(p["gridPos"]["x"], p["gridPos"]["y"]) for p in board["panels"]]
    assert len(places) == len(set(places))


def test_latency_panels_read_served_requests_and_draw_the_slo(budget):
    board = build_dashboard(budget, routes=ROUTES)
    panels = board["panels"]
    start = next(i for i, p in enumerate(panels) if p["title"].startswith("Endpoint deal_brain"))
    latency = next(p for p in panels[start:] if p["title"].startswith("Served latency"))
    exprs = [t["expr"] for t in latency["targets"]]
    assert all('route="/v1/deal-brain/answers",status_class="2xx"' in e for e in exprs)
    steps = latency["fieldConfig"]["defaults"]["thresholds"]["steps"]
    policy = budget.endpoints["deal_brain"]
    assert [s["value"] for s in steps[1:]] == [policy.slo_p95_ms / 1000, policy.slo_p99_ms / 1000]
    # a METHOD before the path narrows the selector
    submit = json.dumps(board)
    assert 'route=\\"/v1/omnirag/jobs\\",method=\\"POST\\"' in submit


def test_postgres_dependencies_show_their_pool_and_http_ones_their_connection_wait(budget):
    board = build_dashboard(budget, routes=ROUTES)
    exprs = dashboard_expressions(board)
    assert any('floodgate_pool_in_use{pool="db_write"}' in e for e in exprs)
    assert any('floodgate_http_connection_wait_seconds_bucket{dependency="llm"}' in e for e in exprs)
    assert not any('floodgate_http_connection_wait_seconds_bucket{dependency="db"}' in e for e in exprs)


def test_every_endpoint_needs_a_route(budget):
    with pytest.raises(DashboardError, match=r"no route for endpoint.*omnirag_submit"):
        build_dashboard(budget, routes={k: v for k, v in ROUTES.items() if k != "omnirag_submit"})
    with pytest.raises(DashboardError, match="does not have: nope"):
        build_dashboard(budget, routes={**ROUTES, "nope": "/x"})


def test_referenced_metrics_are_the_selected_names():
    exprs = [
        'histogram_quantile(0.99, sum by (le, job) (rate(floodgate_gate_wait_seconds_bucket{gate="llm"}[1m])))',
        "max(ingest_oldest_runnable_job_age_seconds)",
        'sum by (state) (ingest_queue_depth) / on (job) group_left sum(up{job="x"})',
        "3600 * sum (rate(floodgate_cost_usd_total{}[1m]))",
    ]
    assert referenced_metrics(exprs) == {
        "floodgate_gate_wait_seconds_bucket",
        "ingest_oldest_runnable_job_age_seconds",
        "ingest_queue_depth",
        "up",
        "floodgate_cost_usd_total",
    }


def test_cli_writes_the_dashboard_its_expressions_and_a_rule_file(budget, tmp_path):
    args = ["dashboard", "--budget", str(REPO_BUDGET)] + [f"--route={k}={v}" for k, v in ROUTES.items()]
    out, err = io.StringIO(), io.StringIO()
    assert main([*args, "-o", str(tmp_path / "d.json")], out=out, err=err) == 0, err.getvalue()
    board = json.loads((tmp_path / "d.json").read_text())
    assert board == build_dashboard(budget, routes=ROUTES)

    out = io.StringIO()
    assert main([*args, "--exprs"], out=out, err=err) == 0
    assert out.getvalue().splitlines() == dashboard_expressions(board)

    out = io.StringIO()
    assert main([*args, "--rules"], out=out, err=err) == 0
    (group,) = json.loads(out.getvalue())["groups"]  # JSON is YAML: promtool reads it
    assert [r["expr"] for r in group["rules"]] == dashboard_expressions(board)
    assert out.getvalue() == recording_rules(board)

    err = io.StringIO()
    assert main(["dashboard", "--budget", str(REPO_BUDGET)], out=io.StringIO(), err=err) == 2
    assert "no route for endpoint" in err.getvalue()

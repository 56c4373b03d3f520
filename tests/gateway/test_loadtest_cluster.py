"""`floodgate loadtest SCENARIO` against the local cluster (as `make up` runs it): a few seconds of
dealBrain answers and job submissions at a low rate through the real gateway, with the services'
/metrics and Envoy's statistics scraped from the cluster's state file into summary.json."""

from __future__ import annotations

import io
import json

import pytest
from floodgate.cli import main as floodgate_main

from harness import REPO_ROOT

from ._cluster import run_cluster

# the cluster takes up to 120 s to start; the run itself is 3 s of load, its last answers and jobs
pytestmark = pytest.mark.timeout(240)

SCENARIOS = """
[tenants]
acme = 1
globex = 1

[validity]            # a shared CI machine: judge the system, not the generator's scheduling
max_late_p99_ms = 1000
max_late_ms = 0

[requests.deal_brain]
path = "/v1/deal-brain/answers"
body = { question = "Which suppliers raised prices in the last quarter?", top_k = 3 }

[requests.omnirag_submit]
kind = "job"
path = "/v1/omnirag/jobs"
follow = "status"
document_size = { distribution = "fixed", bytes = 2000 }

[thresholds.deal_brain]
p99_ms = 30000

[scenarios.answers]
executor = "constant"
rate = 2
duration = 3
grace = 20
requests = { deal_brain = 1 }

[scenarios.jobs]
executor = "constant"
rate = 1
duration = 3
grace = 20
requests = { omnirag_submit = 1 }

[scenarios.short_mixed]
phases = [{ name = "mixed", run = ["answers", "jobs"] }]
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, realtime):
    with run_cluster(tmp_path_factory.mktemp("cluster")) as running:
        yield running


def test_a_short_mixed_run_writes_its_summary_with_scraped_series(cluster, tmp_path, capsys):
    scenarios = tmp_path / "loadtest.toml"
    scenarios.write_text(SCENARIOS)
    out = tmp_path / "run"
    plan_out = io.StringIO()
    assert floodgate_main(["plan", "--format", "json"], out=plan_out) == 0
    plan = tmp_path / "plan.json"
    plan.write_text(plan_out.getvalue())
    code = floodgate_main(
        [
            "loadtest",
            "short_mixed",
            "--file",
            str(scenarios),
            "--target",
            cluster["gateway"],
            "--keys",
            str(REPO_ROOT / "config" / "api_keys.sample.yaml"),
            "--state",
            str(cluster["data"] / "cluster.json"),
            "--out",
            str(out),
            "--plan",
            str(plan),
        ]
    )
    printed = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert code in (0, 1), printed  # a valid run (thresholds are the system's business)
    assert summary["valid"] is True, summary["invalid_reason"]
    answers, jobs = summary["endpoints"]["deal_brain"], summary["endpoints"]["omnirag_submit"]
    assert answers["offered"] == 6 and answers["good"] > 0, answers
    assert jobs["offered"] == 3 and jobs["good"] > 0 and jobs["jobs"]["followed"] == jobs["good"], jobs
    assert answers["p50_ms"] is not None and answers["verdicts"] == {"p99": "pass"}
    scraped = {(row["job"], row["name"]) for row in summary["series"]}
    assert ("online", "floodgate_gate_in_use") in scraped, sorted(scraped)[:20]
    assert any(job == "envoy" for job, _ in scraped), sorted({j for j, _ in scraped})
    assert any(name == "process_cpu_seconds_total" for _, name in scraped)
    # a round each second from the run's start (the scraper's child process), every target read
    assert sorted({row["t"] for row in summary["series"]})[:3] == [0.0, 1.0, 2.0]
    assert not [note for note in summary["notes"] if note.startswith("scraping")], summary["notes"]
    # Envoy's per-code counter is not folded into its total
    totals = [r for r in summary["series"] if r["name"] == "envoy_cluster_upstream_rq_total"]
    assert totals and not any("envoy_response_code" in r["labels"] for r in totals)
    assert "phase mixed: 3s" in printed and "deal_brain: offered 6" in printed and "summary:" in printed
    assert (out / "report.html").exists() and "report:" in printed  # the report module joins up
    # with a plan, the budget truth: no ramping stream here, so no knee to compare, but the section
    assert summary["budget"]["inputs"] == {"plan": str(plan)} and summary["budget"]["capacity"] == []

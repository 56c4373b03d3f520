"""Seeing the running cluster: `floodgate top --once` on the cluster `make up` runs, and every metric the
Grafana dashboard selects is in a live scrape (the services' /metrics and Envoy's /stats/prometheus),
after one dealBrain answer and one finished ingest job (some families only have samples after traffic)."""

from __future__ import annotations

import io
import json
import shutil
import time

import floodgate
import httpx
import pytest
import yaml
from floodgate import _top
from floodgate._dashboard import dashboard_expressions, referenced_metrics
from floodgate.cli import main
from prometheus_client.parser import text_string_to_metric_families

from cluster.dashboard import dashboard
from harness import REPO_ROOT
from harness.ports import free_port
from tests.gateway._cluster import ACME, run_cluster

# the cluster fixture waits up to 120 s for the cluster (its set-up counts in the first test's time)
pytestmark = pytest.mark.timeout(180)

_SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_count", "_sum"),
    "summary": ("_count", "_sum"),
}


#: with a ``prometheus`` binary on the PATH, the cluster runs it too (FLOODGATE_PROMETHEUS)
PROMETHEUS = shutil.which("prometheus")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, realtime):
    settings = (
        {"FLOODGATE_PROMETHEUS": "1", "FLOODGATE_PROMETHEUS_PORT": str(free_port())} if PROMETHEUS else {}
    )
    with run_cluster(tmp_path_factory.mktemp("cluster"), **settings) as running:
        with httpx.Client(base_url=running["gateway"], timeout=30, headers=ACME) as client:
            job = client.post(
                "/v1/omnirag/jobs", json={"doc_id": "memo", "text": "Aldercrest bought Norfield. " * 8}
            )
            assert job.status_code == 202, job.text
            answer = client.post("/v1/deal-brain/answers", json={"question": "Who bought Norfield?"})
            assert answer.status_code == 200, answer.text
            deadline = time.monotonic() + 30
            url = f"/v1/omnirag/jobs/{job.json()['job_id']}"
            while (state := client.get(url).json()["state"]) != "succeeded":
                assert state in ("queued", "running") and time.monotonic() < deadline, state
                time.sleep(0.2)
        yield running


def test_top_once_shows_the_endpoints_every_dependency_the_pools_and_the_queue(cluster):
    out, err = io.StringIO(), io.StringIO()
    code = main(
        ["top", "--once", "--interval", "0.5", "--state", str(cluster["data"] / "cluster.json")],
        out=out,
        err=err,
    )
    text = out.getvalue()
    assert code == 0, err.getvalue() + text
    for path in ("/v1/deal-brain/answers", "/v1/shadow-hunter/hunts", "/v1/nexus-assess/assessments"):
        assert f"online POST {path}" in text, text
    assert "ingest_api POST /v1/omnirag/jobs" in text
    budget = floodgate.load_budget(REPO_ROOT / "config" / "budget.toml")
    shown = {" ".join(line.split()[:2]) for line in text.splitlines()}
    for name, dep in budget.dependencies.items():
        users = [service for service in dep.shares]
        assert any(f"{service} {name}" in shown for service in users), (name, text)
    assert "online db" in shown and "ingest_worker db_write" in shown  # pools (and their gates)
    assert "depth " in text and "oldest runnable" in text, text
    for process in ("online", "ingest-api", "ingest-worker-1", "simulator", "ratelimit", "envoy"):
        assert any(line.split()[:1] == [process] and "down" not in line for line in text.splitlines()), (
            process
        )
    assert "rates over 0." in text  # two scrapes: real rates


def _names(text: str) -> set[str]:
    """Every sample name the scrape has, and the exposed names of families declared without samples yet."""
    names = set(_top.parse_samples(text))
    for family in text_string_to_metric_families(text):
        if not family.samples:
            names.update(family.name + suffix for suffix in _SUFFIXES.get(family.type, ("",)))
    return names


def test_every_metric_the_dashboard_and_the_rules_select_is_scraped(cluster):
    state = json.loads((cluster["data"] / "cluster.json").read_text())
    scraped: set[str] = set()
    jobs = set()
    for target in _top.targets_from_state(state):
        response = httpx.get(target.url, timeout=10)
        assert response.status_code == 200, target
        scraped |= _names(response.text)
        jobs.add(target.job)
    assert jobs >= {"online", "ingest_api", "ingest_worker", "simulator", "ratelimit", "envoy"}
    board = dashboard(floodgate.load_budget(REPO_ROOT / "config" / "budget.toml"))
    missing = referenced_metrics(dashboard_expressions(board)) - scraped
    assert not missing, f"the dashboard selects metrics no process exports: {sorted(missing)}"
    # The alerting and recording rules select from the same scrape; names they record themselves
    # (``record:``) are theirs, not a process's.
    rules = yaml.safe_load((REPO_ROOT / "observability" / "rules.yml").read_text())
    entries = [rule for group in rules["groups"] for rule in group["rules"]]
    recorded = {rule["record"] for rule in entries if "record" in rule}
    selected = referenced_metrics([rule["expr"] for rule in entries]) - recorded
    assert selected, "the rules select no metric at all"
    missing = selected - scraped
    assert not missing, f"the alert rules select metrics no process exports: {sorted(missing)}"


def test_make_up_runs_prometheus_on_the_clusters_scrape_configuration(cluster):
    if PROMETHEUS is None:
        pytest.skip("no prometheus binary on the PATH (Debian: apt-get install prometheus)")
    state = json.loads((cluster["data"] / "cluster.json").read_text())
    (child,) = [c for c in state["children"] if c["name"] == "prometheus"]
    expected = {"online", "ingest_api", "ingest_worker", "simulator", "ratelimit", "envoy"}
    deadline = time.monotonic() + 30  # its first scrape of every target (every 5 s)
    while True:
        targets = httpx.get(f"{child['url']}/api/v1/targets", timeout=5).json()["data"]["activeTargets"]
        up = {t["labels"]["job"] for t in targets if t["health"] == "up"}
        if up >= expected or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert up >= expected, [(t["labels"]["job"], t["health"], t.get("lastError")) for t in targets]

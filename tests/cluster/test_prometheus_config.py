"""The committed Prometheus files (observability/) are what `python -m cluster prometheus-config`
writes, each alert has its runbook, and Prometheus's own tool accepts them: ``promtool check config``,
``promtool check rules`` and the unit tests in observability/tests (``promtool test rules``)."""

from __future__ import annotations

import shutil
import subprocess

import floodgate
import pytest
import yaml
from floodgate._alerts import ALERT_NAMES

from cluster.cli import main as cluster_main
from cluster.prometheus import endpoint_requests, endpoint_routes, prometheus_files, scrape_config
from cluster.settings import load_cluster_settings
from harness import REPO_ROOT

OBSERVABILITY = REPO_ROOT / "observability"
PROMTOOL_MISSING = (
    "promtool is not on the PATH: install Debian's prometheus package "
    "(apt-get install --no-install-recommends prometheus) or unpack a Prometheus release, then `make check-alerts`"
)


def test_committed_files_are_the_generators_output(monkeypatch) -> None:
    monkeypatch.chdir(REPO_ROOT)
    for name, text in prometheus_files(load_cluster_settings({})).items():
        assert (OBSERVABILITY / name).read_text(encoding="utf-8") == text, (
            f"observability/{name} is stale: run `python -m cluster prometheus-config --out observability`"
        )


def test_scrape_jobs_are_the_contracts_on_the_clusters_ports() -> None:
    settings = load_cluster_settings({"FLOODGATE_ONLINE_PORT": "9181", "FLOODGATE_INGEST_WORKERS": "3"})
    jobs = {j["job_name"]: j for j in scrape_config(settings)["scrape_configs"]}
    assert list(jobs) == ["online", "ingest_api", "ingest_worker", "simulator", "ratelimit", "envoy"]
    assert jobs["online"]["static_configs"] == [{"targets": ["127.0.0.1:9181"]}]
    assert jobs["ingest_worker"]["static_configs"] == [
        {"targets": ["127.0.0.1:8083", "127.0.0.1:8084", "127.0.0.1:8085"]}
    ]
    assert jobs["ratelimit"]["static_configs"] == [{"targets": ["127.0.0.1:8092"]}]  # its HTTP port
    assert jobs["envoy"]["metrics_path"] == "/stats/prometheus"
    assert jobs["envoy"]["static_configs"] == [{"targets": ["127.0.0.1:9901"]}]  # the admin port
    no_workers = load_cluster_settings({"FLOODGATE_INGEST_WORKERS": "0"})
    assert "ingest_worker" not in {j["job_name"] for j in scrape_config(no_workers)["scrape_configs"]}


def test_every_budget_endpoint_has_its_route_and_method() -> None:
    budget = floodgate.load_budget(REPO_ROOT / "config" / "budget.toml")
    assert set(endpoint_routes()) == set(endpoint_requests()) == set(budget.endpoints)
    assert (
        endpoint_requests()["omnirag_submit"] == "POST /v1/omnirag/jobs"
    )  # GET lists the jobs on the same route
    assert endpoint_requests()["deal_brain"] == "POST /v1/deal-brain/answers"


def test_the_command_prints_the_scrape_config_and_writes_both_files(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(REPO_ROOT)
    for name in ("FLOODGATE_ONLINE_PORT", "FLOODGATE_INGEST_WORKERS", "FLOODGATE_HOST"):
        monkeypatch.delenv(name, raising=False)
    assert cluster_main(["prometheus-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["rule_files"] == ["rules.yml"]
    assert cluster_main(["prometheus-config", "--out", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prometheus.yml", "rules.yml"]


def test_each_alert_has_a_runbook_that_names_it() -> None:
    for alert in ALERT_NAMES:
        page = REPO_ROOT / "docs" / "runbooks" / f"{alert}.md"
        assert page.exists(), f"{alert} has no runbook at docs/runbooks/{alert}.md"
        text = page.read_text(encoding="utf-8")
        assert text.startswith(f"# {alert}\n"), f"{page.name} must start with '# {alert}'"
        for section in ("## What it means", "## How to confirm", "## Remedy"):
            assert section in text, f"{page.name} has no '{section}' section"


def test_each_alert_has_a_firing_and_a_silent_unit_test() -> None:
    fired: set[str] = set()
    silent: set[str] = set()
    for path in sorted((OBSERVABILITY / "tests").glob("*.yml")):
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                (fired if check.get("exp_alerts") else silent).add(check["alertname"])
    assert fired == set(ALERT_NAMES)
    assert silent == set(ALERT_NAMES)


def _promtool(*argv: str) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip(PROMTOOL_MISSING)
    done = subprocess.run([promtool, *argv], capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)
    assert done.returncode == 0, f"promtool {' '.join(argv)}:\n{done.stdout}{done.stderr}"


@pytest.mark.realtime  # runs promtool
def test_promtool_checks_the_scrape_config_and_the_rules() -> None:
    _promtool("check", "config", "observability/prometheus.yml")
    _promtool("check", "rules", "observability/rules.yml")


@pytest.mark.realtime  # runs promtool
def test_promtool_unit_tests_of_the_alerts() -> None:
    tests = sorted(str(p.relative_to(REPO_ROOT)) for p in (OBSERVABILITY / "tests").glob("*.yml"))
    assert tests
    _promtool("test", "rules", *tests)


def test_the_request_histogram_has_a_bucket_at_every_slo_latency() -> None:
    """The SLO alerts read the fraction of requests above each SLO latency from the bucket at exactly
    that bound: without it their ratios have no data and they never fire."""
    import chassis

    budget = floodgate.load_budget(REPO_ROOT / "config" / "budget.toml")
    state = chassis.chassis_state(chassis.create_app("probe"))
    state.latency.labels("/probe", "GET", "2xx").observe(0.0)
    bounds = {
        float(sample.labels["le"])
        for family in state.registry.collect()
        if family.name == "http_request_duration_seconds"
        for sample in family.samples
        if sample.name.endswith("_bucket")
    }
    missing = [b for b in floodgate.slo_bucket_bounds(budget) if b not in bounds]
    assert not missing, (
        f"http_request_duration_seconds has no bucket at {missing} (SLO latencies of the budget)"
    )

"""The committed dashboard and compose scrape configuration are what `python -m cluster.dashboard`
writes, and every PromQL expression of the dashboard passes promtool's parser."""

from __future__ import annotations

import shutil
import subprocess

import floodgate
import pytest
import yaml
from floodgate._dashboard import recording_rules

from cluster.dashboard import COMPOSE_SCRAPE_FILE, dashboard, main, observability_files
from cluster.settings import load_cluster_settings
from harness import REPO_ROOT


def test_committed_files_are_the_generators_output(monkeypatch) -> None:
    monkeypatch.chdir(REPO_ROOT)
    for path, text in observability_files(load_cluster_settings({})).items():
        assert (REPO_ROOT / path).read_text(encoding="utf-8") == text, (
            f"{path} is stale: run `python -m cluster.dashboard`"
        )
    assert main(["--check"]) == 0


@pytest.mark.realtime  # runs promtool
def test_promtool_accepts_every_dashboard_expression(tmp_path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip(
            "promtool is not on the PATH (Debian: apt-get install prometheus; or a Prometheus release)"
        )
    rules = tmp_path / "dashboard_rules.yml"
    rules.write_text(recording_rules(dashboard(floodgate.load_budget(REPO_ROOT / "config" / "budget.toml"))))
    checked = subprocess.run(
        [promtool, "check", "rules", str(rules)], capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


@pytest.mark.realtime  # runs promtool
def test_promtool_accepts_the_compose_scrape_configuration(tmp_path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip(
            "promtool is not on the PATH (Debian: apt-get install prometheus; or a Prometheus release)"
        )
    # the rules are mounted at /etc/prometheus in the container: here, beside the configuration
    config = yaml.safe_load((REPO_ROOT / COMPOSE_SCRAPE_FILE).read_text())
    config["rule_files"] = [str(REPO_ROOT / "observability" / "rules.yml")]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    checked = subprocess.run(
        [promtool, "check", "config", str(path)], capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr

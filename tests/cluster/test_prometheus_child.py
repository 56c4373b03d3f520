"""FLOODGATE_PROMETHEUS=1: Prometheus as one more child of `make up`, on the cluster's own scrape
configuration and rules (off by default; a missing binary stops start-up naming the variable)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from cluster.children import cluster_children
from cluster.settings import ClusterSettingsError, load_cluster_settings
from harness import REPO_ROOT


def test_off_by_default() -> None:
    settings = load_cluster_settings({})
    assert not settings.prometheus
    names = [c.name for c in cluster_children(settings, envoy_config=Path("/tmp/envoy.yaml"))]
    assert "prometheus" not in names
    assert all(var != "FLOODGATE_PROMETHEUS_PORT" for _, var in settings.ports())


def test_a_missing_binary_stops_start_up_naming_the_variable(monkeypatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(ClusterSettingsError, match=r"^FLOODGATE_PROMETHEUS: no `prometheus` binary"):
        load_cluster_settings({"FLOODGATE_PROMETHEUS": "1"})


def test_the_child_scrapes_the_cluster_with_its_configuration(monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: f"/opt/bin/{name}")
    monkeypatch.chdir(REPO_ROOT)  # the budget file's default path is relative
    settings = load_cluster_settings(
        {
            "FLOODGATE_PROMETHEUS": "1",
            "FLOODGATE_PROMETHEUS_PORT": "9999",
            "FLOODGATE_DATA_DIR": str(tmp_path),
        }
    )
    assert (9999, "FLOODGATE_PROMETHEUS_PORT") in settings.ports()
    child = cluster_children(settings, envoy_config=Path("/tmp/envoy.yaml"))[-1]
    assert child.name == "prometheus" and child.on_crash == "restart"
    assert child.argv[0] == "/opt/bin/prometheus"
    assert f"--config.file={tmp_path / 'prometheus' / 'prometheus.yml'}" in child.argv
    assert "--web.listen-address=127.0.0.1:9999" in child.argv
    assert child.ready.url == "http://127.0.0.1:9999/-/ready"
    assert child.prepare is not None
    child.prepare()
    config = yaml.safe_load((tmp_path / "prometheus" / "prometheus.yml").read_text())
    jobs = {j["job_name"] for j in config["scrape_configs"]}
    assert jobs == {"online", "ingest_api", "ingest_worker", "simulator", "ratelimit", "envoy"}
    assert (tmp_path / "prometheus" / config["rule_files"][0]).exists()

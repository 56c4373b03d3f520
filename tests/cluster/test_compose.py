"""compose.yaml cannot run here (no Docker); this keeps it honest against the local cluster: every
process `make up` starts is a compose service, with the same ports and the same settings."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from cluster.children import ChildSpec, cluster_children
from cluster.settings import ENV_NAMES, load_cluster_settings
from harness import REPO_ROOT

COMPOSE = REPO_ROOT / "compose.yaml"
COMPOSE_DEV = REPO_ROOT / "compose.dev.yaml"
_DEFAULT = re.compile(r"\$\{([A-Z0-9_]+):-([^}]*)\}")


def _interpolate(value: Any) -> Any:
    """Compose's ``${VAR:-default}`` with nothing set: the default."""
    if isinstance(value, str):
        return _DEFAULT.sub(lambda m: m.group(2), value)
    if isinstance(value, list):
        return [_interpolate(v) for v in value]
    if isinstance(value, dict):
        return {k: _interpolate(v) for k, v in value.items()}
    return value


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return _interpolate(yaml.safe_load(COMPOSE.read_text()))["services"]


@pytest.fixture(scope="module")
def children() -> list[ChildSpec]:
    settings = load_cluster_settings({})
    return cluster_children(settings, envoy_config=Path("/tmp/envoy.yaml"))


def _compose_name(child: str) -> str:
    # ingest-worker-1, -2 ... are the replicas of ingest-worker; online-2 ... of online
    return re.sub(r"-\d+$", "", child)


def _published(service: dict[str, Any]) -> set[int]:
    return {int(p.split(":")[-1]) for p in service.get("ports", [])} | {
        int(p) for p in service.get("expose", [])
    }


def test_every_process_of_make_up_is_a_compose_service(compose, children) -> None:
    assert {_compose_name(c.name) for c in children} <= set(compose)
    settings = load_cluster_settings({})
    assert int(compose["ingest-worker"]["deploy"]["replicas"]) == settings.ingest_workers
    assert int(compose["online"]["deploy"]["replicas"]) == settings.online_replicas
    assert int(compose["ingest-api"]["deploy"]["replicas"]) == settings.ingest_api_replicas


def test_replicas_follow_the_same_variables_as_make_up() -> None:
    raw = yaml.safe_load(COMPOSE.read_text())["services"]
    for service, setting in (
        ("online", "online_replicas"),
        ("ingest-api", "ingest_api_replicas"),
        ("ingest-worker", "ingest_workers"),
    ):
        assert raw[service]["deploy"]["replicas"].startswith(f"${{{ENV_NAMES[setting]}:-"), service


def _published_on_host(service: dict[str, Any]) -> list[tuple[str, int]]:
    """(host address, host port) of each ``ports`` entry (``[IP:]HOST:CONTAINER``)."""
    found = []
    for entry in service.get("ports", []):
        parts = entry.split(":")
        address = parts[0] if len(parts) == 3 else "0.0.0.0"
        found.append((address, int(parts[-2])))
    return found


def test_only_the_gateway_port_of_the_request_path_is_published(compose) -> None:
    """The trust boundary: the services trust the tenant header the gateway sets, so nothing but the
    gateway's listener reaches them from the host. Prometheus and Grafana (read-only views) stay on
    loopback; PostgreSQL, the simulator's admin API and Envoy's admin only with compose.dev.yaml."""
    settings = load_cluster_settings({})
    published = {name: _published_on_host(svc) for name, svc in compose.items() if svc.get("ports")}
    assert published.pop("envoy") == [("127.0.0.1", settings.gateway_port)]
    assert set(published) == {"prometheus", "grafana"}, published
    assert all(address == "127.0.0.1" for ports in published.values() for address, _ in ports)


def test_the_dev_override_publishes_on_loopback_only(compose) -> None:
    settings = load_cluster_settings({})
    dev = _interpolate(yaml.safe_load(COMPOSE_DEV.read_text()))["services"]
    assert set(dev) <= set(compose)
    published = {name: _published_on_host(svc) for name, svc in dev.items()}
    assert published == {
        "postgres": [("127.0.0.1", settings.pg_port)],
        "simulator": [("127.0.0.1", settings.simulator_port)],
        "envoy": [("127.0.0.1", settings.envoy_admin_port)],
    }


def test_same_ports(compose, children) -> None:
    settings = load_cluster_settings({})
    for child in children:
        if child.port is None or child.name.startswith("ingest-worker-"):
            continue
        assert child.port in _published(compose[_compose_name(child.name)]), child.name
    assert settings.ingest_worker_port in _published(compose["ingest-worker"])
    assert settings.envoy_admin_port in _published(compose["envoy"])
    assert compose["postgres"]["environment"]["PGPORT"] == str(settings.pg_port)


def test_same_settings_for_each_python_service(compose, children) -> None:
    """Every variable `make up` gives a service is set in compose too, with the same value except
    where containers differ by nature: the bind address, host names and in-image paths."""
    for child in children:
        if not child.env or child.name == "migrate":
            continue
        env = compose[_compose_name(child.name)]["environment"]
        missing = set(child.env) - set(env)
        assert not missing, (child.name, missing)
        for name, value in child.env.items():
            if name.endswith("_HOST"):
                assert env[name] == "0.0.0.0"
            elif name.endswith("_DATABASE_URL"):
                assert env[name] == value.replace("127.0.0.1", "postgres")
            elif name.endswith("_BASE_URL"):
                assert env[name] == value.replace("127.0.0.1", "simulator")
            elif name.endswith("_BUDGET_FILE"):
                assert env[name] == "/app/config/budget.toml"
            elif name == "RATELIMIT_CONFIG":
                assert env[name] == "/app/config/ratelimit.yaml"
            elif name.endswith("_LOG_FORMAT") or name.startswith("INGEST_WORKER_PORT"):
                continue
            else:
                assert str(env[name]) == value, (child.name, name)


def test_long_running_services_have_health_checks_and_start_in_order(compose) -> None:
    for name in ("postgres", "simulator", "online", "ingest-api", "ingest-worker", "envoy"):
        assert "healthcheck" in compose[name], name
    assert compose["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("online", "ingest-api", "ingest-worker"):
        assert compose[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert compose["envoy"]["image"] == "envoyproxy/envoy:v1.40-latest"
    assert compose["postgres"]["image"] == "pgvector/pgvector:pg18"
    assert set(compose["envoy"]["depends_on"]) >= {"online", "ingest-api", "envoy-config"}


def test_prometheus_and_grafana_are_provisioned_with_the_generated_files(compose) -> None:
    """Prometheus gets the compose scrape configuration and the alerting rules, Grafana the data source
    the dashboard names and the dashboard itself: every mounted file exists in the repository."""
    from floodgate._dashboard import DATASOURCE

    from cluster.dashboard import COMPOSE_SCRAPE_FILE, DASHBOARD_FILE

    def mounts(service: str) -> dict[str, Path]:
        found = {}
        for volume in compose[service]["volumes"]:
            source, target = volume.split(":")[:2]
            if source.startswith("./"):
                assert (REPO_ROOT / source).exists(), (service, source)
                found[target] = Path(source.removeprefix("./"))
        return found

    prometheus = mounts("prometheus")
    assert prometheus["/etc/prometheus/prometheus.yml"] == COMPOSE_SCRAPE_FILE
    assert prometheus["/etc/prometheus/rules.yml"] == Path("observability/rules.yml")
    assert "--config.file=/etc/prometheus/prometheus.yml" in compose["prometheus"]["command"]

    grafana = mounts("grafana")
    assert grafana["/var/lib/grafana/dashboards/floodgate.json"] == DASHBOARD_FILE
    provisioning = REPO_ROOT / grafana["/etc/grafana/provisioning"]
    (source,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())["datasources"]
    assert source["uid"] == DATASOURCE["uid"] and source["url"] == "http://prometheus:9090"
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "floodgate.yml").read_text())["providers"]
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"
    assert compose["grafana"]["depends_on"] == ["prometheus"]


def test_compose_scrape_configuration_names_compose_services(compose) -> None:
    """The same jobs as the local cluster's scrape configuration, each on a compose service's name and
    port; the ingest workers' replicas found by DNS."""
    from cluster.dashboard import COMPOSE_SCRAPE_FILE
    from cluster.prometheus import scrape_config

    settings = load_cluster_settings({})
    local = {j["job_name"]: j for j in scrape_config(settings)["scrape_configs"]}
    scraped = yaml.safe_load((REPO_ROOT / COMPOSE_SCRAPE_FILE).read_text())
    jobs = {j["job_name"]: j for j in scraped["scrape_configs"]}
    assert set(jobs) == set(local)
    assert scraped["rule_files"] == ["/etc/prometheus/rules.yml"]
    for name, job in jobs.items():
        assert job.get("metrics_path") == local[name].get("metrics_path"), name
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                host, port = target.rsplit(":", 1)
                assert int(port) in _published(compose[host]), target
    for job, service, port in (
        ("ingest_worker", "ingest-worker", settings.ingest_worker_port),
        ("online", "online", settings.online_port),
        ("ingest_api", "ingest-api", settings.ingest_api_port),
    ):
        (dns,) = jobs[job]["dns_sd_configs"]  # every replica, found by DNS
        assert dns["names"] == [service] and dns["port"] == port, job
        assert port in _published(compose[service])

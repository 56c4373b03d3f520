"""gateway/envoy.yaml: the committed file and a rendered one pass ``envoy --mode validate``; the
renderer changes ports by editing the parsed document."""

import subprocess
from pathlib import Path

import pytest
import yaml

from cluster.envoy import (
    COMPOSE_HOSTS,
    ENVOY_CONFIG,
    ONLINE_CLUSTERS,
    render_envoy_config,
    validate_command,
    write_envoy_config,
)
from cluster.settings import load_cluster_settings


def _validate(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(validate_command(path), capture_output=True, text=True, timeout=60, check=False)


def _endpoints(config: dict, cluster: str) -> list[tuple[str, int]]:
    found = next(c for c in config["static_resources"]["clusters"] if c["name"] == cluster)
    return [
        (
            e["endpoint"]["address"]["socket_address"]["address"],
            e["endpoint"]["address"]["socket_address"]["port_value"],
        )
        for group in found["load_assignment"]["endpoints"]
        for e in group["lb_endpoints"]
    ]


@pytest.mark.realtime  # envoy --mode validate runs the binary
def test_the_committed_config_validates() -> None:
    result = _validate(ENVOY_CONFIG)
    assert result.returncode == 0, result.stderr


def test_the_committed_config_matches_the_default_settings() -> None:
    committed = yaml.safe_load(ENVOY_CONFIG.read_text())
    assert render_envoy_config(load_cluster_settings({})) == committed


@pytest.mark.realtime  # envoy --mode validate runs the binary
def test_a_rendered_config_has_the_settings_ports_and_validates(tmp_path: Path) -> None:
    settings = load_cluster_settings(
        {
            "FLOODGATE_DATA_DIR": str(tmp_path),
            "FLOODGATE_GATEWAY_PORT": "18080",
            "FLOODGATE_ENVOY_ADMIN_PORT": "19901",
            "FLOODGATE_ONLINE_PORT": "18081",
            "FLOODGATE_ONLINE_REPLICAS": "2",
            "FLOODGATE_INGEST_API_PORT": "18082",
            "FLOODGATE_INGEST_API_REPLICAS": "3",
            "FLOODGATE_INGEST_WORKER_PORT": "18083",
            "FLOODGATE_INGEST_WORKERS": "3",
            "FLOODGATE_SIMULATOR_PORT": "18090",
        }
    )
    path = write_envoy_config(settings)
    assert path == tmp_path / "envoy.yaml"
    config = yaml.safe_load(path.read_text())
    assert config["admin"]["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 19901}
    listener = config["static_resources"]["listeners"][0]["address"]["socket_address"]
    assert listener == {"address": "127.0.0.1", "port_value": 18080}
    # the health cluster and one per endpoint, each over every process of the one service
    for name in ONLINE_CLUSTERS:
        assert _endpoints(config, name) == [("127.0.0.1", 18081), ("127.0.0.1", 18181)]
    assert _endpoints(config, "ingest_api") == [("127.0.0.1", p) for p in (18082, 18182, 18282)]
    assert _endpoints(config, "ingest_worker") == [("127.0.0.1", p) for p in (18083, 18084, 18085)]
    assert _endpoints(config, "simulator") == [("127.0.0.1", 18090)]
    result = _validate(path)
    assert result.returncode == 0, result.stderr


@pytest.mark.realtime  # envoy --mode validate runs the binary
def test_compose_rendering_points_at_service_names(tmp_path: Path) -> None:
    config = render_envoy_config(load_cluster_settings({}), hosts=COMPOSE_HOSTS, listen_host="0.0.0.0")
    assert _endpoints(config, "ingest_worker") == [("ingest-worker", 8083)]  # DNS gives every replica
    for name in ONLINE_CLUSTERS:
        assert _endpoints(config, name) == [("online", 8081)]
    path = tmp_path / "compose-envoy.yaml"
    path.write_text(yaml.safe_dump(config))
    # validate resolves nothing, so service names are fine here.
    assert _validate(path).returncode == 0


def test_routes_and_what_the_gateway_does_not_expose() -> None:
    config = yaml.safe_load(ENVOY_CONFIG.read_text())
    hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    assert hcm["generate_request_id"] is True and hcm["preserve_external_request_id"] is True
    routes = hcm["route_config"]["virtual_hosts"][0]["routes"]
    by_match = {next(iter(r["match"].items())): r for r in routes}
    assert by_match[("prefix", "/v1/omnirag/")]["route"]["cluster"] == "ingest_api"
    # (gateway issue) one route per online endpoint, each to its own cluster of the online service;
    # any other /v1 path is a 404 after the key check
    for prefix, endpoint in (
        ("/v1/deal-brain/", "deal_brain"),
        ("/v1/shadow-hunter/", "shadow_hunter"),
        ("/v1/nexus-assess/", "nexus_assess"),
    ):
        assert by_match[("prefix", prefix)]["route"]["cluster"] == f"online_{endpoint}"
    assert by_match[("prefix", "/v1/")]["direct_response"]["status"] == 404
    assert by_match[("path", "/healthz/online")]["route"]["prefix_rewrite"] == "/healthz"
    # Specific routes must come before the /v1/ catch-all, or it would answer them.
    order = [next(iter(r["match"].items())) for r in routes]
    assert order.index(("prefix", "/v1/omnirag/")) < order.index(("prefix", "/v1/"))
    # Nothing routes /admin to the simulator: the simulator cluster only serves /healthz/simulator.
    upstream_routes = [r for r in routes if r.get("route", {}).get("cluster") == "simulator"]
    assert [r["match"] for r in upstream_routes] == [{"path": "/healthz/simulator"}]


@pytest.mark.realtime  # envoy --mode validate runs the binary
def test_zero_workers_and_the_ratelimit_cluster(tmp_path: Path) -> None:
    settings = load_cluster_settings({"FLOODGATE_INGEST_WORKERS": "0", "FLOODGATE_RATELIMIT_PORT": "18091"})
    config = render_envoy_config(settings)
    assert _endpoints(config, "ratelimit") == [("127.0.0.1", 18091)]
    assert _endpoints(config, "ingest_worker") == []
    path = tmp_path / "rendered.yaml"
    path.write_text(yaml.safe_dump(config))
    assert _validate(path).returncode == 0

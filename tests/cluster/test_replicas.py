"""Several processes of one service (FLOODGATE_ONLINE_REPLICAS, FLOODGATE_INGEST_API_REPLICAS): each on
its own port, each a child of the supervisor, each an endpoint of its service's Envoy clusters and a
Prometheus target; more than the budget plans only with membership on."""

from pathlib import Path

import pytest
from floodgate._top import targets_from_state

from cluster.children import cluster_children
from cluster.envoy import ONLINE_CLUSTERS, render_envoy_config
from cluster.prometheus import scrape_config
from cluster.settings import REPLICA_PORT_STEP, ClusterSettingsError, load_cluster_settings

REPLICATED = {"FLOODGATE_ONLINE_REPLICAS": "3", "FLOODGATE_INGEST_API_REPLICAS": "2"}


def _endpoints(config: dict, cluster: str) -> list[int]:
    found = next(c for c in config["static_resources"]["clusters"] if c["name"] == cluster)
    return [
        e["endpoint"]["address"]["socket_address"]["port_value"]
        for group in found["load_assignment"]["endpoints"]
        for e in group["lb_endpoints"]
    ]


def test_one_process_each_by_default() -> None:
    settings = load_cluster_settings({})
    assert settings.online_ports() == [8081] and settings.ingest_api_ports() == [8082]
    names = [c.name for c in cluster_children(settings, envoy_config=Path("/tmp/envoy.yaml"))]
    assert "online" in names and "online-2" not in names and "ingest-api-2" not in names


def test_each_process_has_its_own_port_a_step_above_the_first() -> None:
    settings = load_cluster_settings(REPLICATED)
    assert settings.online_ports() == [8081 + i * REPLICA_PORT_STEP for i in range(3)]
    assert settings.ingest_api_ports() == [8082, 8082 + REPLICA_PORT_STEP]
    described = dict(settings.ports())
    assert described[8281] == "FLOODGATE_ONLINE_PORT (+200, online process 3)"
    assert described[8182] == "FLOODGATE_INGEST_API_PORT (+100, ingest API process 2)"


def test_a_replica_port_that_collides_is_refused_naming_both_variables() -> None:
    with pytest.raises(
        ClusterSettingsError, match=r"FLOODGATE_INGEST_API_PORT and FLOODGATE_ONLINE_PORT \(\+100"
    ):
        load_cluster_settings({"FLOODGATE_ONLINE_REPLICAS": "2", "FLOODGATE_INGEST_API_PORT": "8181"})
    with pytest.raises(ClusterSettingsError, match="FLOODGATE_ONLINE_REPLICAS"):
        load_cluster_settings({"FLOODGATE_ONLINE_REPLICAS": "0"})


def test_every_process_is_a_child_with_its_port_in_its_environment() -> None:
    settings = load_cluster_settings(REPLICATED)
    children = {c.name: c for c in cluster_children(settings, envoy_config=Path("/tmp/envoy.yaml"))}
    online = [children[n] for n in ("online", "online-2", "online-3")]
    assert [c.env["ONLINE_PORT"] for c in online] == ["8081", "8181", "8281"]
    assert [c.ready.url for c in online] == [f"http://127.0.0.1:{p}/healthz" for p in (8081, 8181, 8281)]
    assert children["ingest-api-2"].env["INGEST_API_PORT"] == "8182"
    assert children["ingest-api-2"].argv[-2:] == ("services.ingest", "api")
    # Envoy starts after every one of them.
    assert {"online", "online-2", "online-3", "ingest-api", "ingest-api-2"} <= set(children["envoy"].needs)


def test_envoy_balances_over_every_process_and_prometheus_scrapes_each() -> None:
    settings = load_cluster_settings(REPLICATED)
    config = render_envoy_config(settings)
    for name in ONLINE_CLUSTERS:
        assert _endpoints(config, name) == [8081, 8181, 8281], name
    assert _endpoints(config, "ingest_api") == [8082, 8182]
    jobs = {
        j["job_name"]: j["static_configs"][0]["targets"] for j in scrape_config(settings)["scrape_configs"]
    }
    assert jobs["online"] == ["127.0.0.1:8081", "127.0.0.1:8181", "127.0.0.1:8281"]
    assert jobs["ingest_api"] == ["127.0.0.1:8082", "127.0.0.1:8182"]


def test_floodgate_top_groups_the_processes_of_a_service_into_one_job() -> None:
    state = {
        "children": [
            {"name": "online", "probe": {"http": "http://127.0.0.1:8081/healthz"}},
            {"name": "online-2", "probe": {"http": "http://127.0.0.1:8181/healthz"}},
            {"name": "ingest-api-2", "probe": {"http": "http://127.0.0.1:8182/healthz"}},
        ]
    }
    targets = targets_from_state(state)
    assert [(t.job, t.instance) for t in targets] == [
        ("online", "online"),
        ("online", "online-2"),
        ("ingest_api", "ingest-api-2"),
    ]


def test_membership_reaches_every_service_that_divides_a_budget() -> None:
    """On by default; FLOODGATE_MEMBERSHIP=0 turns it off in every process (each then takes its
    planned share, and pre-flight refuses more processes than the plan)."""
    on = {
        c.name: c
        for c in cluster_children(load_cluster_settings(REPLICATED), envoy_config=Path("/tmp/e.yaml"))
    }
    for name, prefix in (("online", "ONLINE_"), ("online-3", "ONLINE_"), ("ingest-api-2", "INGEST_API_")):
        assert on[name].env[f"{prefix}MEMBERSHIP"] == "1", name
    assert on["ingest-worker-1"].env["INGEST_WORKER_MEMBERSHIP"] == "1"
    assert not any(var.endswith("MEMBERSHIP") for var in on["simulator"].env)
    off = cluster_children(
        load_cluster_settings({"FLOODGATE_MEMBERSHIP": "0"}), envoy_config=Path("/tmp/e.yaml")
    )
    assert {v for c in off for k, v in c.env.items() if k.endswith("_MEMBERSHIP")} == {"0"}

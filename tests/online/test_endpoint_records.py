"""The endpoint records are the one list of online endpoints: the routes, the doors, the front door,
the OpenAPI document and the gateway's clusters are all derived from `services.online.ENDPOINTS`,
so adding or removing a record changes every one of them and nothing else has to be kept in step."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from cluster.envoy import (
    ENVOY_CONFIG,
    ONLINE_CLUSTERS,
    EnvoyConfigError,
    render_envoy_config,
    service_documents,
)
from cluster.settings import load_cluster_settings
from services.online import ENDPOINTS, Endpoint
from services.online._admission import SHAPES

from .conftest import online_harness

NAMES = [endpoint.name for endpoint in ENDPOINTS]
PROBES = {"/healthz", "/readyz", "/metrics", "/openapi.json"}


def test_records_are_distinct_and_complete() -> None:
    assert all(isinstance(endpoint, Endpoint) for endpoint in ENDPOINTS)
    assert len(set(NAMES)) == len(NAMES)
    assert len({endpoint.path for endpoint in ENDPOINTS}) == len(ENDPOINTS)
    assert len({endpoint.operation_id for endpoint in ENDPOINTS}) == len(ENDPOINTS)
    assert [endpoint.cluster for endpoint in ENDPOINTS] == [f"online_{name}" for name in NAMES]
    assert repr(ENDPOINTS[0]) == "<Endpoint 'deal_brain' POST /v1/deal-brain/answers>"


async def test_routes_doors_front_door_and_openapi_come_from_the_records() -> None:
    async with online_harness() as h:
        routes = {
            (rule.rule, method)
            for rule in h.app.url_map.iter_rules()
            if rule.rule not in PROBES and rule.endpoint != "static"
            for method in rule.methods
            if method not in {"OPTIONS", "HEAD"}
        }
        doors = h.app.extensions["online"].doors
        front = h.app.asgi_app._routes
        doc = await (await h.client.get("/openapi.json")).get_json()
    assert routes == {(endpoint.path, endpoint.method) for endpoint in ENDPOINTS}
    assert list(doors) == NAMES
    assert list(SHAPES) == NAMES
    assert list(front) == [endpoint.path for endpoint in ENDPOINTS]
    assert [front[e.path].door for e in ENDPOINTS] == [doors[name] for name in NAMES]
    assert [path for path in doc["paths"] if path not in PROBES] == [e.path for e in ENDPOINTS]
    for endpoint in ENDPOINTS:
        operation = doc["paths"][endpoint.path][endpoint.method.lower()]
        assert operation["operationId"] == endpoint.operation_id
        assert operation["summary"] == endpoint.summary
        schema = operation["requestBody"]["content"]["application/json"]["schema"]
        assert schema == {"$ref": f"#/components/schemas/{endpoint.request.__name__}"}
        answer = operation["responses"]["200"]["content"]["application/json"]["schema"]
        assert answer == {"$ref": f"#/components/schemas/{endpoint.response.__name__}"}


def test_the_gateway_clusters_come_from_the_records() -> None:
    assert ONLINE_CLUSTERS == ("online", *(endpoint.cluster for endpoint in ENDPOINTS))
    settings = load_cluster_settings({})
    config = render_envoy_config(settings)
    clusters = [c["name"] for c in config["static_resources"]["clusters"]]
    assert [name for name in clusters if name.startswith("online")] == list(ONLINE_CLUSTERS)
    hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    routes = {r.get("name"): r for r in hcm["route_config"]["virtual_hosts"][0]["routes"]}
    for endpoint in ENDPOINTS:
        assert routes[endpoint.name]["route"]["cluster"] == endpoint.cluster
        assert endpoint.path.startswith(routes[endpoint.name]["match"]["prefix"])
    documents = service_documents(settings, environ={})
    assert set(ONLINE_CLUSTERS) <= set(documents)


def _edited(tmp_path: Path, edit) -> Path:
    config = copy.deepcopy(yaml.safe_load(ENVOY_CONFIG.read_text()))
    edit(config)
    path = tmp_path / "envoy.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _routes(config: dict) -> list[dict]:
    hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    return hcm["route_config"]["virtual_hosts"][0]["routes"]


def test_the_renderer_refuses_a_config_without_a_records_route(tmp_path: Path) -> None:
    def drop_route(config: dict) -> None:
        _routes(config)[:] = [r for r in _routes(config) if r.get("name") != "shadow_hunter"]

    with pytest.raises(EnvoyConfigError, match="no route named 'shadow_hunter'"):
        render_envoy_config(load_cluster_settings({}), source=_edited(tmp_path, drop_route))


def test_the_renderer_refuses_a_route_to_another_cluster(tmp_path: Path) -> None:
    def reroute(config: dict) -> None:
        next(r for r in _routes(config) if r.get("name") == "nexus_assess")["route"]["cluster"] = "online"

    with pytest.raises(EnvoyConfigError, match="'online_nexus_assess'"):
        render_envoy_config(load_cluster_settings({}), source=_edited(tmp_path, reroute))


def test_the_renderer_refuses_a_cluster_no_record_names(tmp_path: Path) -> None:
    def add_cluster(config: dict) -> None:
        clusters = config["static_resources"]["clusters"]
        stray = copy.deepcopy(next(c for c in clusters if c["name"] == "online_deal_brain"))
        stray["name"] = stray["load_assignment"]["cluster_name"] = "online_removed_endpoint"
        clusters.append(stray)

    with pytest.raises(EnvoyConfigError, match="online_removed_endpoint"):
        render_envoy_config(load_cluster_settings({}), source=_edited(tmp_path, add_cluster))

"""The gateway's OpenAPI document (cluster/gateway_openapi.py): valid, in step with the routes of the
rendered Envoy config and with the services' documents, the key schemes of the api_key_auth filter,
the gateway's own replies, and no header that is the gateway's business."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml
from openapi_spec_validator import validate

from cluster.envoy import ENVOY_CONFIG, render_envoy_config, service_documents, write_envoy_config
from cluster.gateway_openapi import (
    GATEWAY_ERRORS,
    OPENAPI_ROUTE,
    GatewayOpenApiError,
    build_gateway_openapi,
    edge_routes,
    route_for,
)
from cluster.settings import load_cluster_settings

INTERNAL_SERVICE_PATHS = {"/healthz", "/readyz", "/metrics", "/openapi.json"}


@pytest.fixture(scope="module")
def config() -> dict:
    return render_envoy_config(load_cluster_settings({}))


@pytest.fixture(scope="module")
def documents() -> dict:
    return service_documents(load_cluster_settings({}), environ={})


@pytest.fixture(scope="module")
def doc(config, documents) -> dict:
    return build_gateway_openapi(config, documents)


def _operations(document: dict) -> set[tuple[str, str]]:
    return {(path, method) for path, item in document["paths"].items() for method in item}


def test_the_document_is_valid_openapi_31(doc) -> None:
    validate(doc)
    assert doc["openapi"] == "3.1.0"


def test_every_operation_of_the_services_is_published_and_nothing_else(doc, documents) -> None:
    from_services = {
        (path, method)
        for service in {id(d): d for d in documents.values()}.values()
        for path, method in _operations(service)
        if path not in INTERNAL_SERVICE_PATHS
    }
    gateway_own = {(p, "get") for p in doc["paths"] if p.startswith("/healthz/")} | {("/openapi.json", "get")}
    assert _operations(doc) == from_services | gateway_own
    for path in (
        "/v1/deal-brain/answers",
        "/v1/omnirag/jobs",
        "/v1/omnirag/jobs/{job_id}",
        "/v1/omnirag/jobs/{job_id}/requeue",
    ):
        assert path in doc["paths"]


def test_every_published_operation_is_routed_where_it_is_served(doc, config, documents) -> None:
    routes = edge_routes(config)
    for path, method in _operations(doc):
        route = route_for(routes, method, path.replace("{job_id}", "7"))
        assert route is not None, (method, path)
        if route.direct_status is not None:
            assert route.direct_status == 200 and path in ("/healthz/gateway", "/openapi.json")
        elif route.prefix_rewrite is None:
            assert (path, method) in _operations(documents[route.cluster]), (method, path, route.cluster)


def test_a_route_taken_away_takes_its_operations_with_it(config, documents) -> None:
    trimmed = copy.deepcopy(config)
    vhost = trimmed["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"][
        "route_config"
    ]["virtual_hosts"][0]
    vhost["routes"] = [r for r in vhost["routes"] if r.get("name") != "omnirag_read"]
    doc = build_gateway_openapi(trimmed, documents)
    assert "get" not in doc["paths"]["/v1/omnirag/jobs"]  # now the /v1 catch-all's 404
    assert "/v1/omnirag/jobs/{job_id}" not in doc["paths"]
    assert "post" in doc["paths"]["/v1/omnirag/jobs"]  # omnirag_submit still routes it


def test_a_route_no_service_documents_is_an_error(config, documents) -> None:
    extra = copy.deepcopy(config)
    vhost = extra["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"][
        "route_config"
    ]["virtual_hosts"][0]
    vhost["routes"].insert(0, {"match": {"prefix": "/v1/secret/"}, "route": {"cluster": "ingest_api"}})
    with pytest.raises(GatewayOpenApiError, match="no operation"):
        build_gateway_openapi(extra, documents)


def test_the_key_schemes_are_those_of_the_api_key_filter(doc) -> None:
    schemes = doc["components"]["securitySchemes"]
    assert schemes["ApiKeyHeader"] == {"type": "apiKey", "in": "header", "name": "x-api-key"}
    assert schemes["BearerKey"]["type"] == "http" and schemes["BearerKey"]["scheme"] == "bearer"
    assert doc["security"] == [{"ApiKeyHeader": []}, {"BearerKey": []}]
    for path, item in doc["paths"].items():
        for operation in item.values():
            keyless = path.startswith("/healthz/") or path == "/openapi.json"
            assert ("security" in operation and operation["security"] == []) == keyless, path


def test_no_header_of_the_gateways_business(doc) -> None:
    text = json.dumps(doc["paths"])
    assert "x-floodgate-tenant" not in text
    assert "x-envoy-" not in text
    names = {
        p["name"] for item in doc["paths"].values() for op in item.values() for p in op.get("parameters", ())
    }
    assert {"x-request-id", "Idempotency-Key", "x-floodgate-deadline-ms"} <= names


def test_the_gateways_own_replies_are_documented(doc) -> None:
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            responses = operation["responses"]
            if not path.startswith("/v1/"):
                continue
            assert {"401", "413", "429", "503", "504"} <= set(responses), (method, path)
            assert "unauthenticated" in responses["401"]["description"]
            assert "missing_tenant" not in responses["401"]["description"]  # the gateway always sets it
            assert "www-authenticate" in responses["401"]["headers"]
            assert "rate_limited" in responses["429"]["description"]
            assert (
                "Retry-After" in responses["429"]["headers"] and "Retry-After" in responses["503"]["headers"]
            )
    submit = doc["paths"]["/v1/omnirag/jobs"]["post"]["responses"]
    assert "queue_quota_exceeded" in submit["429"]["description"]  # the service's 429 too
    assert (
        "payload_too_large" in submit["413"]["description"]
        and "text_too_large" in submit["413"]["description"]
    )


def test_every_local_reply_code_of_the_config_is_in_the_table() -> None:
    committed = yaml.safe_load(ENVOY_CONFIG.read_text())
    hcm = committed["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    codes = {
        mapper["body_format_override"]["json_format"]["error"]["code"]
        for mapper in hcm["local_reply_config"]["mappers"]
    }
    documented = {code for spec in GATEWAY_ERRORS.values() for code in spec.codes}
    assert codes - {"%RESPONSE_CODE_DETAILS%"} == documented


def test_the_rendered_config_serves_the_document(tmp_path: Path) -> None:
    settings = load_cluster_settings({"FLOODGATE_DATA_DIR": str(tmp_path)})
    rendered = yaml.safe_load(write_envoy_config(settings).read_text())
    hcm = rendered["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    [route] = [r for r in hcm["route_config"]["virtual_hosts"][0]["routes"] if r.get("name") == OPENAPI_ROUTE]
    served = json.loads(route["direct_response"]["body"]["inline_string"])
    assert served == build_gateway_openapi(render_envoy_config(settings), service_documents(settings))
    # (tests/cluster/test_envoy.py runs `envoy --mode validate` on a config rendered the same way)


def test_the_budget_headers_are_documented_where_the_route_asks_the_budgets(doc) -> None:
    budgeted = doc["paths"]["/v1/deal-brain/answers"]["post"]
    for status in ("200", "429"):
        assert "x-ratelimit-remaining-tokens" in budgeted["responses"][status]["headers"]
        assert "x-ratelimit-remaining-cost" in budgeted["responses"][status]["headers"]
    plain = doc["paths"]["/v1/omnirag/jobs"]["post"]
    assert not any("tokens" in name for r in plain["responses"].values() for name in r.get("headers", {}))
    usage = doc["paths"]["/v1/usage"]["get"]
    assert usage["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Usage"
    }

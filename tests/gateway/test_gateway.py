"""The gateway's behaviour, end to end: real Envoy (the committed config on free ports), the real
rate-limit service, and stand-in upstreams (harness/upstream.py) that echo what they got.

What is checked here is Envoy's work: keys -> tenants, limits, size limits, deadlines, JSON error
replies. The stand-ins are honest for that: Envoy cannot tell them from the services.
"""

from __future__ import annotations

import math
import time

import httpx
import pytest

from harness.envoy import route, start_gateway
from harness.services import start_ratelimit, start_upstream

ACME = {"x-api-key": "key-acme-1"}
GLOBEX = {"x-api-key": "key-globex-1"}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory, realtime):
    log_dir = tmp_path_factory.mktemp("gateway")
    with (
        start_ratelimit(log_dir) as rls,
        start_upstream(log_dir, name="online") as online,
        start_upstream(log_dir, name="ingest") as ingest,
        start_gateway(
            log_dir,
            endpoints={
                "online": [online.ports["http"]],
                "ingest_api": [ingest.ports["http"]],
                "ratelimit": [rls.ports["grpc"]],
            },
        ) as gw,
    ):
        yield gw


@pytest.fixture
def client(gateway):
    with httpx.Client(base_url=gateway.url, timeout=15) as c:
        yield c


def assert_json_error(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["error"]["code"] == code, body
    assert set(body["error"]) == {"code", "message", "details"}
    return body


# -- identity ------------------------------------------------------------------------------------


def test_missing_and_unknown_keys_get_401_json(client):
    for headers in (
        {},
        {"x-api-key": "not-a-key"},
        {"authorization": "Bearer not-a-key"},
        {"authorization": "Basic a2V5LWFjbWUtMTo="},
    ):
        response = client.post("/v1/deal-brain/answers", json={"q": "x"}, headers=headers)
        assert_json_error(response, 401, "unauthenticated")
        assert "x-api-key" in response.json()["error"]["message"]
    # unknown /v1 paths need a key too: no probing for routes without one
    assert_json_error(client.get("/v1/no-such-thing"), 401, "unauthenticated")
    assert_json_error(client.get("/v1/no-such-thing", headers=ACME), 404, "not_found")


def test_key_maps_to_tenant_and_client_tenant_header_is_overwritten(client):
    for headers, tenant in (
        (ACME, "acme"),
        ({"x-api-key": "key-acme-2"}, "acme"),
        ({"authorization": "Bearer key-globex-1"}, "globex"),
    ):
        echoed = client.post(
            "/v1/deal-brain/answers", json={}, headers={**headers, "x-floodgate-tenant": "someone-else"}
        ).json()
        assert echoed["headers"]["x-floodgate-tenant"] == tenant
        # the key never reaches a service
        assert "x-api-key" not in echoed["headers"]
        assert "authorization" not in echoed["headers"]
        assert echoed["headers"]["x-request-id"]


def test_unauthenticated_routes_still_drop_a_client_tenant_header(client):
    echoed = client.get("/healthz/online", headers={"x-floodgate-tenant": "acme"}).json()
    assert echoed["path"] == "/healthz"
    assert "x-floodgate-tenant" not in echoed["headers"]
    assert client.get("/healthz/gateway").json() == {"status": "ok", "service": "gateway"}


def test_the_api_contract_is_published_without_a_key(client):
    response = client.get("/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    # the committed placeholder: cluster/envoy.py writes the document into it when it renders
    # (tests/cluster/test_gateway_openapi.py; the real one is fuzzed in test_gateway_openapi.py)
    assert response.json()["openapi"] == "3.1.0"
    assert client.head("/openapi.json").status_code == 200


def test_the_gateways_own_paths_answer_other_methods_405_with_allow(client):
    for method, path in (("POST", "/openapi.json"), ("DELETE", "/healthz/gateway"), ("PUT", "/openapi.json")):
        response = client.request(method, path, headers=ACME)
        body = assert_json_error(response, 405, "method_not_allowed")
        assert response.headers["allow"] == "GET, HEAD"
        assert body["error"]["details"] == {"allowed": ["GET", "HEAD"]}


def test_every_method_on_a_v1_path_reaches_the_service(client):
    # Envoy routes by path: a method the service does not serve is the service's to refuse (405 with
    # Allow, from the chassis), never the gateway's 404
    for method, path, upstream in (
        ("DELETE", "/v1/omnirag/jobs", "ingest"),
        ("PUT", "/v1/omnirag/jobs/7/cancel", "ingest"),
        ("GET", "/v1/deal-brain/answers", "online"),
        ("PATCH", "/v1/nexus-assess/assessments", "online"),
    ):
        echoed = client.request(method, path, headers=GLOBEX).json()
        assert (echoed["name"], echoed["method"]) == (upstream, method)


# -- routing, deadlines, sizes ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "upstream", "deadline_ms"),
    [
        ("POST", "/v1/deal-brain/answers", "online", "8000"),
        ("POST", "/v1/shadow-hunter/hunts", "online", "10000"),
        ("POST", "/v1/nexus-assess/assessments", "online", "10000"),
        ("POST", "/v1/omnirag/jobs", "ingest", "2000"),
        ("GET", "/v1/omnirag/jobs/0b7c", "ingest", "2000"),
    ],
)
def test_routes_reach_their_service_with_the_deadline(client, method, path, upstream, deadline_ms):
    echoed = client.request(method, path, headers=GLOBEX, json={} if method == "POST" else None).json()
    assert echoed["name"] == upstream
    assert echoed["headers"]["x-envoy-expected-rq-timeout-ms"] == deadline_ms


def test_slow_service_gets_504_json_at_the_route_deadline(client):
    # omnirag reads have a 2 s deadline; the stand-in sleeps 2.5 s
    response = client.get("/v1/omnirag/jobs/slow", headers={**GLOBEX, "x-test-sleep-ms": "2500"})
    body = assert_json_error(response, 504, "deadline_exceeded")
    assert body["error"]["details"]["deadline_ms"] == "2000"


def test_bodies_over_the_route_limit_get_413(client):
    assert client.post("/v1/deal-brain/answers", content=b"x" * 65536, headers=GLOBEX).status_code == 200
    assert_json_error(
        client.post("/v1/deal-brain/answers", content=b"x" * 65537, headers=GLOBEX), 413, "payload_too_large"
    )
    # submissions carry documents: 5 MiB
    assert client.post("/v1/omnirag/jobs", content=b"x" * 1_000_000, headers=GLOBEX).status_code == 200
    assert_json_error(
        client.post("/v1/omnirag/jobs", content=b"x" * (5 * 1024 * 1024 + 1), headers=GLOBEX),
        413,
        "payload_too_large",
    )


def test_oversized_headers_get_431_json(client):
    response = client.get("/v1/omnirag/jobs/1", headers={**GLOBEX, "x-big": "y" * 40_000})
    assert_json_error(response, 431, "http1.headers_too_large")


def test_services_own_errors_pass_through_untouched(client):
    response = client.post("/v1/deal-brain/answers", json={}, headers={**GLOBEX, "x-test-status": "503"})
    assert response.status_code == 503
    assert response.json()["name"] == "online"  # the service's body, not a gateway reply


# -- rate limits -----------------------------------------------------------------------------------


def test_429_carries_retry_after_ratelimit_headers_and_json(client):
    # omnirag submissions: 5/s per tenant; 12 quick submissions cannot all pass
    responses = [client.post("/v1/omnirag/jobs", json={}, headers=ACME) for _ in range(12)]
    limited = [r for r in responses if r.status_code == 429]
    assert limited, [r.status_code for r in responses]
    body = assert_json_error(limited[0], 429, "rate_limited")
    assert body["error"]["details"]["limit"] == "request_rate_limited"
    assert int(limited[0].headers["retry-after"]) >= 1
    assert limited[0].headers["x-ratelimit-limit"].startswith("5, 5;w=1")
    assert limited[0].headers["x-ratelimit-remaining"] == "0"
    assert "x-ratelimit-reset" in limited[0].headers
    ok = next(r for r in responses if r.status_code == 200)
    assert int(ok.headers["x-ratelimit-remaining"]) < 5


@pytest.mark.realtime
def test_local_token_bucket_answers_429_json_with_retry_after(tmp_path):
    """The per-route bucket of one Envoy, for all tenants together. The committed buckets are far above
    what a test can send quickly, so this run shrinks omnirag_read's bucket to 3 tokens (the only change)."""

    def shrink(config):
        bucket = route(config, "omnirag_read")["typed_per_filter_config"][
            "envoy.filters.http.local_ratelimit"
        ]
        bucket["token_bucket"] = {"max_tokens": 3, "tokens_per_fill": 3, "fill_interval": "60s"}

    with (
        start_upstream(tmp_path, name="ingest") as ingest,
        start_gateway(tmp_path, endpoints={"ingest_api": [ingest.ports["http"]]}, mutate=shrink) as gw,
        httpx.Client(base_url=gw.url) as c,
    ):
        # two tenants share the bucket; the rate-limit service is absent here (requests pass it)
        statuses = [c.get("/v1/omnirag/jobs/1", headers=h).status_code for h in (ACME, GLOBEX) * 3]
        assert statuses == [200, 200, 200, 429, 429, 429]
        limited = c.get("/v1/omnirag/jobs/1", headers=ACME)
        body = assert_json_error(limited, 429, "rate_limited")
        assert body["error"]["details"]["limit"] == "local_rate_limited"
        assert limited.headers["retry-after"] == "1"
        assert gw.stat("omnirag_read.http_local_rate_limit.rate_limited") == 4
        # other routes have their own buckets
        assert c.post("/v1/omnirag/jobs", json={}, headers=ACME).status_code == 200


@pytest.mark.realtime
def test_retry_after_comes_from_the_window_reset(tmp_path):
    """With a minute window, Retry-After is the time to the window's end (from the rate-limit
    service), not the gateway's fallback of 1 s."""
    config = tmp_path / "ratelimit.yaml"
    config.write_text(
        "domain: floodgate\ndescriptors:\n  - key: tenant\n    descriptors:\n      - key: route\n"
        "        value: omnirag_submit\n        rate_limit: {unit: minute, requests_per_unit: 1}\n"
    )
    with (
        start_ratelimit(tmp_path, config=config) as rls,
        start_upstream(tmp_path, name="ingest") as ingest,
        start_gateway(
            tmp_path, endpoints={"ingest_api": [ingest.ports["http"]], "ratelimit": [rls.ports["grpc"]]}
        ) as gw,
        httpx.Client(base_url=gw.url) as c,
    ):
        assert c.post("/v1/omnirag/jobs", json={}, headers=ACME).status_code == 200
        limited = c.post("/v1/omnirag/jobs", json={}, headers=ACME)
        expected = math.ceil(60 - time.time() % 60)
        assert limited.status_code == 429
        assert limited.headers.get_list("retry-after") == [limited.headers["retry-after"]]  # one value
        assert abs(int(limited.headers["retry-after"]) - expected) <= 1

"""``GET /v1/usage`` on the rate-limit service's HTTP side, in process: the tenant comes from the
gateway's header only, and a counter store that cannot be read is a 503 with ``Retry-After``."""

from __future__ import annotations

import contextlib

import httpx
import pytest
from prometheus_client import CollectorRegistry

from harness.ports import free_port
from services.ratelimit import CounterStoreError, build_openapi
from services.ratelimit._http import start_probe_server

pytestmark = pytest.mark.realtime  # a real socket and the server's thread


@contextlib.contextmanager
def serving(usage):
    port = free_port()
    server = start_probe_server(
        "127.0.0.1",
        port,
        registry=CollectorRegistry(),
        ready=lambda: None,
        usage=usage,
        openapi=build_openapi(),
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()


def report(tenant: str) -> dict:
    if tenant == "broken":
        raise CounterStoreError("redis: ConnectionError: refused")
    return {"tenant": tenant, "windows": {}}


def test_the_tenant_is_the_gateways_header_and_nothing_else():
    with serving(report) as url:
        answer = httpx.get(
            f"{url}/v1/usage", params={"tenant": "globex"}, headers={"x-floodgate-tenant": "acme"}
        )
        assert answer.status_code == 200
        assert answer.json() == {"tenant": "acme", "windows": {}}
        missing = httpx.get(f"{url}/v1/usage", params={"tenant": "acme"})
        assert missing.status_code == 401 and missing.json()["error"]["code"] == "missing_tenant"
        invalid = httpx.get(f"{url}/v1/usage", headers={"x-floodgate-tenant": "no spaces/allowed"})
        assert invalid.status_code == 400 and invalid.json()["error"]["code"] == "invalid_tenant"


def test_unreadable_counters_are_a_503_with_retry_after():
    with serving(report) as url:
        answer = httpx.get(f"{url}/v1/usage", headers={"x-floodgate-tenant": "broken"})
        assert answer.status_code == 503
        assert answer.headers["retry-after"] == "1"
        assert answer.json()["error"]["code"] == "unavailable"


def test_its_document_describes_the_usage_path():
    with serving(report) as url:
        document = httpx.get(f"{url}/openapi.json").json()
        operation = document["paths"]["/v1/usage"]["get"]
        assert set(operation["responses"]) == {"200", "400", "401", "503"}
        assert operation["parameters"] == [{"$ref": "#/components/parameters/Tenant"}]

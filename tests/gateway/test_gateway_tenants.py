"""Tenant isolation through the gateway, with the real ingest API on a real PostgreSQL.

The gateway's part is that the tenant comes from the key and nothing else; the service's part is
that every query is scoped by that tenant. Together: tenant A cannot read, list or cancel B's job,
whatever A sends in ``x-floodgate-tenant``.
"""

from __future__ import annotations

import httpx
import pytest

from harness.envoy import start_gateway
from harness.services import start_ingest_api

ACME = {"x-api-key": "key-acme-1"}
GLOBEX = {"x-api-key": "key-globex-1"}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory, database_url, realtime):
    log_dir = tmp_path_factory.mktemp("tenants")
    api = start_ingest_api(database_url, log_dir)
    try:
        api.wait_http("/healthz", within=30)
        with start_gateway(log_dir, endpoints={"ingest_api": [api.port]}) as gw:
            yield gw
    finally:
        api.stop()


def test_a_tenant_cannot_see_or_touch_another_tenants_job(gateway):
    with httpx.Client(base_url=gateway.url, timeout=10) as client:
        submitted = client.post(
            "/v1/omnirag/jobs", headers=ACME, json={"doc_id": "acme-plan", "text": "acme's confidential plan"}
        )
        assert submitted.status_code in (200, 202), submitted.text
        job_id = submitted.json()["job_id"]

        assert client.get(f"/v1/omnirag/jobs/{job_id}", headers=ACME).status_code == 200
        # globex: the job does not exist for it, even when it claims to be acme
        for headers in (GLOBEX, {**GLOBEX, "x-floodgate-tenant": "acme"}):
            assert client.get(f"/v1/omnirag/jobs/{job_id}", headers=headers).status_code == 404
            listed = client.get("/v1/omnirag/jobs", headers=headers)
            assert listed.status_code == 200
            assert job_id not in {job["job_id"] for job in listed.json()["jobs"]}
            assert client.post(f"/v1/omnirag/jobs/{job_id}/cancel", headers=headers).status_code == 404
        # and acme still sees its job, not cancelled by anyone
        assert client.get(f"/v1/omnirag/jobs/{job_id}", headers=ACME).json()["state"] != "cancelled"


def test_without_a_key_nothing_reaches_the_service(gateway):
    with httpx.Client(base_url=gateway.url, timeout=10) as client:
        before = gateway.stat("cluster.ingest_api.upstream_rq_total")
        response = client.post(
            "/v1/omnirag/jobs", json={"doc_id": "x", "text": "y"}, headers={"x-floodgate-tenant": "acme"}
        )
        assert response.status_code == 401
        assert gateway.stat("cluster.ingest_api.upstream_rq_total") == before

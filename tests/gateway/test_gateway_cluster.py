"""The gateway as `make up` runs it: the whole local cluster (embedded PostgreSQL, simulator, online
service, ingest API and worker, the rate-limit service, Envoy on the rendered config with the sample
keys), on free ports, driven only through the gateway.

Tenant isolation end to end: globex ingests a document; acme can neither read globex's job nor find
globex's passages through dealBrain's search, while globex finds them.
"""

from __future__ import annotations

import time

import httpx
import pytest

from ._cluster import ACME, GLOBEX, run_cluster

# the cluster fixture waits up to 120 s for the cluster (its set-up counts in the first test's time)
pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, realtime):
    with run_cluster(tmp_path_factory.mktemp("cluster")) as running:
        yield running


def test_rendered_config_is_private_and_has_the_keys(cluster):
    rendered = cluster["data"] / "envoy.yaml"
    assert rendered.stat().st_mode & 0o777 == 0o600
    assert "fg_dev_acme_8c1f2a7d4e6b" in rendered.read_text()


def test_keys_limits_and_isolation_through_the_gateway(cluster):
    with httpx.Client(base_url=cluster["gateway"], timeout=15) as client:
        assert client.post("/v1/omnirag/jobs", json={"doc_id": "d", "text": "t"}).status_code == 401

        text = "The zanzibar quokka protocol ships pelican widgets to the moon every tuesday. " * 4
        submitted = client.post(
            "/v1/omnirag/jobs", json={"doc_id": "globex-secret", "text": text}, headers=GLOBEX
        )
        assert submitted.status_code == 202, submitted.text
        job = submitted.json()["job_id"]
        assert client.get(f"/v1/omnirag/jobs/{job}", headers=ACME).status_code == 404
        deadline = time.monotonic() + 30
        while (state := client.get(f"/v1/omnirag/jobs/{job}", headers=GLOBEX).json()["state"]) != "succeeded":
            assert state in ("queued", "running"), state
            assert time.monotonic() < deadline, "the ingest job did not finish"
            time.sleep(0.2)

        question = {"question": "what does the zanzibar quokka protocol ship?"}
        for headers, sees_it in (
            (ACME, False),
            ({**ACME, "x-floodgate-tenant": "globex"}, False),
            (GLOBEX, True),
        ):
            answer = client.post("/v1/deal-brain/answers", json=question, headers=headers)
            assert answer.status_code == 200, answer.text
            docs = {p.get("doc_id") for p in answer.json()["passages"]}
            assert ("globex-secret" in docs) is sees_it, (headers, docs)

        # the global limit through the real rate-limit service: 5 submissions per second per tenant
        statuses = [
            client.post("/v1/omnirag/jobs", json={"doc_id": f"d{i}", "text": "x"}, headers=ACME).status_code
            for i in range(12)
        ]
        assert 429 in statuses and 202 in statuses, statuses


def test_token_budgets_and_usage_through_the_cluster(cluster):
    """The real online service reports what each answer used, the gateway counts it against the
    tenant's budget (the committed one: acme's own table) and GET /v1/usage shows it, per tenant."""
    with httpx.Client(base_url=cluster["gateway"], timeout=15) as client:

        def usage(key: dict) -> dict:
            response = client.get("/v1/usage", headers=key)
            assert response.status_code == 200, response.text
            return response.json()["windows"]["tokens_per_day"]

        before, globex_before = usage(ACME), usage(GLOBEX)
        answer = client.post("/v1/deal-brain/answers", json={"question": "who acquired whom?"}, headers=ACME)
        assert answer.status_code == 200, answer.text
        assert not any(name.startswith("x-floodgate-usage") for name in answer.headers)  # the gateway's only
        assert int(answer.headers["x-ratelimit-remaining-tokens"]) > 0
        deadline = time.monotonic() + 10
        while (after := usage(ACME))["used"] == before["used"]:  # reported once the response is complete
            assert time.monotonic() < deadline, "the answer's tokens were never counted"
            time.sleep(0.1)
        spent = after["used"] - before["used"]
        assert spent > 0 and after["endpoints"]["deal_brain"] - before["endpoints"]["deal_brain"] == spent
        assert usage(GLOBEX)["used"] == globex_before["used"]  # acme's tokens are acme's alone

"""The gateway as `make up` runs it: the whole local cluster (embedded PostgreSQL, simulator, online
service, ingest API and worker, the rate-limit service, Envoy on the rendered config with the sample
keys), on free ports, driven only through the gateway.

Tenant isolation end to end: globex ingests a document; acme can neither read globex's job nor find
globex's passages through dealBrain's search, while globex finds them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from tests.conftest import REPO_ROOT, free_port

ACME = {"x-api-key": "fg_dev_acme_8c1f2a7d4e6b"}  # config/api_keys.sample.yaml
GLOBEX = {"x-api-key": "fg_dev_globex_5b9e0d3c7a21"}

# the cluster fixture waits up to 120 s for the cluster (its set-up counts in the first test's time)
pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, realtime):
    data = tmp_path_factory.mktemp("cluster") / "data"
    names = [
        "GATEWAY",
        "ENVOY_ADMIN",
        "ONLINE",
        "INGEST_API",
        "UPSTREAMS",
        "RATELIMIT",
        "RATELIMIT_HTTP",
        "PG",
    ]
    ports = {}
    while len(set(ports.values())) < len(names):
        ports = {name: free_port() for name in names}
    worker = free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("FLOODGATE_") and k not in ("DATABASE_URL", "REDIS_URL")
    }
    env.update({f"FLOODGATE_{name}_PORT": str(port) for name, port in ports.items()})
    env.update(
        {
            "FLOODGATE_INGEST_WORKER_PORT": str(worker),
            "FLOODGATE_INGEST_WORKERS": "1",
            "FLOODGATE_DATA_DIR": str(data),
            "FLOODGATE_READY_TIMEOUT": "60",
            # the sample keys, whatever config/api_keys.yaml this checkout has
            "FLOODGATE_API_KEYS_FILE": str(REPO_ROOT / "config" / "api_keys.sample.yaml"),
            "NO_COLOR": "1",
        }
    )
    log = data.parent / "cluster.out"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cluster", "up"],
            env=env,
            cwd=REPO_ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the cluster exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
            try:
                if json.loads((data / "cluster.json").read_text()).get("status") == "ready":
                    break
            except (FileNotFoundError, json.JSONDecodeError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the cluster was not ready:\n{log.read_text()[-4000:]}")
            time.sleep(0.1)
        yield {"gateway": f"http://127.0.0.1:{ports['GATEWAY']}", "data": data}
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


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

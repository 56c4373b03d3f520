"""``/openapi.json`` of the ingest API: a valid OpenAPI 3.1 document that lists exactly the routes the
app serves, and that the API's real answers (successes and errors) conform to."""

from __future__ import annotations

import functools
from typing import Any

from jsonschema import Draft202012Validator
from openapi_spec_validator import validate
from prometheus_client import CollectorRegistry

from services.ingest import IngestApiSettings
from services.ingest import _queue as q
from services.ingest._bootstrap import build_api_app
from services.ingest._openapi import ERROR_CONTRACT, build_openapi

from ._helpers import budget_with_tenants, claim, open_db

T1 = {"x-floodgate-tenant": "acme"}
JOBS = "/v1/omnirag/jobs"


def _routed(app: Any) -> set[tuple[str, str]]:
    """(path in OpenAPI form, method) of every route the app serves (HEAD/OPTIONS are implied)."""
    return {
        (rule.rule.replace("<", "{").replace(">", "}"), method.lower())
        for rule in app.url_map.iter_rules()
        if rule.endpoint != "static"
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }


def _documented(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {(path, method) for path, item in doc["paths"].items() for method in item}


def _checker(doc: dict[str, Any], path: str, method: str):
    """A function that asserts a response of the operation conforms to the document: its status is
    documented, and its JSON body matches that status's schema."""
    operation = doc["paths"][path][method]

    async def check(response: Any) -> dict[str, Any]:
        spec = operation["responses"].get(str(response.status_code))
        assert spec is not None, f"{method} {path}: {response.status_code} is not documented"
        if "$ref" in spec:
            spec = doc["components"]["responses"][spec["$ref"].rsplit("/", 1)[1]]
        assert response.content_type == "application/json"
        schema = spec["content"]["application/json"]["schema"]
        body = await response.get_json()
        Draft202012Validator({**doc, **schema}).validate(body)
        return body

    return check


def test_document_is_valid_openapi_31() -> None:
    doc = build_openapi(IngestApiSettings(max_text_bytes=1234))
    validate(doc)
    assert doc["openapi"] == "3.1.0"
    assert "`text` at most 1234 bytes" in doc["paths"][JOBS]["post"]["description"]
    operations = {op["operationId"] for item in doc["paths"].values() for op in item.values()}
    assert {"submitJob", "getJob", "listJobs", "cancelJob", "requeueJob"} <= operations
    submit = doc["paths"][JOBS]["post"]["responses"]
    assert set(submit) == {"200", "202", "400", "401", "413", "422", "429", "500", "503", "504"}
    assert ERROR_CONTRACT[429].retry_after and ERROR_CONTRACT[503].retry_after
    assert "queue_quota_exceeded" in doc["components"]["responses"]["Overloaded"]["description"]
    assert "Retry-After" in doc["components"]["responses"]["Overloaded"]["headers"]
    for path in (f"{JOBS}/{{job_id}}/cancel", f"{JOBS}/{{job_id}}/requeue"):
        assert {"404", "409"} <= set(doc["paths"][path]["post"]["responses"])


async def test_every_route_is_documented_and_every_documented_one_is_routed(fresh_database_url: str) -> None:
    async with open_db(fresh_database_url) as db:
        app = build_api_app(IngestApiSettings(database_url=fresh_database_url), db, CollectorRegistry())
        doc = await (await app.test_client().get("/openapi.json")).get_json()
    assert _routed(app) == _documented(doc)


async def test_real_answers_conform_to_the_document(fresh_database_url: str) -> None:
    settings = IngestApiSettings(database_url=fresh_database_url, max_text_bytes=50)
    budget = budget_with_tenants({"default": {"queued_jobs": 3}})
    async with open_db(fresh_database_url) as db:
        app = build_api_app(settings, db, CollectorRegistry(), budget=budget)
        client = app.test_client()
        doc = await (await client.get("/openapi.json")).get_json()
        submit = _checker(doc, JOBS, "post")
        listing = _checker(doc, JOBS, "get")
        status = _checker(doc, f"{JOBS}/{{job_id}}", "get")
        cancel = _checker(doc, f"{JOBS}/{{job_id}}/cancel", "post")
        requeue = _checker(doc, f"{JOBS}/{{job_id}}/requeue", "post")

        first = await submit(await client.post(JOBS, json={"doc_id": "a", "text": "one"}, headers=T1))
        await submit(await client.post(JOBS, json={"doc_id": "a", "text": "one"}, headers=T1))  # 200
        await submit(await client.post(JOBS, json={"doc_id": "b", "url": "https://a.test/b"}, headers=T1))
        failed_id = (
            await submit(await client.post(JOBS, json={"doc_id": "c", "text": "three"}, headers=T1))
        )["job_id"]
        quota = await client.post(JOBS, json={"doc_id": "d", "text": "four"}, headers=T1)
        assert quota.status_code == 429 and "Retry-After" in quota.headers
        assert (await submit(quota))["error"]["code"] == "queue_quota_exceeded"
        for body, headers, expected in (
            ({"doc_id": "e"}, T1, 422),
            ({"doc_id": "e", "text": "x" * 51}, T1, 413),
            ({"doc_id": "e", "text": "x"}, {}, 401),
            ({"doc_id": "e", "text": "x"}, {**T1, "Idempotency-Key": "k" * 256}, 400),
        ):
            response = await client.post(JOBS, json=body, headers=headers)
            assert response.status_code == expected
            await submit(response)

        page = await listing(await client.get(f"{JOBS}?limit=2", headers=T1))
        assert len(page["jobs"]) == 2 and page["next_cursor"]
        await listing(await client.get(f"{JOBS}?cursor={page['next_cursor']}&state=queued", headers=T1))
        for query in ("limit=0", "state=nope", "cursor=garbage"):
            response = await client.get(f"{JOBS}?{query}", headers=T1)
            assert response.status_code == 400
            await listing(response)

        job = await status(await client.get(f"{JOBS}/{first['job_id']}", headers=T1))
        assert job["state"] == "queued"
        for job_id, expected in (("999999", 404), ("abc", 400)):
            response = await client.get(f"{JOBS}/{job_id}", headers=T1)
            assert response.status_code == expected
            await status(response)

        # all three run; one fails: its status, a refused cancel, a requeue; a running one is cancelled
        claimed = {c.job_id: c for c in await claim(db, limit=10)}
        await db.run(functools.partial(q.fail_job, error="the document is empty"), claimed[failed_id].fence)
        failed = await status(await client.get(f"{JOBS}/{failed_id}", headers=T1))
        assert failed["state"] == "failed" and failed["last_error"]["message"]
        refused = await client.post(f"{JOBS}/{failed_id}/cancel", headers=T1)
        assert refused.status_code == 409
        await cancel(refused)
        response = await client.post(f"{JOBS}/{failed_id}/requeue", headers=T1)
        assert response.status_code == 202
        await requeue(response)
        response = await client.post(f"{JOBS}/{failed_id}/requeue", headers=T1)
        assert response.status_code == 409
        await requeue(response)
        response = await client.post(f"{JOBS}/{first['job_id']}/cancel", headers=T1)
        assert response.status_code == 202
        await cancel(response)


async def test_a_method_a_path_does_not_serve_is_405_with_allow(fresh_database_url: str) -> None:
    async with open_db(fresh_database_url) as db:
        client = build_api_app(
            IngestApiSettings(database_url=fresh_database_url), db, CollectorRegistry()
        ).test_client()
        for method, path, allowed in (
            ("DELETE", JOBS, "GET, HEAD, OPTIONS, POST"),
            ("GET", f"{JOBS}/1/cancel", "OPTIONS, POST"),
            ("PUT", f"{JOBS}/1", "GET, HEAD, OPTIONS"),
        ):
            response = await client.open(path, method=method, headers=T1)
            assert response.status_code == 405, (method, path)
            assert response.headers["Allow"] == allowed
            assert (await response.get_json())["error"]["code"] == "method_not_allowed"

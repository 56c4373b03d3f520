"""Bad input gets the documented status and names what is wrong — before any downstream is called."""

from __future__ import annotations

import json

import pytest

from .conftest import MemoryChunks, online_harness

DEAL = "/v1/deal-brain/answers"
HUNT = "/v1/shadow-hunter/hunts"
ASSESS = "/v1/nexus-assess/assessments"


def rubric(n: int) -> list[dict]:
    return [{"id": f"c{i}", "description": f"criterion {i}"} for i in range(n)]


# (name, path, body, status, code, field named in details or None)
CASES = [
    ("malformed json", DEAL, b'{"question": ', 400, "invalid_json", None),
    ("not an object", DEAL, b'["question"]', 400, "invalid_json", None),
    ("missing field", DEAL, {}, 422, "invalid_request", "question"),
    ("empty question", DEAL, {"question": "   "}, 422, "invalid_request", "question"),
    ("oversize question", DEAL, {"question": "x" * 2001}, 422, "invalid_request", "question"),
    ("wrong type", DEAL, {"question": "q", "top_k": "5"}, 422, "invalid_request", "top_k"),
    ("unknown field", DEAL, {"question": "q", "tenant": "other"}, 422, "invalid_request", "tenant"),
    ("top_k over max_items", DEAL, {"question": "q", "top_k": 21}, 422, "invalid_request", "top_k"),
    (
        "too many queries",
        HUNT,
        {"subject": "s", "queries": [f"q{i}" for i in range(9)]},
        422,
        "invalid_request",
        "queries",
    ),
    ("empty query", HUNT, {"subject": "s", "queries": ["ok", ""]}, 422, "invalid_request", "queries.1"),
    (
        "query_count over max_items",
        HUNT,
        {"subject": "s", "query_count": 9},
        422,
        "invalid_request",
        "query_count",
    ),
    (
        "extract_top over max_items",
        HUNT,
        {"subject": "s", "extract_top": 9},
        422,
        "invalid_request",
        "extract_top",
    ),
    ("no queries list", HUNT, {"subject": "s", "queries": []}, 422, "invalid_request", "queries"),
    ("too many criteria", ASSESS, {"subject": "s", "rubric": rubric(11)}, 422, "invalid_request", "rubric"),
    ("empty rubric", ASSESS, {"subject": "s", "rubric": []}, 422, "invalid_request", "rubric"),
    (
        "duplicate criterion",
        ASSESS,
        {"subject": "s", "rubric": rubric(1) * 2},
        422,
        "invalid_request",
        "rubric",
    ),
    (
        "negative weight",
        ASSESS,
        {"subject": "s", "rubric": [{"id": "a", "description": "d", "weight": -1}]},
        422,
        "invalid_request",
        "rubric.0.weight",
    ),
    (
        "bad criterion id",
        ASSESS,
        {"subject": "s", "rubric": [{"id": "a b", "description": "d"}]},
        422,
        "invalid_request",
        "rubric.0.id",
    ),
    (
        "oversize evidence",
        ASSESS,
        {"subject": "s", "evidence": "e" * 20_001, "rubric": rubric(1)},
        422,
        "invalid_request",
        "evidence",
    ),
]


@pytest.mark.parametrize(
    ("name", "path", "body", "status", "code", "field"), CASES, ids=[c[0] for c in CASES]
)
async def test_bad_input_is_rejected_with_the_field_named_and_nothing_downstream(
    name, path, body, status, code, field
) -> None:
    chunks = MemoryChunks()
    async with online_harness(chunks=chunks) as h:
        response = await h.post(path, body)
        assert response.status_code == status
        error = (await response.get_json())["error"]
        assert error["code"] == code
        if field is not None:
            assert field in [d["field"] for d in error["details"]]
            assert field.split(".")[0] in error["message"]
        assert response.headers["x-request-id"]
        stats = await h.stats()
        assert {api: s["requests"] for api, s in stats.items()} == dict.fromkeys(stats, 0)
        assert chunks.calls == 0


async def test_body_over_the_endpoint_limit_is_413_naming_the_limit() -> None:
    async with online_harness() as h:
        limit = h.budget.endpoint("nexus_assess").max_body_bytes
        body = json.dumps({"subject": "s", "rubric": rubric(1), "evidence": "x" * limit})
        response = await h.post(ASSESS, body)
        assert response.status_code == 413
        error = (await response.get_json())["error"]
        assert error["code"] == "body_too_large"
        assert error["details"] == {"limit_bytes": limit}
        assert (await h.stats())["chat"]["requests"] == 0


@pytest.mark.parametrize(
    ("tenant", "status", "code"), [(None, 401, "missing_tenant"), ("bad tenant!", 400, "invalid_tenant")]
)
async def test_the_tenant_comes_from_the_gateway_header(tenant, status, code) -> None:
    async with online_harness() as h:
        response = await h.post(DEAL, {"question": "q"}, tenant=tenant)
        assert response.status_code == status
        assert (await response.get_json())["error"]["code"] == code
        assert (await h.stats())["embeddings"]["requests"] == 0


async def test_a_valid_request_at_the_limits_is_accepted(autojump_clock) -> None:
    async with online_harness() as h:
        max_items = h.budget.endpoint("nexus_assess").max_items
        response = await h.post(ASSESS, {"subject": "s", "rubric": rubric(max_items)})
        assert response.status_code == 200
        assert len((await response.get_json())["scores"]) == max_items

"""``/openapi.json`` is a valid OpenAPI 3.1 document that matches the routes and the error contract."""

from __future__ import annotations

import chassis
from openapi_spec_validator import validate

from services.online._models import DealBrainResponse

from .conftest import online_harness

ENDPOINT_PATHS = {"/v1/deal-brain/answers", "/v1/shadow-hunter/hunts", "/v1/nexus-assess/assessments"}


async def test_openapi_document_is_valid_and_lists_every_status() -> None:
    async with online_harness() as h:
        response = await h.client.get("/openapi.json")
        assert response.status_code == 200
        doc = await response.get_json()
    validate(doc)
    assert doc["openapi"] == "3.1.0"
    for path in ENDPOINT_PATHS:
        operation = doc["paths"][path]["post"]
        assert set(operation["responses"]) == {
            "200",
            "400",
            "401",
            "413",
            "422",
            "429",
            "500",
            "502",
            "503",
            "504",
        }
        assert "Server-Timing" in operation["responses"]["200"]["headers"]
        assert operation["parameters"][0] == {"$ref": "#/components/parameters/Tenant"}
    responses = doc["components"]["responses"]
    for name in ("Overloaded", "Unavailable"):
        assert "Retry-After" in responses[name]["headers"]
    assert "Retry-After" not in responses["ValidationFailed"]["headers"]
    schemas = doc["components"]["schemas"]
    assert set(schemas["DealBrainResponse"]["properties"]) == set(DealBrainResponse.model_fields)
    assert set(schemas["ErrorResponse"]["properties"]) == set(chassis.ErrorResponse.model_fields)
    assert set(schemas["ErrorBody"]["properties"]) == {"code", "message", "details"}


async def test_budget_limits_are_written_into_the_operations() -> None:
    async with online_harness() as h:
        doc = await (await h.client.get("/openapi.json")).get_json()
        policy = h.budget.endpoint("nexus_assess")
    description = doc["paths"]["/v1/nexus-assess/assessments"]["post"]["description"]
    assert f"at most {policy.max_items} items" in description
    assert f"deadline {policy.deadline:g}s" in description


async def test_every_routed_endpoint_is_documented_and_every_documented_one_is_routed() -> None:
    async with online_harness() as h:
        routed = {rule.rule for rule in h.app.url_map.iter_rules() if rule.endpoint != "static"}
        doc = await (await h.client.get("/openapi.json")).get_json()
    assert routed == set(doc["paths"])


async def test_a_method_an_endpoint_does_not_serve_is_405_with_allow() -> None:
    # past the front door (it admits POSTs only) to the chassis' 405, never a 404
    async with online_harness() as h:
        for path in ENDPOINT_PATHS:
            response = await h.client.get(path, headers={"x-floodgate-tenant": "acme"})
            assert response.status_code == 405
            assert response.headers["Allow"] == "OPTIONS, POST"
            assert (await response.get_json())["error"]["code"] == "method_not_allowed"
        response = await h.client.post("/openapi.json")
        assert response.status_code == 405 and response.headers["Allow"] == "GET, HEAD, OPTIONS"

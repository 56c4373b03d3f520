"""The chassis' edge contract: probes, request ids, JSON errors, body validation, settings."""

from __future__ import annotations

import chassis
import floodgate
import pytest
import trio
from chassis import ApiError, BaseServiceSettings, SettingsError, load_settings
from pydantic import BaseModel, Field


class Item(BaseModel):
    name: str = Field(min_length=1)
    count: int = Field(ge=1, le=10)


def make_app(**kwargs):
    app = chassis.create_app("test", max_body_bytes=200, **kwargs)

    @app.post("/items")
    async def items():
        tenant = chassis.require_tenant()
        item = await chassis.parse_body(Item)
        return {"tenant": tenant, "name": item.name}

    @app.get("/refuse")
    async def refuse():
        raise ApiError(409, "conflict", "already there", details={"id": 1}, headers={"Retry-After": "3"})

    @app.get("/boom")
    async def boom():
        raise RuntimeError("secret internals")

    @app.get("/overloaded")
    async def overloaded():
        raise floodgate.Overloaded("all 2 slots busy", dependency="llm", retry_after=1.2)

    async def fan_out(*errors: Exception) -> None:
        async def branch(error: Exception) -> None:
            raise error

        async with trio.open_nursery() as nursery:
            for error in errors:
                nursery.start_soon(branch, error)

    @app.get("/fan-out-overloaded")
    async def fan_out_overloaded():
        await fan_out(
            floodgate.Overloaded("busy", dependency="search", retry_after=0.2),
            floodgate.Overloaded("busy", dependency="search", retry_after=0.2),
        )

    @app.get("/fan-out-bug")
    async def fan_out_bug():
        await fan_out(floodgate.Overloaded("busy", dependency="search"), KeyError("secret internals"))

    return app


async def test_healthz_and_request_id_is_echoed() -> None:
    client = make_app().test_client()
    response = await client.get("/healthz", headers={"x-request-id": "abc123"})
    assert response.status_code == 200
    assert response.headers["x-request-id"] == "abc123"
    assert (await response.get_json())["status"] == "ok"


async def test_request_id_is_made_when_missing() -> None:
    response = await make_app().test_client().get("/healthz")
    assert len(response.headers["x-request-id"]) == 32


async def test_readyz_reports_failing_check() -> None:
    async def ok():
        return None

    async def down():
        raise ConnectionRefusedError("db down")

    client = make_app(readiness={"cache": ok, "db": down}).test_client()
    response = await client.get("/readyz")
    assert response.status_code == 503
    body = await response.get_json()
    assert body["error"]["code"] == "not_ready"
    assert body["error"]["details"]["checks"]["cache"] == "ok"
    assert "db down" in body["error"]["details"]["checks"]["db"]


async def test_metrics_in_prometheus_text() -> None:
    client = make_app().test_client()
    await client.get("/healthz")
    response = await client.get("/metrics")
    text = (await response.get_data()).decode()
    assert 'http_requests_total{method="GET",route="/healthz",status="200",status_class="2xx"} 1.0' in text


async def test_a_method_the_path_does_not_serve_is_405_with_allow() -> None:
    client = make_app().test_client()
    for method, path, allowed in (
        ("GET", "/items", ["OPTIONS", "POST"]),
        ("DELETE", "/items", ["OPTIONS", "POST"]),
        ("POST", "/healthz", ["GET", "HEAD", "OPTIONS"]),
        ("PUT", "/metrics", ["GET", "HEAD", "OPTIONS"]),
    ):
        response = await client.open(path, method=method)
        assert response.status_code == 405, (method, path)
        assert response.headers["Allow"] == ", ".join(allowed)
        assert response.content_type == "application/json"
        error = (await response.get_json())["error"]
        assert error["code"] == "method_not_allowed"
        assert error["details"] == {"allowed": allowed}
    # a path that does not exist at all is still a 404
    assert (await client.delete("/nowhere")).status_code == 404


async def test_api_error_is_json_with_headers() -> None:
    response = await make_app().test_client().get("/refuse")
    assert response.status_code == 409
    assert response.headers["Retry-After"] == "3"
    assert await response.get_json() == {
        "error": {"code": "conflict", "message": "already there", "details": {"id": 1}}
    }


async def test_unexpected_exception_is_500_without_internals() -> None:
    response = await make_app().test_client().get("/boom", headers={"x-request-id": "r-1"})
    assert response.status_code == 500
    body = await response.get_json()
    assert body["error"]["code"] == "internal_error"
    assert body["error"]["details"] == {"request_id": "r-1"}
    assert "secret" not in (await response.get_data()).decode()


async def test_toolkit_error_maps_to_its_status_with_retry_after() -> None:
    response = await make_app().test_client().get("/overloaded")
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "2"
    assert (await response.get_json())["error"] == {
        "code": "overloaded",
        "message": "llm: all 2 slots busy",
        "details": {"dependency": "llm", "reason": "all 2 slots busy", "retry_after": 1.2},
    }


async def test_a_nursery_of_toolkit_errors_maps_to_their_status() -> None:
    response = await make_app().test_client().get("/fan-out-overloaded")
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "1"
    assert (await response.get_json())["error"]["details"]["dependency"] == "search"


async def test_a_bug_next_to_a_toolkit_error_in_a_nursery_is_a_500() -> None:
    # Whichever branch trio reports first, the bug must not hide behind the 429.
    for _ in range(10):
        response = await make_app().test_client().get("/fan-out-bug")
        assert response.status_code == 500
        assert (await response.get_json())["error"]["code"] == "internal_error"
        assert "secret" not in (await response.get_data()).decode()


async def test_unknown_route_is_json_404() -> None:
    response = await make_app().test_client().get("/nope")
    assert response.status_code == 404
    assert (await response.get_json())["error"]["code"] == "not_found"


@pytest.mark.parametrize(
    ("body", "status", "code", "field"),
    [
        (b"{not json", 400, "invalid_json", None),
        (b"[1, 2]", 400, "invalid_json", None),
        (b'{"name": "", "count": 3}', 422, "invalid_request", "name"),
        (b'{"name": "x", "count": "many"}', 422, "invalid_request", "count"),
        (b'{"name": "x"}', 422, "invalid_request", "count"),
    ],
)
async def test_bad_bodies_name_the_problem(body, status, code, field) -> None:
    client = make_app().test_client()
    response = await client.post(
        "/items", data=body, headers={"x-floodgate-tenant": "t1", "content-type": "application/json"}
    )
    assert response.status_code == status
    error = (await response.get_json())["error"]
    assert error["code"] == code
    if field:
        assert [d["field"] for d in error["details"]] == [field]
        assert field in error["message"]


async def test_oversize_body_is_413() -> None:
    client = make_app().test_client()
    response = await client.post(
        "/items", data=b'{"name": "' + b"x" * 500 + b'"}', headers={"x-floodgate-tenant": "t1"}
    )
    assert response.status_code == 413
    assert (await response.get_json())["error"]["details"] == {"limit_bytes": 200}


async def test_missing_tenant_is_401() -> None:
    response = await make_app().test_client().post("/items", json={"name": "x", "count": 1})
    assert response.status_code == 401
    assert (await response.get_json())["error"]["code"] == "missing_tenant"


async def test_valid_request_passes() -> None:
    client = make_app().test_client()
    response = await client.post(
        "/items", json={"name": "x", "count": 1}, headers={"x-floodgate-tenant": "t1"}
    )
    assert response.status_code == 200
    assert await response.get_json() == {"tenant": "t1", "name": "x"}


def test_settings_error_names_the_variable() -> None:
    with pytest.raises(SettingsError, match=r"SVC_PORT: .*integer.*\(got 'eighty'\)"):
        load_settings(BaseServiceSettings, "SVC_", {"SVC_PORT": "eighty"})


def test_settings_defaults_and_overrides() -> None:
    settings = load_settings(BaseServiceSettings, "SVC_", {"SVC_PORT": "9000", "OTHER_PORT": "1"})
    assert settings.port == 9000
    assert settings.host == "127.0.0.1"

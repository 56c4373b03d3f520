"""Dependency.request over httpx (MockTransport), and Dependencies built from the budget."""

from __future__ import annotations

import floodgate
import httpx
import pytest
import trio
from prometheus_client import CollectorRegistry

from .conftest import budget_dict


def build(handler, *, registry=None, **overrides) -> floodgate.Dependencies:
    budget = floodgate.parse_budget(budget_dict(**overrides))
    return floodgate.Dependencies.from_budget(
        budget,
        service="svc",
        registry=registry,
        http_base_urls={"api": "http://api.test"},
        api_keys={"api": "sk-test"},
        transport=httpx.MockTransport(handler),
        rng=lambda: 1.0,
    )


async def test_request_retries_503_honouring_retry_after(autojump_clock):
    seen: list[tuple[float, httpx.Request]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((trio.current_time(), request))
        if len(seen) == 1:
            return httpx.Response(503, headers={"retry-after": "2"})
        return httpx.Response(200, json={"ok": True})

    registry = CollectorRegistry()
    async with build(handler, registry=registry) as deps:
        with floodgate.deadline_after(5.0):
            resp = await deps["api"].request(
                "POST", "/v1/embeddings", json={"input": "x"}, tenant="t1", idempotent=True
            )
    assert resp.json() == {"ok": True}
    assert [t for t, _ in seen] == pytest.approx([0.0, 2.2])  # Retry-After x (1 + jitter 0.1 x rng 1.0)
    request = seen[1][1]
    assert request.url == "http://api.test/v1/embeddings"
    assert request.headers["authorization"] == "Bearer sk-test"
    assert request.headers["x-floodgate-deadline-ms"] == "2800"  # 5 s deadline, sent at 2.2 s
    value = registry.get_sample_value
    assert value("floodgate_attempts_total", {"dependency": "api", "outcome": "503"}) == 1
    assert value("floodgate_attempts_total", {"dependency": "api", "outcome": "200"}) == 1
    assert value("floodgate_retries_total", {"dependency": "api", "reason": "503"}) == 1
    assert value("floodgate_downstream_latency_seconds_count", {"dependency": "api", "status": "200"}) == 1
    assert value("floodgate_gate_capacity", {"gate": "api"}) == 2


async def test_request_4xx_is_a_dependency_error_with_the_response(autojump_clock):
    def handler(request):
        return httpx.Response(404, json={"error": "no such model"})

    async with build(handler) as deps:
        with pytest.raises(floodgate.DependencyError) as info:
            await deps["api"].request("GET", "/v1/models/x")
    assert info.value.status == 404 and info.value.http_status == 502
    assert info.value.response.json() == {"error": "no such model"}


async def test_post_is_not_retried_unless_marked_idempotent(autojump_clock):
    calls = []

    def handler(request):
        calls.append(request)
        return httpx.Response(502)

    async with build(handler) as deps:
        with pytest.raises(floodgate.DependencyError, match="not idempotent"):
            await deps["api"].request("POST", "/v1/chat/completions", json={})
        assert len(calls) == 1
        with pytest.raises(floodgate.DependencyError, match="attempts exhausted"):
            await deps["api"].request("GET", "/v1/x")  # GET is idempotent by default
        assert len(calls) == 4


async def test_connect_errors_are_retried_then_mapped(autojump_clock):
    def handler(request):
        raise httpx.ConnectError("connection refused", request=request)

    async with build(handler) as deps:
        with pytest.raises(floodgate.DependencyError, match="ConnectError") as info:
            await deps["api"].request("POST", "/v1/chat/completions", json={})
    assert info.value.status is None
    assert isinstance(info.value.__cause__, httpx.ConnectError)


async def test_from_budget_builds_the_services_dependencies(repo_budget):
    registry = CollectorRegistry()
    deps = floodgate.Dependencies.from_budget(
        repo_budget, service="online", registry=registry, http_base_urls={"llm": "http://127.0.0.1:1"}
    )
    async with deps:
        assert set(deps) == {"llm", "search", "embed", "rerank", "db"}
        assert deps["llm"].gate.capacity == 16 and deps["llm"].client is not None
        assert deps["search"].client is None
        with pytest.raises(RuntimeError, match="no HTTP client"):
            await deps["search"].request("GET", "/")
        with pytest.raises(KeyError, match="no dependency 'fetch' for service 'online'"):
            deps["fetch"]
        assert deps["llm"].bucket is not None and deps["llm"].bucket.rate == pytest.approx(100.0)
    # the same registry can be handed to another component without double registration
    floodgate.Gate("llm", 1, max_waiters=0, max_wait=0.0, registry=registry)
    floodgate.Door("deal_brain", 1, registry=registry)
    assert registry.get_sample_value("floodgate_gate_capacity", {"gate": "admission_deal_brain"}) == 1


def test_parse_retry_after():
    assert floodgate.parse_retry_after("3") == 3.0
    assert floodgate.parse_retry_after("-1") == 0.0
    assert floodgate.parse_retry_after("soon") is None
    assert floodgate.parse_retry_after(None) is None
    assert floodgate.parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == 10.0


async def test_a_cookie_set_on_one_tenants_call_never_rides_on_anothers(autojump_clock):
    # One client serves every tenant: a jar would carry tenant A's provider session to tenant B.
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, headers={"set-cookie": "session=tenant-a; Path=/"}, json={})

    async with build(handler) as deps:
        first = await deps["api"].request("GET", "/v1/models", tenant="a")
        await deps["api"].request("GET", "/v1/models", tenant="b")
        assert len(deps["api"].client.cookies) == 0
    assert first.cookies["session"] == "tenant-a"  # the caller still sees what was set
    assert [r.headers.get("cookie") for r in seen] == [None, None]


# -- the wait for a connection --------------------------------------------------------------------


async def test_the_wait_for_a_connection_is_observed_once_per_attempt(autojump_clock):
    async def handler(request: httpx.Request) -> httpx.Response:
        # Plays httpcore's part: the pool made it wait, then it connected and sends the headers.
        trace = request.extensions["trace"]
        await trace("connection.connect_tcp.started", {})
        await trio.sleep(0.05)
        await trace("connection.connect_tcp.complete", {})
        await trace("http11.send_request_headers.started", {"request": request})
        await trio.sleep(0.3)  # the downstream's answer: not part of the wait
        await trace("http11.send_request_headers.started", {"request": request})  # reported once
        return httpx.Response(200, json={"ok": True})

    registry = CollectorRegistry()
    async with build(handler, registry=registry) as deps:
        await deps["api"].request("GET", "/v1/models", tenant="t1")
    labels = {"dependency": "api"}
    assert registry.get_sample_value("floodgate_http_connection_wait_seconds_count", labels) == 1
    assert registry.get_sample_value("floodgate_http_connection_wait_seconds_sum", labels) == pytest.approx(
        0.05
    )
    assert (
        registry.get_sample_value("floodgate_http_connection_wait_seconds_bucket", {**labels, "le": "0.025"})
        == 0
    )


async def test_httpcore_reports_the_connection_through_the_trace(autojump_clock):
    import httpcore

    # httpx's own transport, its pool on httpcore's in-memory network: the real trace events.
    transport = httpx.AsyncHTTPTransport()
    transport._pool = httpcore.AsyncConnectionPool(
        network_backend=httpcore.AsyncMockBackend(
            [
                b"HTTP/1.1 200 OK\r\n",
                b"Content-Type: application/json\r\n",
                b"Content-Length: 2\r\n\r\n",
                b"{}",
            ]
        )
    )
    budget = floodgate.parse_budget(budget_dict())
    registry = CollectorRegistry()
    deps = floodgate.Dependencies.from_budget(
        budget,
        service="svc",
        registry=registry,
        http_base_urls={"api": "http://api.test"},
        transport=transport,
    )
    async with deps:
        response = await deps["api"].request("GET", "/v1/models", tenant="t1")
    assert response.json() == {}
    labels = {"dependency": "api"}
    assert registry.get_sample_value("floodgate_http_connection_wait_seconds_count", labels) == 1
    # once reported, the trace takes itself out: httpcore traces the rest of the request no more
    assert "trace" not in response.request.extensions


async def test_a_caller_extension_is_kept_and_a_dependency_without_client_has_no_series(autojump_clock):
    seen: list[dict] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(dict(request.extensions))
        return httpx.Response(200)

    registry = CollectorRegistry()
    async with build(handler, registry=registry) as deps:
        await deps["api"].request("GET", "/", tenant="t1", extensions={"sni_hostname": "api.example"})
    assert seen[0]["sni_hostname"] == "api.example" and "trace" in seen[0]
    # "db" has no HTTP client: no connection-wait series for it
    assert (
        registry.get_sample_value("floodgate_http_connection_wait_seconds_count", {"dependency": "db"})
        is None
    )
    # and no trace at all when metrics are off
    seen.clear()
    async with build(handler) as deps:
        await deps["api"].request("GET", "/", tenant="t1")
    assert "trace" not in seen[0]

"""Behaviour through HTTP: the admin API, latency, provider limits, errors, hangs and statistics.

Time is virtual (``autojump_clock``): the simulator sleeps on trio's clock, so latencies and rate
windows are asserted as exact ``trio.current_time()`` values.
"""

from __future__ import annotations

import json

import pytest
import trio

from .conftest import chat_body, make_app

SEARCH = {"q": "Aldercrest Robotics"}


async def stats(client) -> dict:
    return await (await client.get("/admin/stats")).get_json()


async def test_put_behaviour_merges_and_reads_back(client) -> None:
    response = await client.put(
        "/admin/behaviour", json={"chat": {"latency": {"p50_ms": 400, "p99_ms": 1200}}}
    )
    assert response.status_code == 200
    response = await client.put(
        "/admin/behaviour", json={"chat": {"error_rate": 0.1, "rate_limit": {"rps": 5}}}
    )
    current = await (await client.get("/admin/behaviour")).get_json()
    assert current == await response.get_json()
    assert current["chat"]["latency"] == {"p50_ms": 400, "p99_ms": 1200}
    assert current["chat"]["error_rate"] == 0.1
    assert current["chat"]["rate_limit"]["rps"] == 5
    assert current["search"]["latency"] == {"fixed_ms": 0}


async def test_put_behaviour_rejects_bad_documents_without_change(client) -> None:
    response = await client.put(
        "/admin/behaviour", json={"chat": {"error_rate": 0.5}, "search": {"hang_rate": -1}}
    )
    assert response.status_code == 400
    error = (await response.get_json())["error"]
    assert error["code"] == "invalid_behaviour"
    assert error["message"].startswith("search.hang_rate: must be >= 0")
    assert (await (await client.get("/admin/behaviour")).get_json())["chat"]["error_rate"] == 0
    bad_json = await client.put("/admin/behaviour", data=b"{", headers={"content-type": "application/json"})
    assert bad_json.status_code == 400


async def test_fixed_latency_is_exact_in_virtual_time(autojump_clock) -> None:
    client = make_app(
        {"search": {"latency": {"fixed_ms": 150}}, "chat": {"latency": {"fixed_ms": 400}}}
    ).test_client()
    start = trio.current_time()
    assert (await client.get("/v1/search", query_string=SEARCH)).status_code == 200
    assert trio.current_time() - start == pytest.approx(0.150)
    start = trio.current_time()
    assert (await client.post("/v1/chat/completions", json=chat_body("hi", stream=True))).status_code == 200
    assert trio.current_time() - start == pytest.approx(0.400)  # time to first chunk
    start = trio.current_time()
    assert (await client.get("/admin/stats")).status_code == 200  # admin routes are never slowed
    assert trio.current_time() == start


async def test_rate_limit_gives_429_with_retry_after_then_recovers(autojump_clock) -> None:
    client = make_app({"embeddings": {"rate_limit": {"rps": 2}}}).test_client()
    body = {"model": "m", "input": "text"}
    headers = {"authorization": "Bearer key-a"}
    statuses = [
        (await client.post("/v1/embeddings", json=body, headers=headers)).status_code for _ in range(2)
    ]
    assert statuses == [200, 200]
    refused = await client.post("/v1/embeddings", json=body, headers=headers)
    assert refused.status_code == 429
    assert refused.headers["Retry-After"] == "1"
    assert refused.headers["retry-after-ms"] == "500"
    error = (await refused.get_json())["error"]
    assert error["code"] == "rate_limit_exceeded" and error["type"] == "requests"
    assert "2 requests/s" in error["message"]
    # Another key has its own bucket; the first key gets a token back after 1/rps seconds.
    assert (
        await client.post("/v1/embeddings", json=body, headers={"authorization": "Bearer key-b"})
    ).status_code == 200
    await trio.sleep(0.5)
    assert (await client.post("/v1/embeddings", json=body, headers=headers)).status_code == 200

    apis = (await stats(client))["apis"]["embeddings"]
    assert apis["statuses"] == {"200": 4, "429": 1}
    assert apis["keys"]["key-a"]["statuses"] == {"200": 3, "429": 1}
    assert apis["keys"]["key-b"]["requests"] == 1


async def test_peak_concurrency_counts_concurrent_requests(autojump_clock) -> None:
    app = make_app({"rerank": {"latency": {"fixed_ms": 100}}})
    client = app.test_client()
    body = {"model": "m", "query": "q", "documents": ["a", "b"]}

    async def call(delay: float) -> None:
        await trio.sleep(delay)
        assert (await client.post("/v1/rerank", json=body, headers={"x-api-key": "k"})).status_code == 200

    async with trio.open_nursery() as nursery:
        for _ in range(7):
            nursery.start_soon(call, 0)
        for _ in range(3):  # arrive after the first wave has finished
            nursery.start_soon(call, 0.5)
        await trio.sleep(0.05)
        during = (await stats(client))["apis"]["rerank"]
        assert during["current_concurrent"] == 7
    after = (await stats(client))["apis"]["rerank"]
    assert after["peak_concurrent"] == 7
    assert after["current_concurrent"] == 0
    assert after["requests"] == 10
    assert after["keys"]["k"]["peak_concurrent"] == 7


async def test_max_concurrent_refuses_the_excess(autojump_clock) -> None:
    client = make_app(
        {"chat": {"latency": {"fixed_ms": 200}, "rate_limit": {"max_concurrent": 3}}}
    ).test_client()
    statuses: list[int] = []

    async def call() -> None:
        response = await client.post("/v1/chat/completions", json=chat_body("hello"))
        statuses.append(response.status_code)
        if response.status_code == 429:
            assert response.headers["Retry-After"] == "1"

    async with trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(call)
    assert sorted(statuses) == [200, 200, 200, 429, 429]
    assert (await client.post("/v1/chat/completions", json=chat_body("hello"))).status_code == 200


async def test_error_rate_one_gives_all_503(client) -> None:
    await client.put("/admin/behaviour", json={"chat": {"error_rate": 1.0}})
    for _ in range(5):
        response = await client.post("/v1/chat/completions", json=chat_body("hello"))
        assert response.status_code == 503
        error = (await response.get_json())["error"]
        assert error["type"] == "server_error" and error["code"] == "service_unavailable"
    await client.put("/admin/behaviour", json={"chat": {"error_status": 500}})
    assert (await client.post("/v1/chat/completions", json=chat_body("hello"))).status_code == 500
    assert (await stats(client))["apis"]["chat"]["statuses"] == {"500": 1, "503": 5}


async def test_outage_is_an_immediate_503_with_retry_after(autojump_clock) -> None:
    client = make_app({"search": {"latency": {"fixed_ms": 1000}, "outage": True}}).test_client()
    start = trio.current_time()
    response = await client.get("/v1/search", query_string=SEARCH)
    assert response.status_code == 503
    assert "Retry-After" in response.headers
    assert trio.current_time() == start
    await client.put("/admin/behaviour", json={"search": {"outage": False}})
    assert (await client.get("/v1/search", query_string=SEARCH)).status_code == 200


async def test_hang_never_answers_and_is_counted_out_when_the_client_gives_up(autojump_clock) -> None:
    client = make_app({"fetch": {"hang_rate": 1.0}}).test_client()
    with trio.move_on_after(30) as scope:
        await client.get("/v1/fetch", query_string={"url": "https://corpus.floodgate.test/x"})
    assert scope.cancelled_caught
    fetch = (await stats(client))["apis"]["fetch"]
    assert fetch["statuses"] == {"499": 1}
    assert fetch["current_concurrent"] == 0


async def test_stream_is_counted_until_its_end(autojump_clock) -> None:
    app = make_app({"chat": {"latency": {"fixed_ms": 100}}})
    client = app.test_client()
    body = json.dumps(
        chat_body("[1] Alpha beta gamma. Delta epsilon.\n\nQuestion: alpha?", stream=True)
    ).encode()
    async with client.request("/v1/chat/completions", method="POST") as conn:
        await conn.send(body)
        await conn.send_complete()
        first = await conn.receive()
        assert first.startswith(b"data: ")
        assert (await stats(client))["apis"]["chat"]["current_concurrent"] == 1
        while True:
            try:
                await conn.receive()
            except trio.EndOfChannel:
                break
    chat = (await stats(client))["apis"]["chat"]
    assert chat["current_concurrent"] == 0 and chat["statuses"] == {"200": 1}


async def test_reset_restores_behaviour_and_clears_stats(client) -> None:
    await client.put("/admin/behaviour", json={"rerank": {"outage": True}})
    await client.post("/v1/rerank", json={"model": "m", "query": "q", "documents": ["d"]})
    response = await client.post("/admin/reset")
    assert response.status_code == 200
    assert (await response.get_json())["behaviour"]["rerank"]["outage"] is False
    assert (await stats(client))["apis"]["rerank"]["requests"] == 0


async def test_same_seed_same_run(autojump_clock) -> None:
    behaviour = {"chat": {"latency": {"p50_ms": 200, "p99_ms": 2000}, "error_rate": 0.3}}

    async def run(seed: int) -> list[tuple[int, float]]:
        client = make_app(behaviour, seed=seed).test_client()
        out = []
        for _ in range(12):
            start = trio.current_time()
            response = await client.post("/v1/chat/completions", json=chat_body("hello"))
            out.append((response.status_code, round(trio.current_time() - start, 9)))
        return out

    first = await run(42)
    assert first == await run(42)
    assert first != await run(43)
    assert {status for status, _ in first} == {200, 503}
    assert len({elapsed for _, elapsed in first}) == 12  # log-normal: every latency differs


async def test_validation_errors_are_counted_with_their_status(client) -> None:
    await client.post("/v1/embeddings", json={"model": "m"})
    assert (await stats(client))["apis"]["embeddings"]["statuses"] == {"400": 1}


async def test_stream_cut_by_the_client_is_counted_out(autojump_clock) -> None:
    client = make_app().test_client()
    long_sentence = " ".join(f"alpha{i}" for i in range(60)) + " alpha."
    body = json.dumps(chat_body(f"[1] {long_sentence}\n\nQuestion: alpha?", stream=True)).encode()

    class ClientGaveUp(Exception):
        pass

    # Leaving the connection with an exception is how the test client disconnects.
    with pytest.RaisesGroup(ClientGaveUp, allow_unwrapped=True, flatten_subgroups=True):
        async with client.request("/v1/chat/completions", method="POST") as conn:
            await conn.send(body)
            await conn.send_complete()
            assert (await conn.receive()).startswith(b"data: ")
            assert (await stats(client))["apis"]["chat"]["current_concurrent"] == 1
            raise ClientGaveUp
    chat = (await stats(client))["apis"]["chat"]
    assert chat["current_concurrent"] == 0 and chat["statuses"] == {"200": 1}


async def test_a_method_a_path_does_not_serve_is_405_with_allow(client) -> None:
    for method, path, allowed in (
        ("GET", "/v1/chat/completions", "OPTIONS, POST"),
        ("POST", "/v1/search", "GET, HEAD, OPTIONS"),
    ):
        response = await client.open(path, method=method)
        assert response.status_code == 405, (method, path)
        assert response.headers["Allow"] == allowed
        assert (await response.get_json())["error"]["code"] == "method_not_allowed"

"""The door at the ASGI edge: refusals keep the error contract, cost no framework work, and every
admitted request gives its place back however it ends."""

from __future__ import annotations

import json
import math

import trio
from prometheus_client import generate_latest

from .conftest import close_door, online_harness

DEAL = "/v1/deal-brain/answers"
BODY = json.dumps({"question": "Aldercrest Robotics deal"}).encode()


def _scope(path: str = DEAL, *, headers: list[tuple[bytes, bytes]] | None = None) -> dict:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers
        if headers is not None
        else [(b"content-type", b"application/json"), (b"x-floodgate-tenant", b"acme")],
        "client": ("127.0.0.1", 1234),
        "server": ("127.0.0.1", 8081),
        "extensions": {},
    }


class Exchange:
    """One ASGI request: what the app received and what it sent."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = list(chunks)
        self.received = 0
        self.sent: list[dict] = []

    async def receive(self) -> dict:
        if not self.chunks:
            await trio.sleep_forever()  # a real server: nothing more until the client speaks
        self.received += 1
        body = self.chunks.pop(0)
        return {"type": "http.request", "body": body, "more_body": bool(self.chunks)}

    async def send(self, message: dict) -> None:
        self.sent.append(message)

    @property
    def status(self) -> int:
        return self.sent[0]["status"]

    @property
    def headers(self) -> dict[bytes, bytes]:
        return dict(self.sent[0]["headers"])


async def test_a_refusal_keeps_the_error_contract_without_reaching_quart(autojump_clock) -> None:
    async with online_harness() as h:
        door = h.app.extensions["online"].doors["deal_brain"]
        close_door(door)
        response = await h.post(DEAL, {"question": "q"}, headers={"x-request-id": "req-7"})
        assert response.status_code == 429
        body = await response.get_json()
        assert body["error"]["code"] == "overloaded"
        assert body["error"]["details"]["dependency"] == "llm"
        assert "0 requests in flight" in body["error"]["message"]
        assert response.headers["Retry-After"] == "1"
        assert response.headers["x-request-id"] == "req-7"
        assert response.headers["Server-Timing"].startswith("admission;dur=")
        assert "total;dur=" in response.headers["Server-Timing"]
        assert door.statistics().refused_total == 1
        assert await h.requests_to("embed") == 0
        metrics = generate_latest(h.registry).decode()
        assert (
            'http_requests_total{method="POST",route="/v1/deal-brain/answers",status="429",status_class="4xx"}'
            " 1.0" in metrics
        )
        assert (
            'floodgate_rejections_total{dependency="admission_deal_brain",reason="admission"} 1.0' in metrics
        )


async def test_the_tenant_is_checked_before_the_door(autojump_clock) -> None:
    async with online_harness() as h:
        door = h.app.extensions["online"].doors["deal_brain"]
        close_door(door)
        assert (await h.post(DEAL, {"question": "q"}, tenant=None)).status_code == 401
        assert (await h.post(DEAL, {"question": "q"}, tenant="bad tenant!")).status_code == 400
        assert door.statistics().refused_total == 0


async def test_a_refused_body_is_drained_so_the_connection_stays_usable(autojump_clock) -> None:
    async with online_harness() as h:
        close_door(h.app.extensions["online"].doors["deal_brain"])
        exchange = Exchange([BODY[:10], BODY[10:]])
        await h.app(_scope(), exchange.receive, exchange.send)
        assert exchange.status == 429
        assert exchange.received == 2  # read to the end
        assert b"connection" not in exchange.headers
        assert exchange.headers[b"content-length"] == str(len(exchange.sent[1]["body"])).encode()
        assert exchange.headers[b"x-request-id"]  # generated when the client sent none


async def test_a_refused_body_over_the_limit_is_not_read_and_closes_the_connection(autojump_clock) -> None:
    async with online_harness() as h:
        close_door(h.app.extensions["online"].doors["deal_brain"])
        limit = h.budget.endpoint("deal_brain").max_body_bytes
        declared = _scope(
            headers=[(b"x-floodgate-tenant", b"acme"), (b"content-length", str(limit + 1).encode())]
        )
        exchange = Exchange([b"x" * (limit + 1)])
        await h.app(declared, exchange.receive, exchange.send)
        assert exchange.status == 429
        assert exchange.received == 0
        assert exchange.headers[b"connection"] == b"close"
        chunked = Exchange([b"x" * limit, b"x" * 10, b"x"])  # no content-length
        await h.app(_scope(), chunked.receive, chunked.send)
        assert chunked.status == 429
        assert chunked.received == 2  # stopped as soon as it was over the limit
        assert chunked.headers[b"connection"] == b"close"


async def test_every_admitted_request_gives_its_place_back(autojump_clock, memory_chunks) -> None:
    slow = {"chat": {"latency": {"fixed_ms": 400}}}
    async with online_harness(behaviour=slow, chunks=memory_chunks) as h:
        door = h.app.extensions["online"].doors["deal_brain"]
        # (another question than BODY's: a repeated one is answered from the caches, at once)
        assert (await h.post(DEAL, {"question": "Aldercrest Robotics deal terms"})).status_code == 200
        assert (await h.post(DEAL, b'{"not": json')).status_code == 400
        assert (await h.post(DEAL, {"question": ""})).status_code == 422
        # cancelled while inside (the client went away): the place is returned too
        # (a cancel, not a deadline: the endpoint would turn a deadline into its 504)
        exchange = Exchange([BODY])
        async with trio.open_nursery() as nursery:
            nursery.start_soon(h.app, _scope(), exchange.receive, exchange.send)
            await trio.sleep(0.1)
            assert door.statistics().in_flight == 1
            nursery.cancel_scope.cancel()
        assert exchange.sent == []
        stats = door.statistics()
        assert stats.in_flight == 0
        assert stats.admitted_total == 4
        assert stats.refused_total == 0


async def test_other_routes_and_methods_pass_through(autojump_clock) -> None:
    async with online_harness() as h:
        close_door(h.app.extensions["online"].doors["deal_brain"])
        assert (await h.client.get("/healthz")).status_code == 200
        assert (await h.client.get(DEAL, headers={"x-floodgate-tenant": "acme"})).status_code == 405


async def test_a_static_door_when_the_budget_says_so(autojump_clock) -> None:
    from .conftest import make_budget

    budget = make_budget({"endpoints": {"deal_brain": {"admission": {"adaptive": False}}}})
    async with online_harness(budget=budget) as h:
        door = h.app.extensions["online"].doors["deal_brain"]
        assert door.adaptive is None
        assert door.limit == door.ceiling
        assert h.app.extensions["online"].doors["nexus_assess"].adaptive is not None


async def test_the_dealbrain_door_watches_the_llm_gate(autojump_clock) -> None:
    # The LLM budget is shared by all three endpoints: when others fill it, dealBrain's requests
    # would only wait at its gate, so the door counts that queue (and admits fewer past the
    # budget's allowance).
    async with online_harness() as h:
        door = h.app.extensions["online"].doors["deal_brain"]
        gate = h.wired.dependencies["llm"].gate
        for i in range(gate.capacity):  # two tenants: one alone holds at most its share (half)
            gate.acquire_nowait(f"other-{i % 2}")
        async with trio.open_nursery() as nursery:
            for _ in range(4):  # a third tenant, under its share: they wait for capacity
                nursery.start_soon(gate.acquire, "other-2")
            await trio.sleep(0.01)
            assert gate.waiting == 4
            for _ in range(10):  # ten requests that each saw 4 waiting, answered in 0.6 s
                assert door.try_enter()
                await trio.sleep(0.05)  # all within the waiters' max_wait
                door.leave()
                door.observe(0.6, trio.current_time())
            stats = door.adaptive.statistics()
            assert stats.last_queue == 4.0
            # 3 over the allowance of 1: the limit went down by the smoothed excess
            assert door.limit == math.floor(36 - 0.2 * 3)
            nursery.cancel_scope.cancel()

"""Tenant shares in the online service, on the virtual clock: a tenant flooding dealBrain holds at
most its share of the door and of the LLM gate and gets 429 ``tenant_share_exceeded`` for the rest,
while another tenant's requests are all answered."""

from __future__ import annotations

import trio

from .conftest import FIXED_LATENCIES, online_harness

DEAL = "/v1/deal-brain/answers"


async def test_a_flooding_tenant_is_held_to_its_share_and_the_other_is_served(
    autojump_clock, memory_chunks
) -> None:
    async with online_harness(behaviour=FIXED_LATENCIES, chunks=memory_chunks) as h:
        door = h.app.extensions["online"].doors["deal_brain"]
        gate = h.wired.dependencies["llm"].gate
        assert (door.share_of("noisy"), door.limit) == (18, 36)  # tenant_share 0.5, weight 1
        assert (gate.share_of("noisy"), gate.capacity) == (8, 16)
        answers: dict[str, list] = {"noisy": [], "victim": []}
        peaks = {"door": 0, "llm": 0}

        async def ask(tenant: str, i: int) -> None:
            response = await h.post(DEAL, {"question": f"Aldercrest deal {tenant} {i}"}, tenant=tenant)
            answers[tenant].append((response.status_code, await response.get_json(), response.headers))

        async def watch() -> None:
            while True:
                peaks["door"] = max(peaks["door"], door.statistics().in_flight_by_tenant.get("noisy", 0))
                peaks["llm"] = max(peaks["llm"], gate.statistics().in_use_by_tenant.get("noisy", 0))
                await trio.sleep(0.01)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch)
            async with trio.open_nursery() as senders:
                for i in range(40):  # all at once: more than the whole door
                    senders.start_soon(ask, "noisy", i)
                await trio.sleep(0.05)
                for i in range(10):
                    senders.start_soon(ask, "victim", i)
            nursery.cancel_scope.cancel()

    noisy = [status for status, _, _ in answers["noisy"]]
    assert noisy.count(200) == 18 and noisy.count(429) == 22
    refused = next(body for status, body, _ in answers["noisy"] if status == 429)
    assert refused["error"]["code"] == "tenant_share_exceeded"
    assert refused["error"]["details"]["dependency"] == "deal_brain"
    assert (refused["error"]["details"]["share"], refused["error"]["details"]["limit"]) == (18, 36)
    assert "noisy" not in refused["error"]["message"]  # names no tenant
    assert all(headers["Retry-After"] == "1" for status, _, headers in answers["noisy"] if status == 429)
    # the other tenant found the other half free, and nothing of it degraded
    assert [status for status, _, _ in answers["victim"]] == [200] * 10
    assert all(not body.get("degraded") for _, body, _ in answers["victim"])
    assert peaks == {"door": 18, "llm": 8}  # the noisy one's 18 requests took turns at its 8 LLM slots
    stats = door.statistics()
    assert stats.refused_share_total == 22 and stats.in_flight == 0

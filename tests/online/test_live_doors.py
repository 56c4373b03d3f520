"""The endpoint doors follow this process's live share: sized by Little's law on the share of the
bottleneck it holds now, not the planned one, so the doors of the live processes together admit
what the global limits carry. Membership on an in-memory store, time on the virtual clock."""

from __future__ import annotations

import math

import floodgate
import trio

from services.online._admission import endpoint_capacity, make_doors, resize_doors

from .conftest import TENANT, make_budget, online_harness

DEAL = "/v1/deal-brain/answers"


class RecordingStore(floodgate.InMemoryMembershipStore):
    """The in-memory store, remembering who heartbeats (to cut one member off by its id)."""

    def __init__(self) -> None:
        super().__init__()
        self.member_ids: set[str] = set()

    async def heartbeat(self, service: str, member_id: str, **kwargs) -> floodgate.MembershipView:
        self.member_ids.add(member_id)
        return await super().heartbeat(service, member_id, **kwargs)


POLICY = floodgate.MembershipPolicy()  # what open_membership uses: heartbeats every 0.5 s, lease 3 s


def test_the_capacity_at_a_live_share_is_sized_on_that_share() -> None:
    budget = make_budget()
    planned = endpoint_capacity(budget, "deal_brain")
    assert (planned.bottleneck, planned.rps, planned.in_flight) == ("llm", 40.0, 36)  # 16 / 0.4 s
    halved = {
        name: budget.process_limit("online", name) // 2 for name in ("llm", "embed", "search", "rerank")
    }
    live = endpoint_capacity(budget, "deal_brain", limits=halved)
    # the fewest places that refuse 1 % of random arrivals at 20/s, each held 0.6 s x 1.05
    assert (live.bottleneck, live.rps, live.in_flight) == ("llm", 20.0, 21)
    assert endpoint_capacity(budget, "deal_brain", limits={"llm": 0}).in_flight == 0  # no share: no room


def test_resizing_the_doors_moves_ceiling_floor_and_the_refusals_words() -> None:
    budget = make_budget()
    doors = make_doors(budget)
    door = doors["deal_brain"]
    assert door.adaptive is not None  # the budget's doors are adaptive
    resize_doors(budget, doors, {"llm": 8})
    assert (door.ceiling, door.limit, door.adaptive.ceiling) == (21, 21, 21)
    assert door.adaptive.floor == math.ceil(21 * budget.endpoint("deal_brain").admission.min_fraction)
    assert str(door.refusal()) == (
        "llm: deal_brain is at its limit of 21 requests in flight (the llm budget carries 20 requests/s)"
    )
    resize_doors(budget, doors, {})  # the planned share again
    assert (door.ceiling, door.limit) == (36, 36)


async def test_a_join_halves_the_llm_share_and_the_door_follows_within_a_heartbeat(autojump_clock) -> None:
    store = floodgate.InMemoryMembershipStore()
    async with online_harness(membership_store=store) as h:
        door = h.wired.doors["deal_brain"]
        assert h.app.extensions["online"].doors["deal_brain"] is door  # the app's door is the wired one
        capacity = h.registry.get_sample_value
        gate = {"gate": "admission_deal_brain"}
        assert (h.wired.dependencies["llm"].gate.capacity, door.ceiling) == (16, 36)  # alone: the whole

        await store.heartbeat("online", "b", acked_generation=0, expiry=60)  # a second process joins
        joined = trio.current_time()
        while door.ceiling == 36:  # noqa: ASYNC110 (the heartbeat task resizes it)
            await trio.sleep(0.01)
        assert trio.current_time() - joined <= POLICY.heartbeat + 0.01
        assert (h.wired.dependencies["llm"].gate.capacity, door.ceiling, door.limit) == (8, 21, 21)
        assert capacity("floodgate_gate_capacity", gate) == 21

        # the 22nd request is refused at the door, at once, naming the live limit
        for _ in range(21):
            door.enter(TENANT)
        started = trio.current_time()
        response = await h.post(DEAL, {"question": "q"})
        assert response.status_code == 429 and trio.current_time() == started
        assert "limit of 21 requests in flight" in (await response.get_json())["error"]["message"]
        for _ in range(21):
            door.leave(TENANT)

        await store.leave("online", "b")  # it leaves: the whole share comes back, and the door with it
        while door.ceiling == 21:  # noqa: ASYNC110
            await trio.sleep(0.01)
        assert (h.wired.dependencies["llm"].gate.capacity, door.ceiling) == (16, 36)
        assert capacity("floodgate_gate_capacity", gate) == 36


async def test_a_fenced_process_refuses_at_the_door(autojump_clock, memory_chunks) -> None:
    """Cut off from the store, a process fences itself (no share) before its lease can expire:
    its doors close too, so requests get a 429 at once instead of waiting at a closed gate."""
    store = RecordingStore()
    async with online_harness(membership_store=store, chunks=memory_chunks) as h:
        assert (await h.post(DEAL, {"question": "Who acquired Norfield Analytics?"})).status_code == 200
        [member_id] = store.member_ids
        store.partition(member_id)
        await trio.sleep(POLICY.fence + POLICY.heartbeat)
        door = h.wired.doors["deal_brain"]
        assert (h.wired.dependencies["llm"].gate.capacity, door.ceiling) == (0, 0)
        started = trio.current_time()
        response = await h.post(DEAL, {"question": "Who acquired Norfield Analytics?"})
        assert response.status_code == 429 and trio.current_time() == started
        store.partition(member_id, cut=False)
        await trio.sleep(POLICY.heartbeat * 2)
        assert door.ceiling == 36  # back (as a new member): the whole share again


def test_each_door_weighs_its_bottleneck_queue_by_the_waits_on_the_endpoints_critical_path() -> None:
    """A waiter at the LLM gate costs dealBrain one call's wait (one call); a hunt makes five LLM
    calls and waits for two of them in turn (the expansion, then the four summaries at once); a
    rubric makes four at once and waits once (`floodgate.AdaptiveLimit`'s ``queue_cost``)."""
    budget = make_budget()
    gates = {"llm": floodgate.Gate("llm", 16, max_waiters=32, max_wait=1.0)}
    doors = make_doors(budget, gates=gates)
    costs = {name: door.adaptive.queue_cost for name, door in doors.items() if door.adaptive is not None}
    assert costs == {"deal_brain": 1.0, "shadow_hunter": 2 / 5, "nexus_assess": 1 / 4}
    assert {name: endpoint_capacity(budget, name).queue_cost for name in costs} == costs

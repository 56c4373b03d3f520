"""Per-tenant shares of a gate and a door (``tenant_share``, weights), on the virtual clock: a
tenant at its share waits for its own slots or is refused, the others still get the free ones."""

from __future__ import annotations

import anyio
import floodgate
import pytest
import trio
import trio.lowlevel
import trio.testing
from floodgate import TenantTable
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry


def table(share: float | int | None = 0.5, **tenants) -> TenantTable:
    shares = {} if share is None else {"llm": share, "deal_brain": share}
    return TenantTable(tenants, tenant_shares=shares)


async def hold(gate: floodgate.Gate, tenant: str, seconds: float, log: list | None = None) -> None:
    async with gate.slot(tenant):
        if log is not None:
            log.append((tenant, trio.current_time()))
        await trio.sleep(seconds)


def test_a_tenant_at_its_share_leaves_the_free_slots_to_the_others():
    gate = floodgate.Gate("llm", 4, max_waiters=8, max_wait=1.0, tenants=table())
    gate.acquire_nowait("a")
    gate.acquire_nowait("a")
    assert gate.share_of("a") == 2
    with pytest.raises(anyio.WouldBlock):
        gate.acquire_nowait("a")  # two slots free, none of them a's
    gate.acquire_nowait("b")
    gate.acquire_nowait("b")
    stats = gate.statistics()
    assert (stats.in_use, dict(stats.in_use_by_tenant)) == (4, {"a": 2, "b": 2})


async def test_a_capped_waiter_gets_its_own_slot_back_while_others_pass_it(autojump_clock):
    gate = floodgate.Gate("llm", 4, max_waiters=8, max_wait=5.0, tenants=table())
    log: list = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(hold, gate, "a", 1.0, log)
        nursery.start_soon(hold, gate, "a", 2.0, log)
        await trio.sleep(0.1)
        nursery.start_soon(hold, gate, "a", 1.0, log)  # at its share: waits, two slots free
        await trio.sleep(0.1)
        assert gate.statistics().waiting_by_tenant == {"a": 1}
        nursery.start_soon(hold, gate, "b", 1.0, log)  # takes a free slot past a's waiter
        await trio.sleep(0.1)
        assert gate.statistics().in_use_by_tenant == {"a": 2, "b": 1}
    # a's third call started when its first ended (t=1), not when b's slot was free
    assert log == [("a", 0.0), ("a", 0.0), ("b", 0.2), ("a", 1.0)]


async def test_a_waiter_still_at_its_share_when_its_wait_ends_is_told_so(autojump_clock):
    registry = CollectorRegistry()
    gate = floodgate.Gate(
        "llm", 4, max_waiters=8, max_wait=1.5, retry_after=2.0, tenants=table(), registry=registry
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(hold, gate, "a", 10)
        nursery.start_soon(hold, gate, "a", 10)
        await trio.sleep(0.1)
        with pytest.raises(floodgate.TenantShareExceeded) as info:
            await gate.acquire("a")
        assert trio.current_time() == pytest.approx(1.6)
        await gate.acquire("b")  # the others were never short of a slot
        gate.release("b")
        nursery.cancel_scope.cancel()
    error = info.value
    assert isinstance(error, floodgate.Overloaded) and error.http_status == 429
    body = floodgate.error_body(error)
    assert body["code"] == "tenant_share_exceeded"
    assert body["details"] | {"reason": None} == {
        "dependency": "llm",
        "reason": None,
        "retry_after": 2.0,
        "share": 2,
        "limit": 4,
    }
    assert "this tenant's share is 2 of the 4 slots" in body["message"]
    stats = gate.statistics()
    assert (stats.rejected_total, stats.rejected_share_total) == (1, 1)
    labels = {"dependency": "llm", "reason": "tenant_share"}
    assert registry.get_sample_value("floodgate_rejections_total", labels) == 1


async def test_a_tenant_may_fill_only_its_share_of_the_waiting_places(autojump_clock):
    gate = floodgate.Gate("llm", 2, max_waiters=4, max_wait=5.0, tenants=table())
    async with trio.open_nursery() as nursery:
        nursery.start_soon(hold, gate, "b", 10)
        nursery.start_soon(hold, gate, "b", 10)
        await trio.sleep(0.1)
        assert gate.statistics().in_use_by_tenant == {"b": 1}  # its share of 2 slots is 1: one waits
        nursery.start_soon(hold, gate, "a", 10)  # takes the free slot past b's waiter
        await trio.sleep(0.1)
        # now full: a's callers wait, in two of the four places at most
        nursery.start_soon(hold, gate, "a", 1)
        nursery.start_soon(hold, gate, "a", 1)
        await trio.sleep(0.1)
        with pytest.raises(floodgate.TenantShareExceeded, match="its 2 of the 4 waiting places"):
            await gate.acquire("a")
        assert trio.current_time() == pytest.approx(0.3)  # at once, no wait
        nursery.start_soon(hold, gate, "c", 1)  # another tenant still finds a place
        await trio.sleep(0.1)
        assert gate.statistics().waiting_by_tenant == {"b": 1, "a": 2, "c": 1}
        nursery.cancel_scope.cancel()


async def test_only_callers_waiting_for_capacity_count_as_the_gates_queue(autojump_clock):
    gate = floodgate.Gate("llm", 4, max_waiters=8, max_wait=5.0, tenants=table())
    async with trio.open_nursery() as nursery:
        for tenant in ("a", "a", "a"):  # the third waits for a's own share, with two slots free
            nursery.start_soon(hold, gate, tenant, 10)
        await trio.sleep(0.1)
        assert (gate.waiting, gate.waiting_for_capacity) == (1, 0)
        for tenant in ("b", "b", "c"):  # b fills the gate; c, under its share, waits for a slot
            nursery.start_soon(hold, gate, tenant, 10)
            await trio.sleep(0.01)
        assert gate.statistics().waiting_by_tenant == {"a": 1, "c": 1}
        assert (gate.waiting, gate.waiting_for_capacity) == (2, 1)
        nursery.cancel_scope.cancel()
    plain = floodgate.Gate("llm", 1, max_waiters=8, max_wait=5.0)
    assert plain.waiting_for_capacity == plain.waiting == 0


async def test_a_tenant_whose_share_is_the_whole_gate_waits_for_capacity_when_it_fills_it(autojump_clock):
    # tenant_share 1.0 (or a weight that makes a share whole): one tenant holding every slot is at
    # its share and at the gate's capacity at once; its waiters are the gate's queue all the same
    # (a larger gate would serve them), so a door watching the gate sees them.
    gate = floodgate.Gate("llm", 4, max_waiters=8, max_wait=5.0, tenants=table(1.0))
    weighted = floodgate.Gate("llm", 4, max_waiters=8, max_wait=5.0, tenants=table(0.5, a={"weight": 2}))
    for g in (gate, weighted):
        assert g.share_of("a") == g.capacity
        async with trio.open_nursery() as nursery:
            for _ in range(6):  # four hold every slot, two wait
                nursery.start_soon(hold, g, "a", 10)
            await trio.sleep(0.1)
            assert g.statistics().in_use_by_tenant == {"a": 4}
            assert (g.waiting, g.waiting_for_capacity) == (2, 2)
            nursery.cancel_scope.cancel()


async def test_the_share_applies_to_a_tenant_alone(autojump_clock):
    # Work-conserving between tenants, not past a configured cap: alone, a runs two at a time.
    gate = floodgate.Gate("llm", 4, max_waiters=8, max_wait=5.0, tenants=table())
    log: list = []
    async with trio.open_nursery() as nursery:
        for _ in range(4):
            nursery.start_soon(hold, gate, "a", 1.0, log)
    assert [t for _, t in log] == [0.0, 0.0, 1.0, 1.0]


async def test_without_a_share_one_tenant_uses_the_whole_gate(autojump_clock):
    gate = floodgate.Gate("search", 4, max_waiters=8, max_wait=5.0, tenants=table())  # llm only
    log: list = []
    async with trio.open_nursery() as nursery:
        for _ in range(4):
            nursery.start_soon(hold, gate, "a", 1.0, log)
    assert [t for _, t in log] == [0.0] * 4


async def test_a_paying_tier_gets_its_weight_in_share_and_in_turns(autojump_clock):
    tenants = table(0.25, gold={"weight": 3})
    gate = floodgate.Gate("llm", 4, max_waiters=16, max_wait=30.0, tenants=tenants)
    assert (gate.share_of("gold"), gate.share_of("free")) == (3, 1)
    # turns: with every slot held, gold is served three times for each of free's turns
    turns = floodgate.Gate("llm", 1, max_waiters=16, max_wait=30.0, tenants=table(None, gold={"weight": 3}))
    log: list = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(hold, turns, "x", 1.0)
        await trio.sleep(0.1)
        for _ in range(4):  # queued in this order: free, gold, free, gold, ...
            nursery.start_soon(hold, turns, "free", 1.0, log)
            await trio.sleep(0.01)
            nursery.start_soon(hold, turns, "gold", 1.0, log)
            await trio.sleep(0.01)
    assert [tenant for tenant, _ in log] == ["free", "gold", "gold", "gold", "free", "gold", "free", "free"]


async def test_a_resize_moves_the_shares_with_the_capacity(autojump_clock):
    gate = floodgate.Gate("llm", 2, max_waiters=8, max_wait=5.0, tenants=table())
    log: list = []
    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(hold, gate, "a", 1.0, log)
        await trio.sleep(0.5)
        assert gate.statistics().in_use_by_tenant == {"a": 1}
        gate.resize(6)  # share 3: both waiters in at once
        await trio.lowlevel.checkpoint()
    assert [t for _, t in log] == [0.0, 0.5, 0.5]


async def test_a_cancelled_capped_waiter_leaves_the_gate_consistent(autojump_clock):
    gate = floodgate.Gate("llm", 2, max_waiters=8, max_wait=5.0, tenants=table())
    async with trio.open_nursery() as nursery:
        nursery.start_soon(hold, gate, "a", 1.0)
        await trio.sleep(0.1)
        with trio.move_on_after(0.2):
            await gate.acquire("a")
        assert gate.statistics().waiting == 0
        gate.acquire_nowait("b")
        gate.release("b")
    stats = gate.statistics()
    assert (stats.in_use, stats.waiting, stats.rejected_total) == (0, 0, 0)


@settings(max_examples=60, deadline=None)
@given(
    ops=st.lists(
        st.tuples(st.sampled_from(["a", "b", "gold"]), st.sampled_from([0.1, 0.5, 1.0]), st.integers(0, 3)),
        min_size=1,
        max_size=30,
    ),
    capacity=st.integers(1, 6),
)
def test_no_tenant_ever_holds_more_than_its_share_and_no_slot_idles_past_a_waiter_who_could_have_it(
    ops, capacity
):
    tenants = table(0.5, gold={"weight": 2})

    async def main() -> None:
        gate = floodgate.Gate("llm", capacity, max_waiters=6, max_wait=2.0, tenants=tenants)

        def check() -> None:
            stats = gate.statistics()
            for tenant, held in stats.in_use_by_tenant.items():
                assert held <= gate.share_of(tenant)
            if stats.in_use < capacity:
                # every tenant still waiting holds its whole share
                for tenant in stats.waiting_by_tenant:
                    assert stats.in_use_by_tenant.get(tenant, 0) >= gate.share_of(tenant)

        async def call(tenant: str, seconds: float) -> None:
            try:
                async with gate.slot(tenant):
                    check()
                    await trio.sleep(seconds)
            except floodgate.Overloaded:
                pass
            check()

        async with trio.open_nursery() as nursery:
            for tenant, seconds, gap in ops:
                nursery.start_soon(call, tenant, seconds)
                await trio.sleep(gap / 10)
                check()
        assert gate.statistics().in_use == 0

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


# -- the door ---------------------------------------------------------------------------------------


def test_a_door_refuses_a_tenant_at_its_share_and_admits_the_others():
    registry = CollectorRegistry()
    door = floodgate.Door("deal_brain", 4, dependency="llm", tenants=table(), registry=registry)
    assert door.try_enter("a") and door.try_enter("a")
    assert not door.try_enter("a")  # at its share: two places free, none of them a's
    assert door.at_share("a") and not door.at_share("b")
    with pytest.raises(floodgate.TenantShareExceeded) as info:
        door.enter("a")
    assert floodgate.error_body(info.value)["details"] | {"reason": None} == {
        "dependency": "deal_brain",
        "reason": None,
        "retry_after": 1.0,
        "share": 2,
        "limit": 4,
    }
    door.enter("b")
    door.enter("b")
    with pytest.raises(floodgate.Overloaded) as full:
        door.enter("c")  # the door is full: the endpoint's limit, not c's share
    assert type(full.value) is floodgate.Overloaded and full.value.dependency == "llm"
    stats = door.statistics()
    assert (stats.refused_total, stats.refused_share_total) == (3, 2)
    assert stats.in_flight_by_tenant == {"a": 2, "b": 2}
    value = registry.get_sample_value
    assert (
        value("floodgate_rejections_total", {"dependency": "admission_deal_brain", "reason": "tenant_share"})
        == 2
    )
    assert (
        value("floodgate_rejections_total", {"dependency": "admission_deal_brain", "reason": "admission"})
        == 1
    )
    door.leave("a")
    assert door.try_enter("a")
    with pytest.raises(RuntimeError, match="by tenant 'c' without enter"):
        door.leave("c")


def test_a_door_share_follows_its_adaptive_limit():
    adaptive = floodgate.AdaptiveLimit(8, floor=2)
    door = floodgate.Door("deal_brain", 8, adaptive=adaptive, tenants=table(0.5, gold={"weight": 2}))
    assert (door.share_of("a"), door.share_of("gold")) == (4, 8)
    adaptive.limit = 4  # as after a lowering
    assert (door.share_of("a"), door.share_of("gold")) == (2, 4)


def test_a_door_without_a_share_admits_any_tenant_up_to_its_limit():
    door = floodgate.Door("nexus_assess", 3, tenants=table())
    assert all(door.try_enter("a") for _ in range(3))
    assert not door.try_enter("b")
    assert type(door.refusal("a")) is floodgate.Overloaded

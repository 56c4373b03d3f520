"""Gate.resize: capacity changed in place — exact virtual times, and a property under random resizes."""

from __future__ import annotations

import math

import floodgate
import pytest
import trio
import trio.lowlevel
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry


async def hold(gate: floodgate.Gate, tenant: str, seconds: float, log: list | None = None):
    async with gate.slot(tenant):
        if log is not None:
            log.append((tenant, trio.current_time()))
        await trio.sleep(seconds)


async def test_lowering_keeps_calls_in_flight_and_admits_only_under_the_new_capacity(autojump_clock):
    gate = floodgate.Gate("llm", 4, max_waiters=4, max_wait=10)
    log: list = []
    async with trio.open_nursery() as nursery:
        for seconds in (1, 2, 3, 4):
            nursery.start_soon(hold, gate, f"h{seconds}", seconds)
        await trio.sleep(0.5)
        gate.resize(2)
        stats = gate.statistics()
        assert (stats.capacity, stats.in_use) == (2, 4)  # nobody dropped
        nursery.start_soon(hold, gate, "new", 1, log)
        await trio.sleep(0.1)
        assert gate.statistics().waiting == 1
    # in_use 4 -> 3 at t=1 and 3 -> 2 at t=2: still not under 2; 2 -> 1 at t=3 admits "new"
    assert log == [("new", 3)]
    assert trio.current_time() == 4
    assert gate.statistics().in_use == 0


async def test_raising_wakes_waiters_at_once_in_fair_order(autojump_clock):
    gate = floodgate.Gate("llm", 1, max_waiters=4, max_wait=10)
    log: list = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(hold, gate, "a", 5)
        await trio.lowlevel.checkpoint()
        for tenant in ("a", "a", "b"):
            nursery.start_soon(hold, gate, tenant, 1, log)
            await trio.lowlevel.checkpoint()
        await trio.sleep(1)
        gate.resize(3)  # two free slots: round-robin gives one to "a", then one to "b"
        await trio.sleep(0.5)
        assert sorted(log) == [("a", 1), ("b", 1)]
        assert gate.statistics().in_use == 3
    assert log[2] == ("a", 2)


async def test_zero_admits_no_one_until_raised(autojump_clock):
    gate = floodgate.Gate("llm", 2, max_waiters=4, max_wait=1.0)
    gate.resize(0)
    with pytest.raises(floodgate.Overloaded):
        await gate.acquire("a")
    assert trio.current_time() == 1.0
    log: list = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(hold, gate, "b", 1, log)
        await trio.sleep(0.25)
        gate.resize(1)
    assert log == [("b", 1.25)]


async def test_a_grant_by_resize_racing_with_cancellation_passes_the_slot_on(autojump_clock):
    gate = floodgate.Gate("g", 1, max_waiters=4, max_wait=10)
    gate.resize(0)
    got: list[str] = []

    async def waiter(tenant, scope_box):
        with trio.CancelScope() as scope:
            scope_box.append(scope)
            async with gate.slot(tenant):
                got.append(tenant)
                await trio.sleep(1)

    async with trio.open_nursery() as nursery:
        b_scope: list = []
        nursery.start_soon(waiter, "b", b_scope)
        await trio.sleep(0.01)
        nursery.start_soon(waiter, "c", [])
        await trio.sleep(0.01)
        b_scope[0].cancel()
        gate.resize(1)  # granted to "b", cancelled before it runs: "c" gets it
        assert dict(gate.statistics().in_use_by_tenant) == {"b": 1}
        await trio.sleep(0.5)
        assert dict(gate.statistics().in_use_by_tenant) == {"c": 1}
    assert got == ["c"]


def test_resize_validates_and_publishes_the_capacity():
    registry = CollectorRegistry()
    gate = floodgate.Gate("embed", 3, max_waiters=1, max_wait=1, registry=registry)
    with pytest.raises(ValueError, match="capacity"):
        gate.resize(-1)
    gate.resize(5)
    assert gate.capacity == 5 and gate.statistics().capacity == 5
    assert registry.get_sample_value("floodgate_gate_capacity", {"gate": "embed"}) == 5
    assert "in_use=0/5" in repr(gate)


@settings(max_examples=60, deadline=None)
@given(
    ops=st.lists(
        st.tuples(
            st.sampled_from([0.01, 0.1, 0.3]),  # gap since the previous operation
            st.one_of(st.integers(0, 4), st.sampled_from([0.05, 0.2, 1.0])),  # a resize, or a call's hold
        ),
        max_size=30,
    ),
)
def test_no_grant_ever_takes_in_use_over_the_capacity_of_the_moment(ops):
    gate = floodgate.Gate("g", 2, max_waiters=30, max_wait=math.inf)
    take = gate._take

    def checked_take(tenant: str) -> None:
        # At the moment of every grant (not when the grantee runs: a resize may come in between).
        assert gate.statistics().in_use < gate.capacity
        take(tenant)

    gate._take = checked_take  # type: ignore[method-assign]

    async def call(hold_for):
        async with gate.slot("t"):
            await trio.sleep(hold_for)

    async def main():
        async with trio.open_nursery() as nursery:
            for gap, op in ops:
                await trio.sleep(gap)
                if isinstance(op, int):
                    gate.resize(op)
                else:
                    nursery.start_soon(call, op)
                await trio.lowlevel.checkpoint()
            if gate.capacity == 0:
                gate.resize(1)  # let the stragglers through so the run ends
        stats = gate.statistics()
        assert (stats.in_use, stats.waiting) == (0, 0)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))

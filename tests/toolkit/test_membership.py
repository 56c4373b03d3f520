"""Dynamic shares on the virtual clock: join, leave, crash and a stale member (split brain).

Each "process" here is a set of gates under saturating load and a member running against one
`InMemoryMembershipStore`; every grant checks that the processes together never hold more
than the provider's global limit.
"""

from __future__ import annotations

from fractions import Fraction
from functools import partial

import floodgate
import pytest
import trio
import trio.lowlevel
from floodgate._membership import Membership, MembershipPolicy, MembershipView, divided_limits, service_totals
from floodgate._membership_run import run_membership
from floodgate._membership_store import InMemoryMembershipStore

from .conftest import budget_dict

GLOBAL = 16
TOTALS = {"llm": Fraction(GLOBAL)}
POLICY = MembershipPolicy(heartbeat=0.5, expiry=3.0)  # fences after 2 s without a heartbeat
CALL = 0.3  # each call holds its slot this long


class Cluster:
    """Processes sharing one store; checks the global limit at every grant."""

    def __init__(self, nursery: trio.Nursery):
        self.nursery = nursery
        self.store = InMemoryMembershipStore()
        self.gates: dict[str, floodgate.Gate] = {}
        self.members: dict[str, Membership] = {}
        self.scopes: dict[str, trio.CancelScope] = {}
        self.peak = 0
        self.calls = 0

    def in_use(self) -> int:
        return sum(gate.statistics().in_use for gate in self.gates.values())

    def capacity(self, name: str) -> int:
        return self.gates[name].capacity

    async def _load(self, gate: floodgate.Gate) -> None:
        while True:
            try:
                async with gate.slot():
                    self.calls += 1
                    self.peak = max(self.peak, self.in_use())
                    assert self.in_use() <= GLOBAL
                    await trio.sleep(CALL)
            except floodgate.Overloaded:
                await trio.sleep(0.05)

    def prepare(self, name: str) -> None:
        """The process's gate (sized from the budget, as at start-up) and its member."""
        self.gates[name] = floodgate.Gate(name, GLOBAL, max_waiters=64, max_wait=1.0)
        self.members[name] = Membership(name, "online", TOTALS, POLICY)

    async def _process(self, name: str, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        gate, member = self.gates[name], self.members[name]
        with trio.CancelScope() as scope:
            self.scopes[name] = scope
            async with trio.open_nursery() as inner:
                await inner.start(run_membership, self.store, member, {"llm": gate})
                for _ in range(GLOBAL + 4):  # more callers than the whole limit: always saturated
                    inner.start_soon(self._load, gate)
                task_status.started()

    async def start(self, name: str) -> None:
        if name not in self.gates:
            self.prepare(name)
        await self.nursery.start(self._process, name)

    def crash(self, name: str) -> None:
        """The process dies: no more heartbeats, its calls gone, and no clean leave."""
        self.store.partition(name)
        self.scopes[name].cancel()
        del self.gates[name]


async def settle_time(cluster: Cluster, want: dict[str, int], *, within: float = 10.0) -> float:
    """Wait until every named gate has the wanted capacity; return when that happened."""
    with trio.fail_after(within):
        while any(cluster.capacity(n) != c for n, c in want.items()):  # noqa: ASYNC110 (polled state)
            await trio.sleep(0.01)
    return trio.current_time()


async def test_a_lone_member_takes_the_whole_share_at_once(autojump_clock):
    async with trio.open_nursery() as nursery:
        cluster = Cluster(nursery)
        await cluster.start("a")
        assert trio.current_time() == 0
        assert cluster.capacity("a") == GLOBAL
        await trio.sleep(1)
        assert cluster.in_use() == GLOBAL
        nursery.cancel_scope.cancel()


async def test_a_joiner_holds_nothing_until_the_others_gave_their_share_back(autojump_clock):
    async with trio.open_nursery() as nursery:
        cluster = Cluster(nursery)
        await cluster.start("a")
        await trio.sleep(1.1)
        joined_at = trio.current_time()
        cluster.prepare("b")
        nursery.start_soon(cluster.start, "b")
        await trio.sleep(0.001)
        assert cluster.capacity("b") == 0
        # "a" lowers at its next heartbeat, then drains; "b" stays at 0 until "a" acknowledged
        while cluster.members["a"].statistics().acked_generation < 2:
            assert cluster.capacity("b") == 0
            await trio.sleep(0.01)
        settled = await settle_time(cluster, {"a": 8, "b": 8})
        assert settled - joined_at <= POLICY.heartbeat + CALL + 3 * POLICY.heartbeat / 4
        await trio.sleep(2)
        assert cluster.in_use() == GLOBAL  # the whole limit is used again, never more
        nursery.cancel_scope.cancel()
    assert cluster.peak == GLOBAL


async def test_three_members_divide_rounding_down(autojump_clock):
    async with trio.open_nursery() as nursery:
        cluster = Cluster(nursery)
        for name in "abc":
            await cluster.start(name)
        await settle_time(cluster, {"a": 5, "b": 5, "c": 5})
        stats = cluster.members["c"].statistics()
        assert (stats.live_members, dict(stats.targets)) == (3, {"llm": 5})
        nursery.cancel_scope.cancel()
    assert cluster.peak <= GLOBAL


async def test_a_member_that_leaves_cleanly_gives_its_share_at_the_next_heartbeat(autojump_clock):
    async with trio.open_nursery() as nursery:
        cluster = Cluster(nursery)
        await cluster.start("a")
        await cluster.start("b")
        await settle_time(cluster, {"a": 8, "b": 8})
        left_at = trio.current_time()
        cluster.scopes["b"].cancel()  # a clean stop: run_membership leaves the store
        await trio.lowlevel.checkpoint()
        del cluster.gates["b"]
        settled = await settle_time(cluster, {"a": GLOBAL})
        # the next heartbeat sees the new generation; the one after (a quarter interval) raises
        assert settled - left_at <= POLICY.heartbeat + POLICY.heartbeat / 4 + 0.01
        nursery.cancel_scope.cancel()


async def test_a_crashed_members_share_is_redistributed_after_its_lease(autojump_clock):
    async with trio.open_nursery() as nursery:
        cluster = Cluster(nursery)
        for name in "abc":
            await cluster.start(name)
        await settle_time(cluster, {"a": 5, "b": 5, "c": 5})
        await trio.sleep(3)
        lease_ends = cluster.store.expires_at("online", "c")
        cluster.crash("c")
        raised_at = await settle_time(cluster, {"a": 8})
        assert raised_at >= lease_ends  # never before its lease ended
        settled = await settle_time(cluster, {"a": 8, "b": 8})
        # noticed by each at its first heartbeat after the lease, acknowledged at once, raised
        # when each sees the other's ack (a quarter interval later at most)
        assert settled - lease_ends <= POLICY.heartbeat + POLICY.heartbeat / 4 + 0.01
        nursery.cancel_scope.cancel()
    assert cluster.peak <= GLOBAL


async def test_a_stale_member_fences_itself_before_the_others_take_its_share(autojump_clock):
    async with trio.open_nursery() as nursery:
        cluster = Cluster(nursery)
        await cluster.start("a")
        await cluster.start("b")
        await settle_time(cluster, {"a": 8, "b": 8})
        await trio.sleep(2)
        cut_at = trio.current_time()
        cluster.store.partition("b")  # "b" keeps running, but cannot reach the store
        fenced_at = await settle_time(cluster, {"b": 0})
        assert fenced_at - cut_at <= POLICY.fence + 0.01
        assert cluster.members["b"].statistics().fenced
        raised_at = await settle_time(cluster, {"a": GLOBAL})
        assert raised_at - fenced_at >= POLICY.expiry - POLICY.fence - POLICY.heartbeat
        await trio.sleep(2)
        assert cluster.capacity("b") == 0
        # Healed: "b" is a joiner again and waits for "a" to give half back.
        healed_at = trio.current_time()
        cluster.store.partition("b", cut=False)
        settled = await settle_time(cluster, {"a": 8, "b": 8})
        assert settled - healed_at <= 2 * POLICY.heartbeat + CALL
        nursery.cancel_scope.cancel()
    assert cluster.peak <= GLOBAL


async def test_the_first_heartbeat_must_succeed(autojump_clock):
    store = InMemoryMembershipStore()
    store.partition("a")
    gate = floodgate.Gate("llm", GLOBAL, max_waiters=1, max_wait=1)
    with pytest.raises(floodgate.DependencyError):
        await run_membership(store, Membership("a", "online", TOTALS, POLICY), {"llm": gate})
    assert gate.capacity == 0


# -- the state machine alone ---------------------------------------------------------------------


def test_lowering_is_immediate_raising_waits_for_every_other_ack():
    member = Membership("a", "online", TOTALS, POLICY)
    assert member.on_view(MembershipView(1, frozenset("a"), {"a": 0}), 0.0) == {"llm": 16}
    assert member.ack({"llm": 16}) == 1
    # "b" joined: lower at once, but do not ack while 16 calls are in flight
    assert member.on_view(MembershipView(2, frozenset("ab"), {"a": 1, "b": 0}), 1.0) == {"llm": 8}
    assert member.ack({"llm": 9}) == 1
    assert member.ack({"llm": 8}) == 2
    # "b" left again (gen 3): raise only when everyone left in it acknowledged — here, at once
    assert member.on_view(MembershipView(3, frozenset("a"), {"a": 2}), 2.0) == {"llm": 16}
    # a joiner's side: nothing until the others acknowledged its generation
    joiner = Membership("c", "online", TOTALS, POLICY)
    view = MembershipView(4, frozenset("ac"), {"a": 3, "c": 0})
    assert joiner.on_view(view, 3.0) == {"llm": 0}
    assert joiner.on_view(MembershipView(4, frozenset("ac"), {"a": 4, "c": 4}), 3.5) == {"llm": 8}


def test_an_old_answer_changes_nothing_and_a_counted_out_member_holds_nothing():
    member = Membership("a", "online", TOTALS, POLICY)
    member.on_view(MembershipView(2, frozenset("ab"), {"a": 2, "b": 2}), 0.0)
    assert member.limits == {"llm": 8}
    assert member.on_view(MembershipView(1, frozenset("a"), {"a": 1}), 0.1) == {"llm": 8}
    assert member.on_view(MembershipView(3, frozenset("b"), {"b": 3}), 0.2) == {"llm": 0}


def test_failures_fence_only_after_fence_after():
    member = Membership("a", "online", TOTALS, POLICY)
    member.on_view(MembershipView(1, frozenset("a"), {}), 10.0)
    assert member.on_failure(10.5) == {"llm": 16}
    assert member.on_failure(11.0) == {"llm": 16}
    assert member.check_fence(11.999) == {"llm": 16}
    assert member.check_fence(12.0) == {"llm": 0}
    assert member.statistics().fenced and member.statistics().heartbeats_failed == 2
    assert "fenced=True" in repr(member)


def test_divided_limits_round_down_and_nobody_live_gets_nothing():
    totals = {"llm": Fraction(16), "embed": Fraction(32) * Fraction(1, 4)}
    assert divided_limits(totals, 3) == {"llm": 5, "embed": 2}
    assert divided_limits(totals, 0) == {"llm": 0, "embed": 0}


def test_service_totals_cover_the_providers_only():
    budget = floodgate.parse_budget(budget_dict())
    assert service_totals(budget, "svc") == {"api": Fraction(2)}


@pytest.mark.parametrize(
    ("heartbeat", "expiry", "fence_after"),
    [(0, 2.5, None), (1.0, 2.0, None), (0.5, 2.5, 2.5), (0.5, 2.5, 0.4)],
)
def test_policy_validation(heartbeat, expiry, fence_after):
    with pytest.raises(ValueError):
        MembershipPolicy(heartbeat=heartbeat, expiry=expiry, fence_after=fence_after)


async def test_shares_go_through_the_given_resize_once_per_change(autojump_clock):
    store = InMemoryMembershipStore()
    gate = floodgate.Gate("llm", GLOBAL, max_waiters=1, max_wait=1)
    calls: list[tuple[str, int]] = []

    def resize(name: str, capacity: int) -> None:
        calls.append((name, capacity))
        gate.resize(capacity)

    async with trio.open_nursery() as nursery:
        member = Membership("a", "online", TOTALS, POLICY)
        await nursery.start(partial(run_membership, resize=resize), store, member, {"llm": gate})
        await trio.sleep(5)  # heartbeats with nothing changing apply nothing
        await store.heartbeat("online", "b", acked_generation=0, expiry=POLICY.expiry)
        await trio.sleep(POLICY.expiry + 1)  # "b" never acknowledged, then expired
        nursery.cancel_scope.cancel()
    assert calls == [("llm", 0), ("llm", GLOBAL), ("llm", 8), ("llm", GLOBAL)]


async def test_the_member_reports_its_state_as_metrics(autojump_clock):
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry()
    store = InMemoryMembershipStore()
    gate = floodgate.Gate("llm", GLOBAL, max_waiters=1, max_wait=1)
    value = registry.get_sample_value
    labels = {"service": "online"}
    async with trio.open_nursery() as nursery:
        member = Membership("a", "online", TOTALS, POLICY)
        await nursery.start(partial(run_membership, registry=registry), store, member, {"llm": gate})
        await store.heartbeat("online", "b", acked_generation=0, expiry=30)
        await trio.sleep(POLICY.heartbeat + 0.01)
        assert (
            value("floodgate_membership_live_members", labels),
            value("floodgate_membership_generation", labels),
        ) == (2, 2)
        store.partition("a")
        await trio.sleep(POLICY.fence + POLICY.heartbeat)
        assert value("floodgate_membership_fenced", labels) == 1
        assert value("floodgate_membership_heartbeats_total", {**labels, "outcome": "failed"}) >= 1
        nursery.cancel_scope.cancel()
    assert value("floodgate_membership_heartbeats_total", {**labels, "outcome": "ok"}) >= 2

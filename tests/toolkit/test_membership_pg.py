"""The membership store in the real PostgreSQL (migrations 0004, 0005): generations, acks, expiry, leave,
concurrent heartbeats, and two members dividing a limit through it."""

from __future__ import annotations

import json

import floodgate
import pytest
import trio
import trio_asyncio
from floodgate._membership import MembershipPolicy
from floodgate._membership_pg import open_pg_membership_store
from floodgate._membership_run import open_membership

from .conftest import budget_dict

pytestmark = pytest.mark.realtime


async def test_generations_follow_the_live_set(fresh_database_url):
    async with trio_asyncio.open_loop(), open_pg_membership_store(fresh_database_url) as store:
        view = await store.heartbeat("online", "a", acked_generation=0, expiry=5, info="host:1")
        assert (view.generation, view.members) == (1, frozenset("a"))
        view = await store.heartbeat("online", "a", acked_generation=1, expiry=5)
        assert (view.generation, dict(view.acked)) == (1, {"a": 1})  # a renewal changes nothing
        view = await store.heartbeat("online", "b", acked_generation=0, expiry=5)
        assert (view.generation, view.members, dict(view.acked)) == (2, frozenset("ab"), {"a": 1, "b": 0})
        await store.heartbeat("ingest_worker", "w", acked_generation=0, expiry=5)  # services apart
        live = {s.service: s for s in await store.live()}
        assert (live["online"].generation, live["online"].members, live["online"].acked) == (2, 2, 0)
        assert live["ingest_worker"].members == 1
        await store.leave("online", "b")
        view = await store.heartbeat("online", "a", acked_generation=2, expiry=5)
        assert (view.generation, view.members) == (3, frozenset("a"))


async def test_an_expired_member_is_counted_out_by_the_next_heartbeat(fresh_database_url):
    async with trio_asyncio.open_loop(), open_pg_membership_store(fresh_database_url) as store:
        await store.heartbeat("online", "a", acked_generation=0, expiry=5)
        await store.heartbeat("online", "short", acked_generation=0, expiry=0.2)
        await trio.sleep(0.3)
        assert {s.service: s.members for s in await store.live()} == {"online": 1}
        view = await store.heartbeat("online", "a", acked_generation=2, expiry=5)
        assert (view.generation, view.members) == (3, frozenset("a"))
        # it comes back: a new member of a new generation, with no ack of it yet
        view = await store.heartbeat("online", "short", acked_generation=2, expiry=5)
        assert (view.generation, view.members, view.acked["short"]) == (4, frozenset({"a", "short"}), 2)


async def test_concurrent_joins_make_one_consistent_sequence_of_generations(fresh_database_url):
    async with trio_asyncio.open_loop():
        views = []

        async def join(name: str) -> None:
            async with open_pg_membership_store(fresh_database_url) as store:
                views.append(await store.heartbeat("online", name, acked_generation=0, expiry=5))

        async with trio.open_nursery() as nursery:
            for i in range(8):
                nursery.start_soon(join, f"m{i}")
    # each join saw the members of its generation: one more member each time
    assert sorted((v.generation, len(v.members)) for v in views) == [(g, g) for g in range(1, 9)]


async def test_two_members_divide_the_limit_through_postgres(fresh_database_url):
    budget = floodgate.parse_budget(budget_dict(global_concurrency=9))
    policy = MembershipPolicy(heartbeat=0.1, expiry=0.5)
    gate_a = floodgate.Gate("api", 9, max_waiters=1, max_wait=1)
    gate_b = floodgate.Gate("api", 9, max_waiters=1, max_wait=1)
    async with trio_asyncio.open_loop(), open_pg_membership_store(fresh_database_url) as store:
        async with open_membership(store, budget=budget, service="svc", gates={"api": gate_a}, policy=policy):
            assert gate_a.capacity == 9
            async with open_membership(
                store, budget=budget, service="svc", gates={"api": gate_b}, policy=policy
            ) as member_b:
                # entering waited until "a" had given half back
                assert (gate_a.capacity, gate_b.capacity) == (4, 4)
                assert member_b.statistics().live_members == 2
            with trio.fail_after(2):
                while gate_a.capacity != 9:  # noqa: ASYNC110 (polled state)
                    await trio.sleep(0.02)


def test_plan_live_shows_the_division_in_force(fresh_database_url, repo_budget):
    import io

    import anyio
    from floodgate import cli

    async def register() -> None:
        async with open_pg_membership_store(fresh_database_url) as store:
            for member in ("a", "b", "c"):
                await store.heartbeat("online", member, acked_generation=0, expiry=30)

    anyio.run(register, backend="asyncio")
    out, err = io.StringIO(), io.StringIO()
    assert cli.main(["plan", "--live", fresh_database_url], out=out, err=err) == 0
    text = out.getvalue()
    assert "Live division" in text
    assert (
        "online llm" in text and "planned 1 -> 16 each; now 3 live -> 5 each (generation 3, changing)" in text
    )
    assert "ingest_worker embed" in text and "no live process" in text
    out = io.StringIO()
    assert cli.main(["plan", "--json", "--live", fresh_database_url], out=out, err=err) == 0
    rows = {(r["service"], r["dependency"]): r for r in json.loads(out.getvalue())["live"]}
    assert (rows["online", "search"]["live_processes"], rows["online", "search"]["live_limit"]) == (3, 10)


def test_plan_live_without_a_database_is_one_line():
    import io

    from floodgate import cli

    out = io.StringIO()
    assert (
        cli.main(["plan", "--live", "postgresql://nobody@127.0.0.1:1/none"], out=out, err=io.StringIO()) == 0
    )
    assert "Live division: not available (PoolUnavailable" in out.getvalue()

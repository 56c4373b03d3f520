"""The simulator's pure state: behaviour documents, latency sampling, limits, statistics."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.simulator import APIS, Behaviour, BehaviourError, Latency, Simulator
from services.simulator.settings import load_behaviour_file


def test_defaults_answer_at_once_and_never_fail() -> None:
    behaviour = Behaviour()
    for api in APIS:
        assert behaviour[api].to_dict() == {
            "latency": {"fixed_ms": 0.0},
            "rate_limit": {"rps": None, "burst": None, "max_concurrent": None},
            "error_rate": 0.0,
            "error_status": 503,
            "hang_rate": 0.0,
            "outage": False,
        }


def test_partial_updates_merge() -> None:
    b = Behaviour().merged({"chat": {"latency": {"p50_ms": 400, "p99_ms": 1200}, "rate_limit": {"rps": 5}}})
    b = b.merged({"chat": {"error_rate": 0.1, "rate_limit": {"max_concurrent": 4}}})
    b = b.merged({"chat": {"latency": {"p99_ms": 2000}}})  # tunes the log-normal, keeps p50
    chat = b["chat"].to_dict()
    assert chat["latency"] == {"p50_ms": 400.0, "p99_ms": 2000.0}
    assert chat["rate_limit"] == {"rps": 5.0, "burst": None, "max_concurrent": 4}
    assert chat["error_rate"] == 0.1
    assert b["search"] == Behaviour()["search"]
    # A fixed latency replaces the log-normal form, and null clears a limit.
    b = b.merged({"chat": {"latency": {"fixed_ms": 20}, "rate_limit": {"rps": None}}})
    assert b["chat"].latency.to_dict() == {"fixed_ms": 20.0}
    assert b["chat"].rate_limit.to_dict() == {"rps": None, "burst": None, "max_concurrent": 4}
    assert b.merged({"chat": {"rate_limit": None}})["chat"].rate_limit.max_concurrent is None


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"llm": {}}, "behaviour: unknown key(s) ['llm']"),
        ({"chat": {"latency": {"p50_ms": 500, "p99_ms": 100}}}, "chat.latency.p99_ms: must be >= p50_ms"),
        ({"chat": {"latency": {"fixed_ms": 5, "p50_ms": 5}}}, "chat.latency: give either fixed_ms"),
        ({"chat": {"latency": {"fixed_ms": -1}}}, "chat.latency.fixed_ms: must be >= 0"),
        ({"rerank": {"error_rate": 1.5}}, "rerank.error_rate: must be between 0.0 and 1.0"),
        ({"rerank": {"error_rate": 0.6, "hang_rate": 0.6}}, "rerank: error_rate + hang_rate"),
        ({"search": {"error_status": 404}}, "search.error_status: must be >= 500"),
        ({"fetch": {"rate_limit": {"rps": 0}}}, "fetch.rate_limit.rps: must be > 0"),
        (
            {"fetch": {"rate_limit": {"max_concurrent": 2.5}}},
            "fetch.rate_limit.max_concurrent: must be an integer",
        ),
        ({"embeddings": {"outage": "yes"}}, "embeddings.outage: must be true or false"),
        ({"embeddings": {"latncy": {}}}, "embeddings: unknown key(s) ['latncy']"),
        ([], "behaviour: must be an object"),
    ],
)
def test_invalid_behaviour_names_the_key(patch, message) -> None:
    with pytest.raises(BehaviourError) as info:
        Behaviour().merged(patch)
    assert str(info.value).startswith(message)


def test_update_is_all_or_nothing() -> None:
    sim = Simulator()
    with pytest.raises(BehaviourError):
        sim.update({"chat": {"error_rate": 0.5}, "search": {"error_rate": 2}})
    assert sim.behaviour == Behaviour()


def test_lognormal_latency_matches_p50_and_p99() -> None:
    latency = Latency.from_mapping({"p50_ms": 400, "p99_ms": 1200}, "x")
    rng = random.Random(7)
    samples = sorted(latency.sample(rng) for _ in range(20_000))
    assert samples[10_000] == pytest.approx(0.400, rel=0.03)
    assert samples[19_800] == pytest.approx(1.200, rel=0.08)
    assert Latency.from_mapping({"fixed_ms": 20}, "x").sample(rng) == 0.020


def test_token_bucket_refuses_with_exact_retry_after() -> None:
    sim = Simulator(Behaviour.from_mapping({"search": {"rate_limit": {"rps": 2}}}))
    now = 100.0
    first, second, third = (sim.arrive("search", "k", now) for _ in range(3))
    assert first.refusal is None and second.refusal is None
    assert third.refusal is not None
    assert (third.refusal.status, third.refusal.code) == (429, "rate_limit_exceeded")
    assert third.refusal.retry_after == pytest.approx(0.5)
    assert sim.arrive("search", "other-key", now).refusal is None  # limits are per key
    assert sim.arrive("search", "k", now + 0.25).refusal.retry_after == pytest.approx(0.25)
    assert sim.arrive("search", "k", now + 0.5).refusal is None


def test_max_concurrent_counts_admitted_requests_per_key() -> None:
    sim = Simulator(Behaviour.from_mapping({"chat": {"rate_limit": {"max_concurrent": 2}}}))
    a, b = sim.arrive("chat", "k", 0), sim.arrive("chat", "k", 0)
    refused = sim.arrive("chat", "k", 0)
    assert (
        refused.refusal is not None and refused.refusal.status == 429 and refused.refusal.retry_after == 1.0
    )
    sim.finish(refused, 429)
    sim.finish(a, 200)
    sim.finish(a, 200)  # idempotent
    c = sim.arrive("chat", "k", 0)
    assert c.refusal is None
    for t in (b, c):
        sim.finish(t, 200)
    stats = sim.statistics().apis["chat"]
    assert stats.total.requests == 4
    assert dict(stats.total.statuses) == {200: 3, 429: 1}
    assert stats.total.peak_concurrent == 3  # the refused request was in flight too
    assert stats.total.current_concurrent == 0
    assert stats.keys["k"].requests == 4


def test_outage_refuses_everything_with_503() -> None:
    sim = Simulator(Behaviour.from_mapping({"fetch": {"outage": True, "rate_limit": {"rps": 1}}}))
    for _ in range(3):
        arrival = sim.arrive("fetch", "k", 0)
        assert arrival.refusal is not None and arrival.refusal.status == 503
    assert sim.arrive("search", "k", 0).refusal is None


def test_seed_makes_draws_reproducible_and_apis_independent() -> None:
    behaviour = Behaviour.from_mapping(
        {
            api: {"latency": {"p50_ms": 100, "p99_ms": 900}, "error_rate": 0.3, "hang_rate": 0.1}
            for api in APIS
        }
    )

    def draws(seed: int, interleave: bool) -> list[tuple[float, str]]:
        sim = Simulator(behaviour, seed=seed)
        out = []
        for _ in range(50):
            t = sim.arrive("chat", "k", 0)
            out.append((t.delay, t.outcome))
            if interleave:
                sim.arrive("rerank", "k", 0)
        return out

    assert draws(1, False) == draws(1, True)
    assert draws(1, False) != draws(2, False)
    outcomes = {o for _, o in draws(1, False)}
    assert outcomes == {"ok", "error", "hang"}


def test_reset_restores_start_up_behaviour_and_clears_stats() -> None:
    start = Behaviour.from_mapping({"chat": {"latency": {"fixed_ms": 5}}})
    sim = Simulator(start, seed=3)
    in_flight = sim.arrive("chat", "k", 0)
    sim.update({"chat": {"outage": True}})
    sim.reset()
    assert sim.behaviour == start
    sim.finish(in_flight, 200)  # a request from before the reset does not touch the new counters
    stats = sim.statistics().apis["chat"]
    assert (stats.total.requests, stats.total.current_concurrent) == (0, 0)
    assert "requests=0" in repr(sim)


def test_statistics_are_frozen_snapshots() -> None:
    sim = Simulator()
    snapshot = sim.statistics()
    sim.finish(sim.arrive("embeddings", "k", 0), 200)
    assert snapshot.apis["embeddings"].total.requests == 0
    with pytest.raises(AttributeError):
        snapshot.seed = 1  # type: ignore[misc]


def test_the_example_behaviour_file_loads() -> None:
    path = Path(__file__).resolve().parents[2] / "services" / "simulator" / "behaviour.example.toml"
    behaviour = load_behaviour_file(path)
    assert behaviour["chat"].latency.p50_ms == 800
    assert behaviour["search"].rate_limit.max_concurrent == 10


@settings(max_examples=200, deadline=None)
@given(
    ops=st.lists(
        st.one_of(
            st.tuples(st.just("arrive"), st.sampled_from(["a", "b"]), st.floats(0, 0.5)),
            st.tuples(st.just("finish"), st.integers(0, 50), st.just(0.0)),
        ),
        max_size=60,
    ),
    rps=st.sampled_from([1.0, 2.5, 10.0]),
    max_concurrent=st.integers(1, 4),
)
def test_limits_hold_for_any_sequence(ops, rps, max_concurrent) -> None:
    """Per key: admitted in flight <= max_concurrent, and admissions over time <= burst + rps * t."""
    sim = Simulator(
        Behaviour.from_mapping({"chat": {"rate_limit": {"rps": rps, "max_concurrent": max_concurrent}}})
    )
    now = 0.0
    open_arrivals: list = []
    admitted_in_flight = {"a": 0, "b": 0}
    admissions = {"a": 0, "b": 0}
    burst = math.ceil(rps)
    for op, arg, dt in ops:
        if op == "arrive":
            now += dt
            arrival = sim.arrive("chat", arg, now)
            if arrival.refusal is None:
                admitted_in_flight[arg] += 1
                admissions[arg] += 1
                assert admitted_in_flight[arg] <= max_concurrent
                assert admissions[arg] <= burst + rps * now + 1e-9
            else:
                assert arrival.refusal.status == 429 and arrival.refusal.retry_after > 0
            open_arrivals.append(arrival)
        elif open_arrivals:
            arrival = open_arrivals.pop(arg % len(open_arrivals))
            if arrival.refusal is None:
                admitted_in_flight[arrival.key] -= 1
            sim.finish(arrival, 200 if arrival.refusal is None else 429)
        total = sim.statistics().apis["chat"].total
        assert total.current_concurrent == len(open_arrivals)
        assert total.peak_concurrent >= total.current_concurrent

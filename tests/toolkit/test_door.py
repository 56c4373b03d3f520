"""The door: a limit that never waits — admits up to its limit, refuses the rest at once, and (adaptive)
admits fewer while completed requests are slower than their recent best. Time is trio's virtual clock."""

from __future__ import annotations

import dataclasses

import floodgate
import pytest
import trio
from prometheus_client import CollectorRegistry


def test_a_static_door_admits_up_to_its_ceiling_and_refuses_the_rest_at_once() -> None:
    registry = CollectorRegistry()
    door = floodgate.Door("search", 2, dependency="search", retry_after=2.0, detail="why", registry=registry)
    assert door.adaptive is None and door.limit == door.ceiling == 2
    assert door.try_enter() and door.try_enter()
    assert not door.try_enter()  # full: an answer, no exception, no wait
    with pytest.raises(floodgate.Overloaded) as refused:
        door.enter()
    assert refused.value.dependency == "search"
    assert refused.value.retry_after == 2.0
    assert refused.value.reason == "search is at its limit of 2 requests in flight (why)"
    door.leave()
    door.enter()
    stats = door.statistics()
    assert stats == floodgate.DoorStatistics(
        "search",
        in_flight=2,
        limit=2,
        ceiling=2,
        admitted_total=3,
        refused_total=2,
        in_flight_by_tenant={floodgate.DEFAULT_TENANT: 2},
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.in_flight = 0  # type: ignore[misc]
    assert repr(door) == "<Door 'search' static in_flight=2/2 admitted=3 refused=2>"
    value = registry.get_sample_value
    assert value("floodgate_gate_in_use", {"gate": "admission_search"}) == 2
    assert value("floodgate_gate_capacity", {"gate": "admission_search"}) == 2
    assert value("floodgate_rejections_total", {"dependency": "admission_search", "reason": "admission"}) == 2
    door.leave()
    door.leave()
    assert door.in_flight == 0
    with pytest.raises(RuntimeError, match="leave\\(\\) by tenant 'default' without enter\\(\\)"):
        door.leave()


def test_a_door_with_a_ceiling_of_zero_refuses_everything() -> None:
    door = floodgate.Door("closed", 0)
    assert not door.try_enter()
    with pytest.raises(floodgate.Overloaded, match="closed is at its limit of 0 requests in flight"):
        door.enter()
    assert door.statistics().refused_total == 2


def test_the_door_checks_its_arguments() -> None:
    with pytest.raises(ValueError, match="ceiling"):
        floodgate.Door("x", -1)
    with pytest.raises(ValueError, match="ceiling"):
        floodgate.Door("x", 4, adaptive=floodgate.AdaptiveLimit(5))


async def test_an_adaptive_door_admits_fewer_while_requests_are_slow(autojump_clock) -> None:
    registry = CollectorRegistry()
    adaptive = floodgate.AdaptiveLimit(10, floor=2, interval=1.0, min_samples=10)
    door = floodgate.Door("search", 10, adaptive=adaptive, registry=registry)

    async def request(latency: float) -> None:
        door.enter()
        started = trio.current_time()
        try:
            await trio.sleep(latency)
        finally:
            door.leave()
        now = trio.current_time()
        door.observe(now - started, now)

    t0 = trio.current_time()

    async def round_at(start: float, latency: float) -> None:
        await trio.sleep_until(t0 + start)
        async with trio.open_nursery() as nursery:
            for _ in range(5):  # half the door in use: enough to let the limit grow
                nursery.start_soon(request, latency)

    await round_at(0.0, 0.1)
    await round_at(1.0, 0.1)  # t = 1.1: ten samples over a second: the baseline, 0.1 s
    assert door.limit == 10 and adaptive.baseline == pytest.approx(0.1)
    await round_at(2.0, 0.5)
    await round_at(3.0, 0.5)  # t = 3.5: the next ten, five times slower than the baseline
    # target = limit x max(0.5, 1.2 x 0.1 / 0.5) = 5; limit = 10 + 0.2 x (5 - 10) = 9
    assert door.limit == 9
    assert door.statistics() == floodgate.DoorStatistics(
        "search", in_flight=0, limit=9, ceiling=10, admitted_total=20, refused_total=0
    )
    assert registry.get_sample_value("floodgate_gate_capacity", {"gate": "admission_search"}) == 9
    assert repr(door) == "<Door 'search' adaptive in_flight=0/9 admitted=20 refused=0>"


def test_an_adaptive_door_reads_the_bottleneck_queue_on_each_entry_a_static_one_never() -> None:
    reads: list[int] = []

    def waiting() -> int:
        reads.append(1)
        return 3

    adaptive = floodgate.AdaptiveLimit(4, queue_allowance=1.0)
    door = floodgate.Door("llm", 4, adaptive=adaptive, waiting=waiting)
    door.try_enter()
    door.try_enter()
    assert len(reads) == 2
    static = floodgate.Door("llm", 4, waiting=waiting)
    static.try_enter()
    assert len(reads) == 2
    static.observe(0.1, 10.0)  # a static door has nothing to learn
    assert static.limit == 4


def test_a_resized_door_keeps_who_is_inside_and_admits_under_the_new_ceiling() -> None:
    """A lower ceiling turns no one out: entries wait until enough have left, as `Gate.resize`."""
    registry = CollectorRegistry()
    door = floodgate.Door("llm_door", 4, registry=registry)
    for _ in range(4):
        door.enter()
    door.resize(2)
    assert (door.in_flight, door.limit, door.ceiling) == (4, 2, 2)
    assert registry.get_sample_value("floodgate_gate_capacity", {"gate": "admission_llm_door"}) == 2
    door.leave()
    door.leave()
    assert not door.try_enter()  # 2 inside: full at the new ceiling
    door.leave()
    assert door.try_enter()
    door.resize(0)  # no share: everyone refused, the one inside stays
    assert not door.try_enter() and door.in_flight == 2
    with pytest.raises(ValueError, match="ceiling"):
        door.resize(-1)


def test_a_resized_adaptive_door_moves_its_learned_limit_and_floor() -> None:
    adaptive = floodgate.AdaptiveLimit(26, floor=7, smoothing=1.0)
    door = floodgate.Door("deal_brain", 26, adaptive=adaptive)
    door.resize(13, floor=4)
    assert (door.limit, door.ceiling, adaptive.ceiling, adaptive.floor) == (13, 13, 13, 4)
    door.resize(0)  # the floor follows a ceiling below it
    assert (door.limit, adaptive.floor) == (0, 0)
    assert not door.try_enter()
    door.resize(26)  # by default the floor it had, at least 1
    assert (door.limit, adaptive.floor) == (26, 1)
    door.resize(26, floor=7)
    assert (door.limit, adaptive.floor) == (26, 7)

"""The open-loop scheduler of `floodgate loadtest` (floodgate/_load_schedule.py), on trio's virtual clock:
exact arrival times, latency from the scheduled start, lateness, drops at max_in_flight, the end."""

from __future__ import annotations

import math

import pytest
import trio
from floodgate._load_schedule import (
    Arrival,
    OpenLoop,
    Stage,
    Validity,
    constant_rate,
    nearest_rank,
    ramping_rate,
)

# -- the schedule ------------------------------------------------------------------------------------


def test_constant_rate_starts_one_request_every_one_over_rate_seconds():
    schedule = constant_rate(10, 1.0)
    assert list(schedule.offsets()) == [i / 10 for i in range(10)]
    assert schedule.expected_count == 10
    assert schedule.duration == 1.0
    assert schedule.describe() == "constant 10/s for 1s"


def test_ramping_rate_follows_the_integral_of_a_linear_rate():
    # 0 -> 10/s over 10 s: n arrivals are expected by t = sqrt(2n), so 50 arrivals (n = 0..49);
    # then 10/s for 2 s: one each 0.1 s from 10.0, 20 more.
    schedule = ramping_rate(0, [Stage(10, 10.0), Stage(10, 2.0)])
    offsets = list(schedule.offsets())
    assert offsets[:50] == pytest.approx([math.sqrt(2 * n) for n in range(50)], abs=1e-9)
    assert offsets[50:] == pytest.approx([10 + i / 10 for i in range(20)], abs=1e-9)
    assert len(offsets) == schedule.expected_count == 70
    assert schedule.peak_rate == 10
    assert offsets == sorted(offsets)


def test_ramping_down_and_a_pause_at_rate_zero():
    # 10 -> 0 over 10 s: n arrivals by t where 10t - t^2/2 = n; 50 in all, none during the pause,
    # then 0 -> 2/s over 1 s: 1 expected, the first at the pause's end.
    schedule = ramping_rate(10, [Stage(0, 10.0), Stage(0, 5.0), Stage(2, 1.0)])
    offsets = list(schedule.offsets())
    down = [10 - math.sqrt(100 - 2 * n) for n in range(50)]
    assert offsets[:50] == pytest.approx(down, abs=1e-9)
    assert offsets[50:] == [15.0]
    assert schedule.expected_count == 51


@pytest.mark.parametrize(
    "make",
    [
        lambda: constant_rate(0, 1.0),
        lambda: constant_rate(5, 0),
        lambda: ramping_rate(1, []),
        lambda: ramping_rate(-1, [Stage(1, 1.0)]),
        lambda: Stage(-1, 1.0),
        lambda: Stage(1, math.inf),
    ],
)
def test_impossible_schedules_are_refused(make):
    with pytest.raises(ValueError):
        make()


# -- the run -----------------------------------------------------------------------------------------


async def test_requests_start_at_their_scheduled_times_and_latency_counts_from_them(autojump_clock):
    async def send(arrival: Arrival) -> str:
        await trio.sleep(0.5)  # a slow answer: five requests overlap
        return f"r{arrival.index}"

    loop = OpenLoop(constant_rate(10, 1.0), send, max_in_flight=100, grace=1.0)
    start = trio.current_time()
    run = await loop.run()
    assert run.start == start
    assert [r.scheduled for r in run.records] == [start + i / 10 for i in range(10)]
    assert run.lateness == [0.0] * 10
    assert run.latencies == [pytest.approx(0.5)] * 10
    assert [r.result for r in run.records] == [f"r{i}" for i in range(10)]
    # the last request, scheduled at 0.9 s, ends at 1.4 s: within the grace period
    assert trio.current_time() == pytest.approx(start + 1.4)
    assert run.valid and run.reason is None
    assert run.statistics.completed == 10 and run.statistics.dropped == 0


async def test_a_held_up_generator_starts_requests_late_and_the_run_is_invalid(autojump_clock):
    async def send(arrival: Arrival) -> None:
        if arrival.index == 0:
            autojump_clock.jump(0.25)  # the loop is held up (a CPU-bound task) for 250 ms
        await trio.sleep(0.5)

    loop = OpenLoop(constant_rate(10, 1.0), send, max_in_flight=100, grace=1.0)
    run = await loop.run()
    start = run.start
    # requests 1 and 2 were due at 0.1 s and 0.2 s; both start at 0.25 s
    assert [r.started - start for r in run.records[:4]] == pytest.approx([0.0, 0.25, 0.25, 0.3])
    assert run.lateness[:4] == pytest.approx([0.0, 0.15, 0.05, 0.0])
    # latency counts from the schedule: the 150 ms the generator lost is in it
    assert run.latencies[1] == pytest.approx(0.65)
    assert run.latencies[2] == pytest.approx(0.55)
    assert not run.valid
    assert run.reason is not None
    assert "p99 lateness 150.0ms > 10ms" in run.reason
    assert "1 request(s) started more than 100ms late" in run.reason


async def test_a_request_due_while_max_in_flight_run_is_dropped_not_queued(autojump_clock):
    async def send(arrival: Arrival) -> None:
        await trio.sleep(0.35)

    loop = OpenLoop(constant_rate(10, 1.0), send, max_in_flight=2, grace=1.0)
    run = await loop.run()
    start = run.start
    # 0.0 and 0.1 run until 0.35 and 0.45: 0.2 and 0.3 find both slots busy, and so on
    assert [r.scheduled - start for r in run.records] == pytest.approx([0.0, 0.1, 0.4, 0.5, 0.8, 0.9])
    assert [t - start for t in run.dropped] == pytest.approx([0.2, 0.3, 0.6, 0.7])
    assert run.lateness == [0.0] * 6  # a dropped request never starts late: it does not start
    assert run.statistics.scheduled == 10 and run.statistics.dropped == 4
    assert not run.valid
    assert run.reason == "4 of 10 scheduled requests dropped (40.0% > 0.0%): max_in_flight were all busy"

    tolerant = OpenLoop(
        constant_rate(10, 1.0), send, max_in_flight=2, grace=1.0, validity=Validity(max_dropped_fraction=0.5)
    )
    assert (await tolerant.run()).valid


async def test_requests_still_running_after_the_grace_period_are_cancelled(autojump_clock):
    cancelled = []

    async def send(arrival: Arrival) -> None:
        try:
            await trio.sleep(10)
        except trio.Cancelled:
            cancelled.append(arrival.index)
            raise

    loop = OpenLoop(constant_rate(4, 1.0), send, max_in_flight=10, grace=0.5)
    start = trio.current_time()
    run = await loop.run()
    assert trio.current_time() == start + 1.5  # the schedule's end plus the grace period, exactly
    assert sorted(cancelled) == [0, 1, 2, 3]
    assert all(r.interrupted and r.latency is None for r in run.records)
    assert run.latencies == []
    assert run.statistics.interrupted == 4 and run.statistics.in_flight == 0
    assert run.valid  # the system was slow, not the generator


async def test_send_errors_are_recorded_with_their_latency(autojump_clock):
    async def send(arrival: Arrival) -> None:
        await trio.sleep(0.2)
        if arrival.index % 2:
            raise ConnectionError("reset")

    run = await OpenLoop(constant_rate(5, 1.0), send, max_in_flight=10, grace=1.0).run()
    assert [r.error for r in run.records] == [None, "ConnectionError"] * 2 + [None]
    assert run.latencies == [pytest.approx(0.2)] * 5
    assert run.statistics.failed == 2 and run.statistics.completed == 3


async def test_cancelling_the_run_cancels_every_request_and_leaves_nothing_in_flight(autojump_clock):
    async def send(arrival: Arrival) -> None:
        await trio.sleep(10)

    loop = OpenLoop(constant_rate(10, 5.0), send, max_in_flight=100)
    with trio.move_on_after(0.55):
        await loop.run()
    stats = loop.statistics()
    assert stats.scheduled == 6 and stats.in_flight == 0
    assert stats.interrupted == 6 and stats.started == 6
    assert "scheduled=6 in_flight=0/100 dropped=0" in repr(loop)


def test_validity_limits():
    strict = Validity(max_late_p99=0.010, max_late=0.050)
    assert strict.judge([0.0] * 100, scheduled=100, dropped=0) is None
    # one request 40 ms late in 100: p99 is the 99th value (0), under both limits
    assert strict.judge([0.0] * 99 + [0.04], scheduled=100, dropped=0) is None
    assert "started more than 50ms late" in strict.judge([0.0] * 99 + [0.06], scheduled=100, dropped=0)
    assert "p99 lateness 20.0ms" in strict.judge([0.0] * 98 + [0.02] * 2, scheduled=100, dropped=0)
    assert Validity(max_late=None).judge([0.0] * 99 + [5.0], scheduled=100, dropped=0) is None
    assert Validity(max_dropped_fraction=0.01).judge([], scheduled=100, dropped=1) is None
    assert "2 of 100" in Validity(max_dropped_fraction=0.01).judge([], scheduled=100, dropped=2)


def test_nearest_rank_is_a_measured_value():
    assert nearest_rank([3.0, 1.0, 2.0], 50) == 2.0
    assert nearest_rank([1.0, 2.0], 99) == 2.0
    assert math.isnan(nearest_rank([], 99))


@pytest.mark.realtime
def test_the_scheduler_runs_under_asyncio_too():
    import anyio.lowlevel

    async def send(arrival: Arrival) -> int:
        await anyio.lowlevel.checkpoint()
        return arrival.index

    async def main():
        return await OpenLoop(constant_rate(100, 0.05), send, max_in_flight=10, grace=5.0).run()

    run = anyio.run(main, backend="asyncio")
    # counts only: real time decides lateness, not the outcome of 5 instant requests
    assert [r.result for r in run.records] == [0, 1, 2, 3, 4]
    assert run.statistics.completed == 5 and run.dropped == ()

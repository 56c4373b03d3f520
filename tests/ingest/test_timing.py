"""The worker's timing rules on trio's virtual clock: backoff, lease extension, claim pacing."""

import pytest
import trio

from services.ingest import ClaimPacer, LeaseClock, RetryBackoff, StopReason, keep_lease
from services.ingest._queue import Heartbeat


def test_backoff_doubles_to_the_cap_with_equal_jitter() -> None:
    backoff = RetryBackoff(base=2.0, cap=30.0)
    assert [backoff.ceiling(n) for n in range(1, 7)] == [2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert backoff.delay(1, rng=lambda: 0.0) == 1.0  # never an immediate retry
    assert backoff.delay(1, rng=lambda: 0.999999) == pytest.approx(2.0)
    assert backoff.delay(4, rng=lambda: 0.5) == 12.0
    assert backoff.ceiling(10_000) == 30.0  # no overflow for absurd attempt counts
    with pytest.raises(ValueError):
        backoff.ceiling(0)
    with pytest.raises(ValueError):
        RetryBackoff(base=5, cap=1)


def test_claim_pacer() -> None:
    pacer = ClaimPacer(poll_interval=0.5, error_base=0.1, max_error_delay=1.0)
    assert pacer.after_claim(claimed=8, asked=8) == 0.0  # full batch: claim again at once
    assert pacer.after_claim(claimed=3, asked=8) == 0.5  # partial: wait for NOTIFY or the poll
    assert [pacer.after_error() for _ in range(6)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert pacer.consecutive_errors == 6
    pacer.after_claim(claimed=0, asked=8)
    assert pacer.after_error() == 0.1  # a success resets the error backoff


def test_lease_clock_schedule() -> None:
    lease = LeaseClock.granted(duration=9.0, sent_at=100.0)
    assert lease.expires_at == 109.0
    assert lease.next_heartbeat_at() == 103.0
    lease.extended(sent_at=103.5)
    assert (lease.expires_at, lease.next_heartbeat_at()) == (112.5, 106.5)
    assert lease.retry_heartbeat_at(111.0) == 111.75
    assert lease.retry_heartbeat_at(112.4) == 112.5  # never past the expiry
    assert not lease.lost(112.49) and lease.lost(112.5)


async def test_keep_lease_extends_on_schedule(autojump_clock: trio.abc.Clock) -> None:
    start = trio.current_time()
    lease = LeaseClock.granted(duration=3.0, sent_at=start)
    beats: list[float] = []
    stopped: list[StopReason] = []

    async def beat() -> Heartbeat:
        beats.append(trio.current_time() - start)
        await trio.sleep(0.1)  # the database takes 100 ms
        return Heartbeat(alive=True, cancel_requested=len(beats) == 4)

    await keep_lease(lease, beat, stopped.append)
    # every duration/3, counted from when the previous heartbeat was *sent*
    assert beats == [1.0, 2.0, 3.0, 4.0]
    assert stopped == [StopReason.CANCEL_REQUESTED]
    assert trio.current_time() - start == pytest.approx(4.1)


async def test_keep_lease_gives_up_when_the_database_is_away(autojump_clock: trio.abc.Clock) -> None:
    start = trio.current_time()
    lease = LeaseClock.granted(duration=3.0, sent_at=start)
    attempts: list[float] = []
    stopped: list[StopReason] = []

    async def beat() -> Heartbeat:
        attempts.append(round(trio.current_time() - start, 6))
        raise OSError("connection refused")

    await keep_lease(lease, beat, stopped.append)
    assert stopped == [StopReason.LEASE_LOST]
    # first try at 1.0, then every interval/4 = 0.25 s until the expiry at 3.0
    assert attempts == [1.0 + 0.25 * i for i in range(8)] + [3.0]
    assert trio.current_time() - start == 3.0  # stops exactly when its own view of the lease ends


async def test_keep_lease_a_hanging_heartbeat_is_bounded_by_the_expiry(autojump_clock: trio.abc.Clock) -> None:
    start = trio.current_time()
    lease = LeaseClock.granted(duration=3.0, sent_at=start)
    stopped: list[StopReason] = []

    async def hang() -> Heartbeat:
        await trio.sleep_forever()
        raise AssertionError

    await keep_lease(lease, hang, stopped.append)
    assert stopped == [StopReason.LEASE_LOST]
    assert trio.current_time() - start == 3.0


async def test_keep_lease_stops_when_the_lease_was_taken(autojump_clock: trio.abc.Clock) -> None:
    lease = LeaseClock.granted(duration=3.0, sent_at=trio.current_time())
    stopped: list[StopReason] = []

    async def gone() -> Heartbeat:
        return Heartbeat(alive=False, cancel_requested=False)

    await keep_lease(lease, gone, stopped.append)
    assert stopped == [StopReason.LEASE_LOST]


async def test_keep_lease_recovers_after_a_failed_heartbeat(autojump_clock: trio.abc.Clock) -> None:
    start = trio.current_time()
    lease = LeaseClock.granted(duration=3.0, sent_at=start)
    calls: list[float] = []

    async def flaky() -> Heartbeat:
        calls.append(trio.current_time() - start)
        if len(calls) == 1:
            raise OSError("reset")
        return Heartbeat(alive=len(calls) < 3, cancel_requested=False)

    stopped: list[StopReason] = []
    await keep_lease(lease, flaky, stopped.append)
    # 1.0 fails, retried at 1.25 (ok: lease now to 4.25), next due 2.25 -> not alive -> stop
    assert calls == [1.0, 1.25, 2.25]
    assert stopped == [StopReason.LEASE_LOST]

"""The worker's timing rules on trio's virtual clock: backoff, lease extension, claim pacing."""

import pytest
import trio

from services.ingest import (
    CallSpacer,
    CallSpacerStatistics,
    ClaimPacer,
    LeaseClock,
    RetryBackoff,
    StopReason,
    keep_leases,
)
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


def test_after_a_provider_429_the_retry_is_never_earlier_than_it_asked() -> None:
    backoff = RetryBackoff(base=2.0, cap=30.0, retry_after_jitter=0.1)
    # the provider asked for 30 s: the backoff's 1-2 s would be too early
    for draw in (0.0, 0.5, 0.999):
        delay = backoff.delay(1, provider_retry_after=30.0, rng=lambda d=draw: d)
        assert 30.0 <= delay <= 33.0
    assert backoff.delay(1, provider_retry_after=30.0, rng=lambda: 0.5) == 31.5
    # a provider wait shorter than the backoff changes nothing: the backoff was later anyway
    assert backoff.delay(4, provider_retry_after=1.0, rng=lambda: 0.5) == 12.0
    assert backoff.delay(1, provider_retry_after=None, rng=lambda: 0.0) == 1.0
    with pytest.raises(ValueError):
        RetryBackoff(retry_after_jitter=2.0)


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
    lease.heartbeat_failed(111.0)
    assert lease.next_heartbeat_at() == 111.75
    lease.heartbeat_failed(112.4)
    assert lease.next_heartbeat_at() == 112.5  # never past the expiry
    assert not lease.lost(112.49) and lease.lost(112.5)


class Leases:
    """A worker's running jobs as keep_leases sees them, with a scripted database."""

    def __init__(self, **leases: LeaseClock) -> None:
        self.leases = dict(leases)
        self.stopped: dict[str, StopReason] = {}
        self.sent: list[tuple[float, list[str]]] = []
        self.added = trio.Event()

    def live(self) -> dict[str, LeaseClock]:
        return {k: v for k, v in self.leases.items() if k not in self.stopped}

    def stop(self, key: str, reason: StopReason) -> None:
        self.stopped.setdefault(key, reason)

    async def idle(self) -> None:
        await self.added.wait()
        self.added = trio.Event()


async def run_keeper(leases: Leases, send, until: float) -> None:
    async def recorded(keys: list[str]):
        leases.sent.append((round(trio.current_time(), 6), sorted(keys)))
        return await send(keys)

    with trio.move_on_at(until):
        await keep_leases(leases.live, recorded, leases.stop, idle=leases.idle)


async def test_keep_leases_extends_on_schedule_in_one_statement(autojump_clock: trio.abc.Clock) -> None:
    t0 = trio.current_time()
    leases = Leases(
        a=LeaseClock.granted(duration=3.0, sent_at=t0), b=LeaseClock.granted(duration=3.0, sent_at=t0 + 0.4)
    )

    async def db(keys: list[str]) -> dict[str, Heartbeat]:
        await trio.sleep(0.1)  # the database takes 100 ms
        return {k: Heartbeat(alive=True, cancel_requested=False) for k in keys}

    await run_keeper(leases, db, until=t0 + 3.5)
    offsets = [(round(t - t0, 6), keys) for t, keys in leases.sent]
    # a is due at 1.0; b (due 1.4) is within half an interval, so it rides along; then every 1.0,
    # counted from when the previous heartbeat was *sent*
    assert offsets == [(1.0, ["a", "b"]), (2.0, ["a", "b"]), (3.0, ["a", "b"])]
    assert leases.stopped == {}
    assert leases.leases["b"].expires_at == pytest.approx(t0 + 6.0)


async def test_keep_leases_stops_a_job_on_cancel_request_or_lost_lease(
    autojump_clock: trio.abc.Clock,
) -> None:
    t0 = trio.current_time()
    leases = Leases(**{k: LeaseClock.granted(duration=3.0, sent_at=t0) for k in ("keep", "cancel", "taken")})

    async def db(keys: list[str]) -> dict[str, Heartbeat]:
        beats = {"keep": Heartbeat(True, False), "cancel": Heartbeat(True, True)}
        return {k: beats[k] for k in keys if k in beats}  # "taken" is no longer ours

    await run_keeper(leases, db, until=t0 + 2.5)
    assert leases.stopped == {"cancel": StopReason.CANCEL_REQUESTED, "taken": StopReason.LEASE_LOST}
    assert [keys for _, keys in leases.sent] == [["cancel", "keep", "taken"], ["keep"]]


async def test_keep_leases_gives_up_when_the_database_is_away(autojump_clock: trio.abc.Clock) -> None:
    t0 = trio.current_time()
    leases = Leases(a=LeaseClock.granted(duration=3.0, sent_at=t0))

    async def down(keys: list[str]) -> dict[str, Heartbeat]:
        raise OSError("connection refused")

    stopped_at: list[float] = []
    original = leases.stop
    leases.stop = lambda key, reason: (stopped_at.append(trio.current_time() - t0), original(key, reason))  # type: ignore[method-assign]
    await run_keeper(leases, down, until=t0 + 10)
    assert leases.stopped == {"a": StopReason.LEASE_LOST}
    # first try at 1.0, then every interval/4 = 0.25 s; stopped when its own view of the lease ends
    assert [round(t - t0, 6) for t, _ in leases.sent] == [1.0 + 0.25 * i for i in range(8)]
    assert stopped_at == [3.0]


async def test_keep_leases_a_hanging_heartbeat_is_bounded_by_the_expiry(
    autojump_clock: trio.abc.Clock,
) -> None:
    t0 = trio.current_time()
    leases = Leases(a=LeaseClock.granted(duration=3.0, sent_at=t0))
    stopped_at: list[float] = []

    async def hang(keys: list[str]) -> dict[str, Heartbeat]:
        await trio.sleep_forever()
        raise AssertionError

    original = leases.stop

    def stop(key: str, reason: StopReason) -> None:
        stopped_at.append(trio.current_time() - t0)
        original(key, reason)

    leases.stop = stop  # type: ignore[method-assign]
    await run_keeper(leases, hang, until=t0 + 10)
    assert leases.stopped == {"a": StopReason.LEASE_LOST} and stopped_at == [3.0]


async def test_keep_leases_recovers_after_a_failed_heartbeat_and_waits_for_jobs(
    autojump_clock: trio.abc.Clock,
) -> None:
    t0 = trio.current_time()
    leases = Leases()
    calls = 0

    async def flaky(keys: list[str]) -> dict[str, Heartbeat]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise OSError("reset")
        return {k: Heartbeat(True, False) for k in keys}

    async def add_later() -> None:
        await trio.sleep(5)  # the keeper idles (no job) until then
        leases.leases["a"] = LeaseClock.granted(duration=3.0, sent_at=trio.current_time())
        leases.added.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(add_later)
        await run_keeper(leases, flaky, until=t0 + 7.5)
    # 6.0 fails, retried at 6.25 (ok: lease now ends at 9.25), next due 7.25
    assert [round(t - t0, 6) for t, _ in leases.sent] == [6.0, 6.25, 7.25]
    assert leases.stopped == {}


def test_call_spacer_spreads_starts_over_the_observed_duration() -> None:
    spacer = CallSpacer(slots=4, fraction=0.8, smoothing=0.5)
    # No observation yet: no gap, calls start at once.
    assert [spacer.reserve(10.0) for _ in range(3)] == [10.0, 10.0, 10.0]
    spacer.observed(1.0)
    assert spacer.gap == pytest.approx(0.2)  # 0.8 x 1.0 s / 4 slots
    # A burst of four is spread 0.2 s apart; a later caller never starts before "now".
    assert [spacer.reserve(20.0) for _ in range(4)] == pytest.approx([20.0, 20.2, 20.4, 20.6])
    assert spacer.reserve(30.0) == 30.0
    spacer.observed(2.0)  # exponentially weighted: 1.0 + 0.5 x (2.0 - 1.0)
    assert spacer.statistics() == CallSpacerStatistics(mean_duration=1.5, gap=pytest.approx(0.3), delayed=3)
    with pytest.raises(ValueError):
        CallSpacer(slots=0)


async def test_pipeline_spaces_embed_calls_and_keeps_the_limit(autojump_clock: trio.abc.Clock) -> None:
    """Eight batches, a limit of 4 and calls of 1 s: the first four leave together (nothing observed
    yet), the next four leave 0.2 s apart as the first ones return, never more than 4 in flight."""
    from services.ingest import ChunkingConfig, JobPipeline, JobState, PipelineConfig
    from services.ingest._queue import ClaimedJob, Fence, Settled

    starts: list[float] = []
    in_flight = peak = 0

    class SlowEmbedder:
        async def embed(self, texts, *, tenant, endpoint):
            nonlocal in_flight, peak
            starts.append(trio.current_time())
            in_flight += 1
            peak = max(peak, in_flight)
            await trio.sleep(1.0)
            in_flight -= 1
            return [[0.0] * 3 for _ in texts]

    class Db:
        async def run(self, fn, *args):
            name = getattr(fn, "func", fn).__name__
            done = Settled(JobState.SUCCEEDED, 1.0)
            return {"start_chunks": set(), "stage_chunks": True, "complete_job": done}[name]

    pipeline = JobPipeline(
        PipelineConfig(chunking=ChunkingConfig(1, 0, 100), embed_batch_size=1, embed_parallelism=8),
        db=Db(),
        embedder=SlowEmbedder(),
        fetcher=None,
        embed_limiter=trio.CapacityLimiter(4),
        embed_spacer=CallSpacer(slots=4, fraction=0.8, smoothing=1.0),
    )
    job = ClaimedJob(
        job_id=1,
        tenant_id="t",
        doc_id="d",
        content_hash="h",
        attempts=1,
        max_attempts=3,
        fence=Fence(1, __import__("uuid").uuid4()),
        text="a b c d e f g h",
        url=None,
        metadata={},
    )
    await pipeline.run(job)
    assert peak == 4
    assert starts[:4] == [0.0] * 4
    assert starts[4:] == pytest.approx([1.0, 1.2, 1.4, 1.6])

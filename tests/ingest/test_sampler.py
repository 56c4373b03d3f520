"""The API's queue sampler on the virtual clock: a sample at once, then every interval; a sample that
hangs is cut after ``sample_within`` and skipped, and sampling goes on."""

from __future__ import annotations

import functools

import trio
from prometheus_client import CollectorRegistry

from services.ingest import _queue as q
from services.ingest._metrics import QueueGauges
from services.ingest._sampler import sample_queue


async def test_the_queue_is_sampled_on_its_interval_and_a_stuck_sample_is_skipped(autojump_clock) -> None:
    calls: list[float] = []

    class Db:
        async def run(self, fn, *args):
            assert fn is q.queue_depth
            calls.append(trio.current_time())
            if len(calls) == 2:
                await trio.sleep_forever()  # the database does not answer this one
            return [
                q.QueueDepth("t", queued=len(calls), running=1, oldest_runnable_age=5.0, expired_leases=2)
            ]

    registry = CollectorRegistry()
    async with trio.open_nursery() as nursery:
        await nursery.start(
            functools.partial(sample_queue, Db(), QueueGauges(registry), interval=15.0, sample_within=2.0)
        )
        await trio.sleep(40.0)
        nursery.cancel_scope.cancel()
    assert calls == [0.0, 15.0, 32.0]  # at once; at 15 (cut at 17); 15 s after that
    assert registry.get_sample_value("ingest_queue_depth", {"tenant": "t", "state": "queued"}) == 3
    assert registry.get_sample_value("ingest_oldest_runnable_job_age_seconds", {"tenant": "t"}) == 5.0
    assert registry.get_sample_value("ingest_jobs_expired_leases") == 2

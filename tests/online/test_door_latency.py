"""dealBrain's door when the providers' latency changes under a steady arrival rate, on the virtual
clock: a slower provider alone is not a reason to refuse (slower answers need more in flight at the
same rate), a slowdown that makes requests queue at the bottleneck is."""

from __future__ import annotations

import pytest
import trio
from prometheus_client import generate_latest

from .conftest import make_budget, online_harness

# Hundreds of requests through the real app and simulator: virtual time, but seconds of real CPU,
# more on a machine shared with other work.
pytestmark = pytest.mark.timeout(120)

DEAL = "/v1/deal-brain/answers"

#: the overload benchmark's providers: request latency max(20 + 0, 150) + 50 + LLM ms
PROVIDERS = {
    "embeddings": {"latency": {"fixed_ms": 20}},
    "search": {"latency": {"fixed_ms": 150}},
    "rerank": {"latency": {"fixed_ms": 50}},
}


#: One tenant sends all the load; what is measured is the door's limit, so no tenant share caps it.
WHOLE_SHARES = {
    "endpoints": {"deal_brain": {"admission": {"tenant_share": 1.0}}},
    "dependencies": {"llm": {"tenant_share": 1.0}},
}
TENANT = "globex"  # no per-tenant overrides in the budget's tenant table


class SteadyLoad:
    """Open-loop dealBrain requests at a constant rate, a new question each (the web search cache
    would make repeats faster), their statuses kept by phase."""

    def __init__(self, harness) -> None:
        self.h = harness
        self.sent = 0
        self.statuses: dict[str, list[int]] = {}

    async def run(self, phase: str, *, rate: float, seconds: float) -> list[int]:
        statuses = self.statuses.setdefault(phase, [])

        async def one(i: int) -> None:
            response = await self.h.post(DEAL, {"question": f"Aldercrest Robotics deal {i}"}, tenant=TENANT)
            statuses.append(response.status_code)

        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            for k in range(round(rate * seconds)):
                await trio.sleep_until(start + k / rate)
                self.sent += 1
                nursery.start_soon(one, self.sent)
        return statuses


def capacity_gauge(h) -> float:
    metrics = generate_latest(h.registry).decode()
    line = next(
        line
        for line in metrics.splitlines()
        if 'gate="admission_deal_brain"' in line and line.startswith("floodgate_gate_capacity")
    )
    return float(line.rsplit(" ", 1)[1])


async def test_a_slower_provider_without_queueing_is_not_refused(autojump_clock, memory_chunks) -> None:
    # Issue 14's trial: dealBrain at 18 requests/s (0.45x of the 40/s the budget carries), the LLM's
    # latency raised from 0 to 400 ms at run time. Each answer takes 0.6 s instead of 0.2 s, so the
    # same rate needs 11 requests inside instead of 4 (of the door's 36), and 7 of the LLM's 16
    # slots: nothing waits anywhere. The door must not take the slower answers for overload.
    async with online_harness(
        budget=make_budget(WHOLE_SHARES),
        behaviour={**PROVIDERS, "chat": {"latency": {"fixed_ms": 0}}},
        chunks=memory_chunks,
    ) as h:
        door = h.app.extensions["online"].doors["deal_brain"]
        assert door.adaptive is not None and door.limit == door.ceiling == 36
        llm = h.wired.dependencies["llm"].gate
        load = SteadyLoad(h)
        fast = await load.run("fast", rate=18, seconds=5)
        assert door.adaptive.baseline == pytest.approx(0.2, abs=0.005)

        await h.behave({"chat": {"latency": {"fixed_ms": 400}}})
        slow = await load.run("slow", rate=18, seconds=20)
        assert set(fast) == set(slow) == {200}
        stats = door.statistics()
        assert (stats.limit, stats.refused_total) == (36, 0)
        assert capacity_gauge(h) == 36
        # the slower latency is the reference now (the interval of the change, half fast and half
        # slow, is the best of the window until it leaves it)
        assert 0.5 < door.adaptive.baseline < 0.605
        assert door.adaptive.statistics().last_queue == 0
        assert llm.statistics().rejected_total == 0


async def test_a_slowdown_that_queues_at_the_bottleneck_lowers_the_door_and_it_recovers(
    autojump_clock, memory_chunks
) -> None:
    # 10 requests/s; the LLM becomes five times slower (2 s). Its 16 slots now serve 8 requests/s,
    # so the requests pile up at its gate (and wait up to its max_wait): the door admits fewer and
    # refuses the excess at once. Back at 400 ms and at a rate that uses the door, it grows back to
    # the budget's number.
    async with online_harness(
        budget=make_budget(WHOLE_SHARES),
        behaviour={**PROVIDERS, "chat": {"latency": {"fixed_ms": 400}}},
        chunks=memory_chunks,
    ) as h:
        door = h.app.extensions["online"].doors["deal_brain"]
        ceiling = door.ceiling
        load = SteadyLoad(h)
        normal = await load.run("normal", rate=10, seconds=5)
        assert set(normal) == {200} and door.limit == ceiling
        baseline = door.adaptive.baseline
        assert baseline == pytest.approx(0.6, abs=0.005)

        await h.behave({"chat": {"latency": {"fixed_ms": 2000}}})
        slow = await load.run("slow", rate=10, seconds=15)
        lowered = door.limit
        assert lowered < ceiling
        assert slow.count(429) > 0
        assert capacity_gauge(h) == lowered

        await h.behave({"chat": {"latency": {"fixed_ms": 400}}})
        limits = []
        for _ in range(15):
            await load.run("recovering", rate=32, seconds=1)
            limits.append(door.limit)
        lowest = limits.index(min(limits))
        assert limits[lowest:] == sorted(limits[lowest:])
        assert limits[-1] == ceiling
        assert door.statistics().in_flight == 0

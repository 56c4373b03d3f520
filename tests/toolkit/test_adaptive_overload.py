"""An adaptive door in front of a bottleneck at overload, on the virtual clock: the door refuses the
excess at once and keeps the bottleneck busy (a few waiting at its gate are its buffer against
jitter, not a reason to admit less)."""

from __future__ import annotations

import math
import random

import floodgate
import trio
from floodgate._plan import door_ceiling

LLM_SLOTS = 16
DOOR_CEILING = door_ceiling(40, 0.6)  # as the online service sizes dealBrain's from the budget
# The providers of `make bench-budget` (bench/budget_behaviour.toml), slower than the budget says:
# the LLM log-normal with p50 0.8 s and p99 1.6 s, the steps before it about 0.35 s.
PRE_WORK = 0.35
LLM_P50, LLM_SIGMA = 0.8, math.log(2) / 2.326
LLM_MEAN = LLM_P50 * math.exp(LLM_SIGMA**2 / 2)
CAPACITY = LLM_SLOTS / LLM_MEAN  # about 19 requests/s


class Bottleneck:
    """dealBrain's shape reduced to its timing: pre-work, then one call through the LLM's gate;
    each phase's latency jittered by ±50 % (seeded), the LLM gate's busy slot-seconds integrated."""

    def __init__(self, door: floodgate.Door, gate: floodgate.Gate, seed: int) -> None:
        self.door, self.gate = door, gate
        self.random = random.Random(seed)
        self.answered = 0
        self.refused = 0
        self.busy = 0.0  # slot-seconds the LLM was held, counting from `measure_from`
        self.measure_from = 0.0

    def jitter(self, mean: float) -> float:
        return mean * self.random.uniform(0.5, 1.5)

    async def request(self) -> None:
        if not self.door.try_enter():
            self.refused += 1
            return
        start = trio.current_time()
        try:
            await trio.sleep(self.jitter(PRE_WORK))
            try:
                async with self.gate.slot():
                    held = trio.current_time()
                    await trio.sleep(self.random.lognormvariate(math.log(LLM_P50), LLM_SIGMA))
                    if held >= self.measure_from:
                        self.busy += trio.current_time() - held
                        self.answered += 1
            except floodgate.Overloaded:
                self.refused += 1
        finally:
            self.door.leave()
            self.door.observe(trio.current_time() - start, trio.current_time())


async def test_at_one_and_a_half_times_capacity_the_bottleneck_stays_busy(autojump_clock) -> None:
    gate = floodgate.Gate("llm", LLM_SLOTS, max_waiters=32, max_wait=1.0)
    adaptive = floodgate.AdaptiveLimit(DOOR_CEILING, floor=7, tolerance=1.2, queue_allowance=1.0)
    door = floodgate.Door(
        "deal_brain", DOOR_CEILING, adaptive=adaptive, waiting=lambda: gate.waiting_for_capacity
    )
    sim = Bottleneck(door, gate, seed=13)
    rate, warmup, measured = 1.5 * CAPACITY, 20.0, 60.0
    sim.measure_from = warmup
    async with trio.open_nursery() as nursery:
        for k in range(round(rate * (warmup + measured))):
            await trio.sleep_until(k / rate)
            nursery.start_soon(sim.request)
    # the LLM's slot-seconds over what its slots could give in the measured minute, and its answers
    utilisation = sim.busy / (LLM_SLOTS * measured)
    goodput = sim.answered / measured
    assert utilisation >= 0.95, (utilisation, goodput, adaptive)
    assert goodput >= 0.95 * CAPACITY, (utilisation, goodput, adaptive)
    assert sim.refused > 0.25 * rate * measured  # the excess was refused, not queued

"""bench/bench_overload.py drives its load through floodgate loadtest's open-loop scheduler: a level's
outcomes, lateness and validity on trio's virtual clock, with a stand-in for its HTTP client."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import bench_overload
from _load import Reply
from bench_overload import GRACE, Level, run_level


class StandInClient:
    """Answers dealBrain after ``seconds``: a full answer, except every 4th request a 429."""

    host = "service"

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.sent = 0

    async def send(self, request: bytes) -> Reply:
        n, self.sent = self.sent, self.sent + 1
        await trio.sleep(self.seconds)
        if n % 4 == 3:
            body = {"error": {"code": "overloaded", "details": {"dependency": "llm"}}}
            return Reply(429, b"HTTP/1.1 429 Too Many Requests", json.dumps(body).encode())
        body = {"answer": "Aldercrest", "degraded": []}
        return Reply(200, b"HTTP/1.1 200 OK\r\nserver-timing: total;dur=200", json.dumps(body).encode())


async def test_a_level_is_an_open_loop_at_its_rate(autojump_clock) -> None:
    level = Level("gates on", 1.0, rate=20.0, duration=2.0, slo=0.5)
    await run_level(StandInClient(0.2), level, offset=0)
    assert len(level.outcomes) == 40 and level.count("ok") == 30 and level.count("rejected") == 10
    assert [round(t, 9) for t in level.latencies("ok")] == [0.2] * 30  # from the scheduled start
    assert level.goodput == 15.0 and level.server == [0.2] * 30
    assert level.send_lag == [0.0] * 40 and level.invalid is None


async def test_answers_still_out_after_the_grace_are_errors(autojump_clock) -> None:
    level = Level("gates off", 3.0, rate=5.0, duration=1.0, slo=0.5)
    start = trio.current_time()
    await run_level(StandInClient(GRACE + 10), level, offset=0)
    assert round(trio.current_time() - start, 9) == GRACE + 1.0  # the schedule, then the grace
    assert level.count("error") == 5 and all(math.isnan(t) for _, t in level.outcomes)
    assert level.reasons == {f"cut off {GRACE:g}s after the level": 5}


def test_the_levels_validity_is_the_scenario_files() -> None:
    from floodgate._load_scenario import load_scenarios

    shipped = load_scenarios(Path(__file__).resolve().parent.parent / "config" / "loadtest.toml")
    assert bench_overload.VALIDITY == shipped.validity.validity()

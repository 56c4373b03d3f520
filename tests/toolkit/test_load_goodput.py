"""What the runner (libs/floodgate/_load_run.py) gives the capacity and isolation verdicts: goodput
(full answers within the SLO) per endpoint, per second and per phase, and URL jobs made unique by a
fragment. In process: httpx.MockTransport answers on trio's virtual clock, so every count is exact."""

from __future__ import annotations

import json

import httpx
import trio
from floodgate._load_run import run_scenario
from floodgate._load_scenario import parse_scenarios

KEYS = {"acme": "key-acme-0123456789"}


def _spec() -> object:
    return parse_scenarios(
        {
            "tenants": {"acme": 1},
            "requests": {
                "answer": {"path": "/v1/answer", "body": {"subject": "acme {request}", "top_k": 5}},
                "fetch_job": {
                    "kind": "job",
                    "path": "/v1/jobs",
                    "follow": "none",
                    "body": {"url": "https://corpus.example/page"},
                    "document_size": {"distribution": "fixed", "bytes": 1},
                },
            },
            "thresholds": {"answer": {"p99_ms": 300}},
            "scenarios": {
                "answers": {
                    "executor": "constant",
                    "rate": 4,
                    "duration": 2,
                    "grace": 2,
                    "requests": {"answer": 1},
                },
                "jobs": {"executor": "constant", "rate": 2, "duration": 2, "requests": {"fetch_job": 1}},
                "isolation": {
                    "phases": [
                        {"name": "alone", "run": ["answers"]},
                        {"name": "together", "run": ["answers", "jobs"]},
                    ]
                },
            },
        }
    )


class Backend:
    """/v1/answer by arrival count n: n % 4 == 1 takes 0.5 s (past the 300 ms SLO), n % 4 == 2 is a
    degraded 200, n % 4 == 3 a 429, else a full answer in 0.1 s. /v1/jobs: 202, bodies kept."""

    def __init__(self) -> None:
        self.answers = 0
        self.jobs: list[dict] = []
        self.subjects: list[str] = []

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/jobs":
            self.jobs.append(json.loads(request.content))
            return httpx.Response(202, json={"job_id": len(self.jobs)})
        n, self.answers = self.answers, self.answers + 1
        self.subjects.append(json.loads(request.content)["subject"])
        if n % 4 == 3:
            return httpx.Response(429, json={"error": "busy"}, headers={"retry-after": "1"})
        await trio.sleep(0.5 if n % 4 == 1 else 0.1)
        return httpx.Response(200, json={"degraded": ["llm"] if n % 4 == 2 else []})


async def test_goodput_per_endpoint_second_and_phase_and_unique_job_urls(autojump_clock) -> None:
    backend = Backend()
    summary = await run_scenario(
        _spec(), "isolation", target="http://test", keys=KEYS, transport=httpx.MockTransport(backend)
    )
    answer = summary["endpoints"]["answer"]
    # 16 answers: 4 of each kind; only the fast full answers are goodput
    assert (answer["offered"], answer["good"], answer["degraded"], answer["rejected"]) == (16, 12, 4, 4)
    assert answer["goodput"] == 4
    rows = [r for r in summary["timeline"] if r["endpoint"] == "answer"]
    assert sum(r["goodput"] for r in rows) == 4 and [r["goodput"] for r in rows] == [1, 1, 1, 1]

    by_phase = {(p["phase"], p["stream"]): p["endpoints"] for p in summary["phases"]}
    assert set(by_phase) == {("alone", "answers"), ("together", "answers"), ("together", "jobs")}
    alone, together = by_phase["alone", "answers"]["answer"], by_phase["together", "answers"]["answer"]
    assert (alone["offered"], alone["goodput"]) == (8, 2) and (together["offered"], together["goodput"]) == (
        8,
        2,
    )
    assert alone["p50_ms"] == 100.0 and alone["p99_ms"] == 500.0
    assert by_phase["together", "jobs"]["fetch_job"]["goodput"] == 4  # no threshold: every full 2xx

    # "{request}": each request its own subject (the phase, the stream and the request's index)
    assert backend.subjects[:2] == ["acme alone-answers-0", "acme alone-answers-1"]
    assert len(set(backend.subjects)) == 16

    # each URL job its own fragment of the same page, no text drawn
    assert [job["url"] for job in backend.jobs] == [
        f"https://corpus.example/page#jobs-1-{i}" for i in range(4)
    ]
    assert all("text" not in job for job in backend.jobs)

"""floodgate loadtest's runner (libs/floodgate/_load_run.py) in process: httpx.MockTransport answers,
trio's virtual clock, so latencies, classes, verdicts and exit statuses are exact."""

from __future__ import annotations

import argparse
import io
import json
import random
import sys
from pathlib import Path

import httpx
import pytest
import trio
from floodgate._load_run import (
    _Documents,
    classify,
    exit_status,
    load_api_keys,
    render_summary,
    run_scenario,
    write_summary,
)
from floodgate._load_scenario import parse_scenarios
from floodgate._loadtest import command

REPO = Path(__file__).resolve().parents[2]
KEYS = {"acme": "key-acme-0123456789", "globex": "key-globex-0123456789"}


def _spec(
    *, online_rate: float = 10, max_in_flight: int = 100, p95_ms: float = 300, follow: str = "status"
) -> object:
    return parse_scenarios(
        {
            "tenants": {"acme": 1, "globex": 1},
            "requests": {
                "answer": {"path": "/v1/answer", "body": {"q": "x"}},
                "submit": {
                    "kind": "job",
                    "path": "/v1/omnirag/jobs",
                    "follow": follow,
                    "document_size": {"distribution": "fixed", "bytes": 50},
                },
            },
            "thresholds": {"answer": {"p95_ms": p95_ms, "p99_ms": 500}},
            "scenarios": {
                "online": {
                    "executor": "constant",
                    "rate": online_rate,
                    "duration": 2,
                    "max_in_flight": max_in_flight,
                    "grace": 1,
                    "requests": {"answer": 1},
                },
                "jobs": {"executor": "constant", "rate": 2, "duration": 2, "requests": {"submit": 1}},
                "both": {
                    "phases": [
                        {"name": "alone", "run": ["online"]},
                        {"name": "together", "run": ["online", "jobs"]},
                    ]
                },
            },
        }
    )


class Backend:
    """/v1/answer: 0.2 s, then by arrival count: every 10th from the 4th a 429, from the 8th a 500,
    from the 6th a degraded 200, else a 200. Jobs: 202, polled status is running (Retry-After 2) once,
    then succeeded; in the list a job runs for 1.5 s after its submit."""

    def __init__(self) -> None:
        self.answers = 0
        self.polls: dict[str, int] = {}
        self.poll_times: list[float] = []
        self.submitted: dict[str, float] = {}
        self.keys: set[str] = set()

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.keys.add(request.headers["x-api-key"])
        if request.url.path == "/v1/answer":
            n = self.answers
            self.answers += 1
            await trio.sleep(0.2)
            if n % 10 == 3:
                return httpx.Response(429, headers={"Retry-After": "1"}, json={"error": {"code": "x"}})
            if n % 10 == 7:
                return httpx.Response(500, json={"error": {"code": "internal"}})
            if n % 10 == 5:
                return httpx.Response(200, json={"answer": "a", "degraded": ["search"]})
            return httpx.Response(200, json={"answer": "a", "degraded": []})
        if request.method == "POST":
            body = json.loads(request.content)
            assert len(body["text"]) == 50 and body["doc_id"]
            job = str(len(self.polls) + 1)
            self.polls[job] = 0
            self.submitted[job] = trio.current_time()
            await trio.sleep(0.01)
            return httpx.Response(202, json={"job_id": int(job), "status_url": f"/v1/omnirag/jobs/{job}"})
        if request.url.path == "/v1/omnirag/jobs":  # the list: a job runs for 1.5 s after its submit
            now = trio.current_time()
            jobs = [
                {"job_id": int(j), "state": "running" if now - t < 1.5 else "succeeded"}
                for j, t in self.submitted.items()
            ]
            return httpx.Response(200, json={"jobs": jobs})
        job = request.url.path.rsplit("/", 1)[1]
        self.polls[job] += 1
        self.poll_times.append(trio.current_time())
        if self.polls[job] == 1:
            return httpx.Response(200, headers={"Retry-After": "2"}, json={"state": "running"})
        return httpx.Response(200, json={"state": "succeeded"})


async def _run(spec, name: str, backend: Backend) -> dict:
    return await run_scenario(
        spec, name, target="http://gateway", keys=KEYS, transport=httpx.MockTransport(backend)
    )


def test_classify() -> None:
    assert classify(200, b'{"degraded": ["a"]}') == ("good", True)
    assert classify(202, b'{"degraded": []}') == ("good", False)
    assert classify(200, b"not json") == ("good", False)
    assert classify(429, b"") == ("rejected", False)
    assert classify(503, b"") == ("rejected", False)
    assert classify(500, b"") == ("error", False)
    assert classify(404, b"") == ("error", False)


async def test_composite_run_classifies_follows_jobs_and_judges(autojump_clock) -> None:
    backend = Backend()
    started: list[tuple[str, float, float]] = []
    summary = await run_scenario(
        _spec(),
        "both",
        target="http://gateway",
        keys=KEYS,
        transport=httpx.MockTransport(backend),
        on_phase=lambda phase, seconds: started.append((phase, seconds, trio.current_time())),
    )
    t0 = started[0][2]
    assert [(p, s, round(t - t0, 3)) for p, s, t in started] == [("alone", 2.0, 0.0), ("together", 2.0, 2.1)]
    assert backend.keys == set(KEYS.values())
    assert summary["valid"] is True and summary["dropped"] == 0
    # the second phase starts once the first's last answers are in (its last arrival 1.9 s, + 0.2 s);
    # its second stream half the fastest one's interval (10/s) later: their arrivals never coincide
    phases = sorted((p["start_s"], p["phase"], p["stream"]) for p in summary["phases"])
    assert phases == [(0.0, "alone", "online"), (2.1, "together", "online"), (2.15, "together", "jobs")]
    answer = summary["endpoints"]["answer"]
    # two phases of 2 s at 10/s: 40 requests, 4 rejected, 4 errors, 4 degraded
    assert (answer["offered"], answer["rejected"], answer["errors"], answer["degraded"]) == (40, 4, 4, 4)
    assert answer["good"] == 32
    assert answer["p50_ms"] == pytest.approx(200, abs=1) and answer["p99_ms"] == pytest.approx(200, abs=1)
    assert answer["slo"] == {"p95_ms": 300, "p99_ms": 500}
    assert answer["verdicts"] == {"p95": "pass", "p99": "pass"}
    submit = summary["endpoints"]["submit"]
    assert submit["offered"] == submit["good"] == 4
    assert submit["p99_ms"] == pytest.approx(10, abs=1)
    # each job polled twice, 2 s apart (Retry-After), and finished: submit-to-finish about 2 s
    assert submit["jobs"]["followed"] == submit["jobs"]["finished"] == 4
    assert submit["jobs"]["states"] == {"succeeded": 4}
    assert submit["jobs"]["p50_ms"] == pytest.approx(2010, abs=2)
    assert set(backend.polls.values()) == {2}
    assert exit_status(summary) == 0
    # one timeline row per second per endpoint, by scheduled start
    rows = [(r["t"], r["endpoint"], r["offered"]) for r in summary["timeline"]]
    assert (0.0, "answer", 10) in rows and (2.0, "submit", 2) in rows and (3.0, "answer", 10) in rows
    assert summary["series"] == [] and summary["lateness_ms"]["max"] == 0.0
    text = render_summary(summary)
    assert "valid" in text and "answer: offered 40" in text and "p95 pass" in text


async def test_a_slow_endpoint_fails_its_threshold(autojump_clock) -> None:
    summary = await _run(_spec(p95_ms=150), "online", Backend())
    assert summary["endpoints"]["answer"]["verdicts"] == {"p95": "fail", "p99": "pass"}
    assert exit_status(summary) == 1
    assert "p95 fail" in render_summary(summary)


async def test_drops_make_the_run_invalid(autojump_clock) -> None:
    # one request in flight at 10/s, each 0.2 s long: at least every other arrival finds the slot taken
    summary = await _run(_spec(max_in_flight=1), "online", Backend())
    answer = summary["endpoints"]["answer"]
    assert summary["valid"] is False and "dropped" in summary["invalid_reason"]
    assert answer["offered"] == 20 and answer["dropped"] == summary["dropped"] >= 10
    assert answer["good"] + answer["rejected"] + answer["errors"] + answer["dropped"] == 20
    assert exit_status(summary) == 3


async def test_transport_errors_count_as_errors(autojump_clock) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    summary = await run_scenario(
        _spec(), "online", target="http://gateway", keys=KEYS, transport=httpx.MockTransport(refuse)
    )
    answer = summary["endpoints"]["answer"]
    assert (answer["offered"], answer["errors"], answer["good"]) == (20, 20, 0)
    assert answer["p95_ms"] is None and answer["verdicts"] == {"p95": "fail", "p99": "fail"}
    assert exit_status(summary) == 1


def test_summary_is_written_as_json(tmp_path: Path) -> None:
    summary = {"scenario": "s", "valid": True, "endpoints": {}}
    path = write_summary(summary, tmp_path / "out")
    assert json.loads(path.read_text()) == summary


@pytest.mark.parametrize("without_yaml", [False, True])
def test_keys_from_the_sample_file(monkeypatch, without_yaml: bool) -> None:
    if without_yaml:  # the toolkit does not depend on PyYAML: its small parser reads the same file
        monkeypatch.setitem(sys.modules, "yaml", None)
    keys = load_api_keys(REPO / "config" / "api_keys.sample.yaml")
    assert keys == {"acme": "fg_dev_acme_8c1f2a7d4e6b", "globex": "fg_dev_globex_5b9e0d3c7a21"}


def test_cli_refuses_a_missing_keys_file(tmp_path: Path) -> None:
    args = argparse.Namespace(
        file=str(REPO / "config" / "loadtest.toml"),
        scenario="mixed",
        validate=False,
        dry_run=False,
        keys=str(tmp_path / "none.yaml"),
        target="http://127.0.0.1:1",
        out=str(tmp_path / "out"),
        state=None,
        seed=1,
    )
    err = io.StringIO()
    assert command(args, out=io.StringIO(), err=err) == 2
    assert "cannot read the API keys file" in err.getvalue()


class RecordingScraper:
    """Stands for floodgate/_load_scrape.py's Scraper (a child process, tested in
    test_load_scrape.py): records when the run starts and stops it, gives canned series."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, float]] = []
        self.failures = {"simulator": "HTTPStatusError: 500"}

    async def start(self) -> None:
        self.calls.append(("start", trio.current_time()))

    async def stop(self) -> None:
        self.calls.append(("stop", trio.current_time()))

    def series(self) -> list[dict]:
        return [{"t": 0.0, "job": "online", "instance": "online", "name": "x", "labels": {}, "value": 1.0}]


async def test_the_scraper_runs_from_the_runs_start_to_its_end(autojump_clock) -> None:
    scraper = RecordingScraper()
    started: list[float] = []
    summary = await run_scenario(
        _spec(),
        "online",
        target="http://gateway",
        keys=KEYS,
        transport=httpx.MockTransport(Backend()),
        scraper=scraper,
        on_phase=lambda phase, seconds: started.append(trio.current_time()),
    )
    # started before the first request's clock, stopped once the last answer is in (1.9 s + 0.2 s)
    assert scraper.calls == [("start", started[0]), ("stop", started[0] + 2.1)]
    assert summary["series"] == scraper.series()
    assert "scraping simulator failed: HTTPStatusError: 500" in summary["notes"]


async def test_a_cancelled_run_still_stops_the_scraper(autojump_clock) -> None:
    scraper = RecordingScraper()
    with trio.move_on_after(1.0):
        await run_scenario(
            _spec(),
            "online",
            target="http://gateway",
            keys=KEYS,
            transport=httpx.MockTransport(Backend()),
            scraper=scraper,
        )
    assert [call for call, _ in scraper.calls] == ["start", "stop"]


async def test_jobs_followed_through_the_list(autojump_clock) -> None:
    backend = Backend()
    summary = await _run(_spec(follow="list"), "jobs", backend)
    jobs = summary["endpoints"]["submit"]["jobs"]
    assert jobs["followed"] == jobs["finished"] == 4 and jobs["states"] == {"succeeded": 4}
    # looks at 0.01 s and 1.01 s find it running, the one at 2.01 s (no Retry-After: 1 s apart) done
    assert jobs["p50_ms"] == jobs["p99_ms"] == pytest.approx(2010, abs=2)


def test_documents_are_slices_of_one_text_drawn_before_the_run() -> None:
    documents = _Documents(1_000_000, seed=1)
    rng = random.Random(7)
    texts = [documents.draw(size, rng) for size in (1, 50, 20_000, 1_000_000)]
    assert [len(t) for t in texts] == [1, 50, 20_000, 1_000_000]
    assert all(not t.startswith(" ") for t in texts)
    assert set(texts[3].split()) <= set(_Documents.WORDS) | {texts[3].split()[0], texts[3].split()[-1]}
    # the same seed and draws give the same documents; other draws other ones
    again = _Documents(1_000_000, seed=1)
    assert [again.draw(n, random.Random(7)) for n in (50,)] == [documents.draw(50, random.Random(7))]
    assert documents.draw(20_000, random.Random(8)) != documents.draw(20_000, random.Random(9))


def test_a_busy_machine_is_named_when_a_run_is_not_valid() -> None:
    from floodgate._loadtest import busy_machine_note

    note = busy_machine_note(9.23, 1.5, 2)
    assert note is not None and "load average 9.2 at the start, 1.5 at the end, on 2 cores" in note
    assert busy_machine_note(1.9, 2.0, 2) is None  # no more runnable work than cores
    assert busy_machine_note(None, 5.0, 2) is None and busy_machine_note(5.0, 5.0, None) is None


def test_the_streams_of_a_phase_start_staggered() -> None:
    from floodgate._load_run import stagger
    from floodgate._load_schedule import Stage, constant_rate, ramping_rate

    assert stagger([constant_rate(8, 60), constant_rate(4, 60), constant_rate(4, 60)]) == 1 / 24
    assert stagger([constant_rate(8, 60), ramping_rate(0, [Stage(16, 10)])]) == 1 / 32  # at its peak
    assert stagger([constant_rate(8, 60)]) == 0.0


async def test_what_lives_before_the_run_is_frozen_during_it(autojump_clock) -> None:
    import gc

    seen: list[int] = []
    backend = Backend()

    async def answer(request: httpx.Request) -> httpx.Response:
        seen.append(gc.get_freeze_count())
        return await backend(request)

    assert gc.get_freeze_count() == 0
    await run_scenario(
        _spec(), "online", target="http://gateway", keys=KEYS, transport=httpx.MockTransport(answer)
    )
    assert min(seen) > 0 and gc.get_freeze_count() == 0  # frozen while it ran, thawed after

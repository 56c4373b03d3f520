"""Scraping during a load test (libs/floodgate/_load_scrape.py): what a round keeps, read through
httpx.MockTransport; then the child process for real, against a small HTTP server (realtime)."""

from __future__ import annotations

import http.server
import sys
import threading
from collections.abc import Iterator

import httpx
import pytest
import trio
from floodgate._load_scrape import (
    Scraper,
    ScraperError,
    ScrapeRound,
    _read_rounds,
    kept_lines,
    kept_sample,
    scrape_round,
)
from floodgate._top import Target, parse_samples

SERVICE = (
    "# HELP floodgate_gate_in_use Slots in use.\n"
    "# TYPE floodgate_gate_in_use gauge\n"
    'floodgate_gate_in_use{gate="llm"} 3.0\n'
    "# TYPE floodgate_pool_acquire_wait_seconds histogram\n"
    'floodgate_pool_acquire_wait_seconds_bucket{pool="pg",le="+Inf"} 2.0\n'
    'floodgate_pool_acquire_wait_seconds_count{pool="pg"} 2.0\n'
    'floodgate_pool_acquire_wait_seconds_sum{pool="pg"} 0.5\n'
    "# TYPE http_requests_total counter\n"
    'http_requests_total{route="/v1/x",status="200"} 7.0\n'
    "# TYPE http_requests_created gauge\n"
    'http_requests_created{route="/v1/x",status="200"} 1.7e9\n'
    "# TYPE python_info gauge\n"
    'python_info{version="3.11"} 1.0\n'
)
# Envoy types both of these ``counter``: a full parse names the first ``..._rq_total`` too
ENVOY = (
    "# TYPE envoy_cluster_upstream_rq counter\n"
    'envoy_cluster_upstream_rq{envoy_response_code="200",envoy_cluster_name="online"} 5\n'
    "# TYPE envoy_cluster_upstream_rq_total counter\n"
    'envoy_cluster_upstream_rq_total{envoy_cluster_name="online"} 7\n'
    "# TYPE envoy_server_uptime gauge\n"
    "envoy_server_uptime 10\n"
)


def test_the_kept_samples() -> None:
    assert kept_sample("floodgate_gate_in_use") and kept_sample("envoy_cluster_upstream_rq_xx")
    assert kept_sample("http_request_duration_seconds_sum")
    assert not kept_sample("floodgate_pool_acquire_wait_seconds_bucket")
    assert not kept_sample("http_requests_created") and not kept_sample("python_info")
    assert not kept_sample("envoy_server_uptime") and not kept_sample("envoy_cluster_upstream_rq")


def test_filtering_before_parsing_keeps_what_a_full_parse_keeps() -> None:
    full = {name: v for name, v in parse_samples(SERVICE).items() if kept_sample(name)}
    assert parse_samples(kept_lines(SERVICE)) == full
    assert set(full) == {
        "floodgate_gate_in_use",
        "floodgate_pool_acquire_wait_seconds_count",
        "floodgate_pool_acquire_wait_seconds_sum",
        "http_requests_total",
    }


def test_envoys_two_request_counters_stay_apart() -> None:
    assert len(parse_samples(ENVOY)["envoy_cluster_upstream_rq_total"]) == 1  # the full parse as well
    assert parse_samples(kept_lines(ENVOY)) == {
        "envoy_cluster_upstream_rq_total": [({"envoy_cluster_name": "online"}, 7.0)]
    }


def _client() -> httpx.Client:
    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.host == "down":
            return httpx.Response(500)
        return httpx.Response(200, text=ENVOY if request.url.path == "/stats/prometheus" else SERVICE)

    return httpx.Client(transport=httpx.MockTransport(answer))


def test_a_round_reads_every_target_and_names_the_ones_that_failed() -> None:
    targets = [
        Target("online", "online", "http://online/metrics"),
        Target("envoy", "envoy", "http://envoy/stats/prometheus"),
        Target("simulator", "simulator", "http://down/metrics"),
    ]
    with _client() as client:
        scraped = scrape_round(client, targets, 3.0)
    assert scraped.t == 3.0
    assert {(job, name) for job, _, name, _, _ in scraped.samples} == {
        ("online", "floodgate_gate_in_use"),
        ("online", "floodgate_pool_acquire_wait_seconds_count"),
        ("online", "floodgate_pool_acquire_wait_seconds_sum"),
        ("online", "http_requests_total"),
        ("envoy", "envoy_cluster_upstream_rq_total"),
    }
    assert ("online", "online", "floodgate_gate_in_use", {"gate": "llm"}, 3.0) in scraped.samples
    assert list(scraped.failures) == ["simulator"] and "500" in scraped.failures["simulator"]
    assert ScrapeRound.from_json(scraped.to_json()) == scraped  # what the child writes, read back


def test_a_line_cut_short_is_left_out() -> None:
    first, second = ScrapeRound(0.0, (("a", "a", "x", {}, 1.0),), {}), ScrapeRound(1.0, (), {"b": "down"})
    text = first.to_json() + "\n" + second.to_json() + "\n" + second.to_json()[:20]
    assert _read_rounds(text) == [first, second]


def test_no_target_no_samples() -> None:
    with _client() as client:
        assert scrape_round(client, [], 0.0) == ScrapeRound(0.0, (), {})


# -- the child process -----------------------------------------------------------------------------


@pytest.fixture
def metrics_server(realtime) -> Iterator[tuple[str, threading.Event]]:
    """An HTTP server answering SERVICE's text on any path; yields its URL and an event set once it
    has served three requests."""
    served: list[str] = []
    three = threading.Event()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            served.append(self.path)
            if len(served) >= 3:
                three.set()
            body = SERVICE.encode()
            self.send_response(200)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", three
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.timeout(60)
async def test_the_child_process_scrapes_each_interval_until_stopped(metrics_server) -> None:
    url, three_served = metrics_server
    scraper = Scraper(
        [
            Target("online", "online-1", f"{url}/metrics"),
            Target("ratelimit", "ratelimit", "http://127.0.0.1:1/metrics"),
        ],
        interval=0.25,
        timeout=1.0,
    )
    await scraper.start()
    with trio.fail_after(30):
        await trio.to_thread.run_sync(three_served.wait, abandon_on_cancel=True)
    await scraper.stop()
    await scraper.stop()  # idempotent
    assert "running" not in repr(scraper)
    # each round stamped with its tick, from the start: the first three at 0, 0.25, 0.5
    ticks = [r.t for r in scraper.rounds]
    assert len(ticks) >= 3 and ticks[:3] == [0.0, 0.25, 0.5] and ticks == sorted(set(ticks))
    assert all(round(t / 0.25, 6).is_integer() for t in ticks)
    rows = scraper.series()
    assert {(r["instance"], r["name"]) for r in rows if r["t"] == 0.0} == {
        ("online-1", "floodgate_gate_in_use"),
        ("online-1", "floodgate_pool_acquire_wait_seconds_count"),
        ("online-1", "floodgate_pool_acquire_wait_seconds_sum"),
        ("online-1", "http_requests_total"),
    }
    assert list(scraper.failures) == ["ratelimit"] and "ConnectError" in scraper.failures["ratelimit"]


@pytest.mark.realtime
async def test_a_child_that_does_not_start_is_an_error(monkeypatch) -> None:
    monkeypatch.setattr(sys, "executable", "/bin/false")
    scraper = Scraper([Target("online", "online", "http://127.0.0.1:1/metrics")])
    with pytest.raises(ScraperError, match="did not start"):
        await scraper.start()
    assert scraper.rounds == [] and "running" not in repr(scraper)

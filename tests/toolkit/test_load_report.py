"""The load-test report (floodgate/_load_report.py): chart data from a canned summary (rates from
counters, percentile lines and the SLO, the verdict table), the page itself, and headless Chromium
rendering it with its plots."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from floodgate._load_report import (
    CHROMIUM_HEADLESS_FLAGS,
    build_charts,
    counter_rate,
    render_html,
    render_svg,
    verdict_rows,
    write_report,
)


def _sample(t, name, value, job="online", **labels):
    return {"t": t, "job": job, "instance": job, "name": name, "labels": labels, "value": value}


def canned_summary() -> dict:
    timeline = [
        {
            "t": float(t),
            "endpoint": "deal_brain",
            "offered": 10,
            "good": 8,
            "rejected": 2,
            "errors": 0,
            "degraded": 1,
            "p50_ms": 600.0 + t,
            "p95_ms": 700.0 + t,
            "p99_ms": 900.0 + t,
        }
        for t in range(4)
    ]
    series = []
    for t, (in_use, waiting) in enumerate([(1, 0), (4, 2), (4, 5)]):
        series += [
            _sample(t, "floodgate_gate_in_use", in_use, gate="llm"),
            _sample(t, "floodgate_gate_capacity", 4, gate="llm"),
            _sample(t, "floodgate_gate_waiting", waiting, gate="llm"),
        ]
    # cumulative CPU seconds; the last one after a restart (a drop)
    for t, cpu in enumerate([10.0, 10.5, 11.5, 0.25]):
        series.append(_sample(t, "process_cpu_seconds_total", cpu))
        series.append(_sample(t, "process_resident_memory_bytes", 100 * 2**20))
    for t, (s, c) in enumerate([(0.0, 0), (0.2, 10), (0.2, 10), (1.2, 20)]):
        series.append(
            _sample(t, "floodgate_pool_acquire_wait_seconds_sum", s, job="ingest_worker", pool="pg")
        )
        series.append(
            _sample(t, "floodgate_pool_acquire_wait_seconds_count", c, job="ingest_worker", pool="pg")
        )
    # job latency buckets: 10 jobs in (1, 2] s during the second interval
    for t, counts in enumerate([(0, 0, 0), (0, 10, 10)]):
        for le, n in zip(("1", "2", "+Inf"), counts, strict=True):
            series.append(
                _sample(
                    t, "ingest_job_latency_seconds_bucket", n, job="ingest_worker", outcome="succeeded", le=le
                )
            )
    for t, tokens in enumerate([0, 300, 900]):
        series.append(
            _sample(
                t,
                "floodgate_tokens_total",
                tokens,
                dependency="llm",
                endpoint="deal_brain",
                tenant="a",
                kind="prompt",
            )
        )
        series.append(
            _sample(
                t,
                "floodgate_cost_usd_total",
                tokens / 1000,
                dependency="llm",
                endpoint="deal_brain",
                tenant="a",
            )
        )
    # the services' own count: 1 of 10 requests limited in the first interval, 5 of 10 in the second
    for t, (ok, limited) in enumerate([(0, 0), (9, 1), (14, 6)]):
        series.append(_sample(t, "http_requests_total", ok, route="/v1/deal-brain", status="200"))
        series.append(_sample(t, "http_requests_total", limited, route="/v1/deal-brain", status="429"))
    return {
        "scenario": "mixed",
        "target": "http://127.0.0.1:8080",
        "started_at": "2026-12-04T15:40:00Z",
        "duration_s": 4.0,
        "valid": True,
        "invalid_reason": None,
        "lateness_ms": {"p50": 0.3, "p99": 2.1, "max": 7.9},
        "dropped": 0,
        "endpoints": {
            "deal_brain": {
                "offered": 40,
                "good": 32,
                "rejected": 8,
                "errors": 0,
                "degraded": 4,
                "p50_ms": 601.0,
                "p95_ms": 702.0,
                "p99_ms": 3100.0,
                "slo": {"p95_ms": 1500, "p99_ms": 3000},
                "verdicts": {"p95": "pass", "p99": "fail"},
            },
            "omnirag_submit": {
                "offered": 3,
                "good": 3,
                "rejected": 0,
                "errors": 0,
                "degraded": 0,
                "p50_ms": 40.0,
                "p95_ms": 50.0,
                "p99_ms": 50.0,
                "slo": {},
                "verdicts": {},
                "jobs": {
                    "followed": 3,
                    "finished": 2,
                    "states": {"succeeded": 2, "unfinished": 1},
                    "p50_ms": 1800.0,
                    "p95_ms": 2500.0,
                    "p99_ms": 2500.0,
                },
            },
            # no verdicts from the runner: the report judges
            "nexus_assess": {
                "offered": 0,
                "good": 0,
                "rejected": 0,
                "errors": 0,
                "degraded": 0,
                "p50_ms": None,
                "p95_ms": 1200.0,
                "p99_ms": None,
                "slo": {"p95_ms": 1000, "p99_ms": 2000},
            },
        },
        "phases": [
            {"phase": "alone", "stream": "deal_brain", "start_s": 0.0, "duration_s": 2, "scheduled": 20},
            {
                "phase": "with_ingest",
                "stream": "deal_brain",
                "start_s": 2.0,
                "duration_s": 2,
                "scheduled": 20,
            },
            {"phase": "with_ingest", "stream": "ingest", "start_s": 2.5, "duration_s": 2, "scheduled": 3},
        ],
        "timeline": timeline,
        "series": series,
    }


def charts_by_slug(summary):
    return {c.slug: c for c in build_charts(summary)}


def line(chart, name):
    return next(line.points for line in chart.lines if line.name == name)


def test_counter_rate_by_differences_and_a_restart_counts_the_new_value():
    assert counter_rate([(0, 10.0), (1, 10.5), (3, 11.5), (4, 0.25)]) == [(1, 0.5), (3, 0.5), (4, 0.25)]
    assert counter_rate([(0, 1.0)]) == []


def test_endpoint_rates_latency_lines_and_the_slo():
    charts = charts_by_slug(canned_summary())
    rates = charts["deal_brain-rates"]
    assert line(rates, "offered")[0] == (0.0, 10.0)
    assert line(rates, "rejected")[-1] == (3.0, 2.0)
    latency = charts["deal_brain-latency"]
    assert line(latency, "p99") == ((0.0, 900.0), (1.0, 901.0), (2.0, 902.0), (3.0, 903.0))
    assert latency.refs == (("SLO p95 1500 ms", 1500.0), ("SLO p99 3000 ms", 3000.0))
    shares = charts["deal_brain-shares"]
    assert line(shares, "rejected (429/503)")[0] == (0.0, 0.2)
    assert line(shares, "degraded")[0] == (0.0, 0.1)
    assert "nexus_assess-rates" not in charts  # no timeline rows: no chart


def test_series_charts_gates_processes_queue_and_cost():
    charts = charts_by_slug(canned_summary())
    gate = charts["gate-llm"]
    assert line(gate, "capacity") == ((0.0, 4.0), (1.0, 4.0), (2.0, 4.0))
    assert line(gate, "waiting")[-1] == (2.0, 5.0)
    assert line(charts["cpu"], "online") == ((1.0, 0.5), (2.0, 1.0), (3.0, 0.25))
    assert line(charts["memory"], "online")[0] == (0.0, 100.0)
    # mean acquire wait per interval: Δsum/Δcount, in ms; no point for an interval without acquires
    pool = line(charts["pool-waits"], "pg mean wait")
    assert [t for t, _ in pool] == [1.0, 3.0]
    assert pool[0][1] == pytest.approx(20.0) and pool[1][1] == pytest.approx(100.0)
    # histogram_quantile over the interval's bucket increases: all 10 in (1, 2]
    job = charts["job-latency"]
    assert line(job, "p50") == ((1.0, 1.5),)
    assert line(job, "p99")[0][1] == pytest.approx(1.99)
    assert line(charts["tokens"], "prompt") == ((1.0, 300.0), (2.0, 600.0))
    assert line(charts["cost"], "deal_brain")[-1][1] == pytest.approx(0.6 * 60)
    served = line(charts["served-429"], "/v1/deal-brain")
    assert served == ((1.0, 0.1), (2.0, 0.5))
    # no samples: no chart, and the page names what is missing
    assert "queue-depth" not in charts and "loop-lag" not in charts


def test_verdict_rows_take_the_runners_verdict_and_judge_where_there_is_none():
    rows = {(r.endpoint, r.threshold): (r.measured_ms, r.verdict) for r in verdict_rows(canned_summary())}
    assert rows == {
        ("deal_brain", "p95_ms < 1500"): (702.0, "pass"),
        ("deal_brain", "p99_ms < 3000"): (3100.0, "fail"),
        ("nexus_assess", "p95_ms < 1000"): (1200.0, "fail"),
        ("nexus_assess", "p99_ms < 2000"): (None, "n/a"),
    }


def test_every_chart_marks_where_each_phase_starts():
    charts = build_charts(canned_summary())
    assert {c.marks for c in charts} == {(("alone", 0.0), ("with_ingest", 2.0))}
    assert render_svg(charts[0]).count('class="mark"') == 2
    single = {**canned_summary(), "phases": [{"phase": "p", "stream": "s", "start_s": 0.0}]}
    assert all(c.marks == () for c in build_charts(single))


def test_page_is_self_contained_with_one_svg_per_chart():
    summary = canned_summary()
    charts = build_charts(summary)
    page = render_html(summary, charts)
    assert page.count("<svg") == len(charts)
    assert not re.search(r"<script|<link|\bsrc=|href=", page)  # nothing to fetch
    assert re.search(r"<h1>.*FAIL", page)  # a failed threshold fails the run
    assert "No samples for: loop lag, queue depth, oldest job age." in page
    assert re.search(r"<td>omnirag_submit</td><td>3</td><td>2</td><td>succeeded 2, unfinished 1</td>", page)
    # a run without lateness figures (nothing sent) still renders
    empty = {
        **summary,
        "lateness_ms": {"p50": None, "p99": None, "max": None},
        "valid": False,
        "invalid_reason": "no requests",
    }
    assert "lateness p50 — ms" in render_html(
        empty, charts
    ) and "Not a valid run: no requests" in render_html(empty, charts)
    svg = render_svg(charts[1])
    assert svg.count('class="series"') == 3 and svg.count('class="ref"') == 2
    assert "<title>deal_brain: latency p50/p95/p99 vs SLO</title>" in svg


def test_write_report_without_pngs(tmp_path: Path):
    page = write_report(canned_summary(), tmp_path, png=False)
    assert page == tmp_path / "report.html"
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["verdict"] == "fail"
    assert len(report["figures"]) == len(build_charts(canned_summary()))
    assert all((tmp_path / f["svg"]).exists() and "png" not in f for f in report["figures"])
    assert json.loads((tmp_path / "summary.json").read_text())["scenario"] == "mixed"


CHROMIUM = "/usr/bin/chromium"


@pytest.mark.realtime
@pytest.mark.timeout(120)
def test_chromium_renders_the_page_with_its_plots(tmp_path: Path):
    chromium = CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")
    if chromium is None:
        pytest.skip("headless Chromium is missing: apt-get install chromium (.ci/run installs it)")
    summary = canned_summary()
    page = tmp_path / "page.html"
    page.write_text(render_html(summary, build_charts(summary)), encoding="utf-8")
    dom = subprocess.run(
        [*_headless(chromium), "--dump-dom", page.as_uri()],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    svgs = re.findall(r"<svg\b.*?</svg>", dom, flags=re.S)
    assert len(svgs) == len(build_charts(summary))
    assert all('class="series"' in svg and ' d="M' in svg for svg in svgs)
    # the PNG figures (one Chromium each): a run with one endpoint's three charts, to keep this short
    small = {**summary, "series": [], "phases": []}
    write_report(small, tmp_path / "run")
    pngs = sorted((tmp_path / "run" / "figures").glob("*.png"))
    assert len(pngs) == len(build_charts(small)) == 3
    data = pngs[1].read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000  # a blank 760x300 PNG is far smaller


def _headless(chromium: str) -> list[str]:
    return [chromium, *CHROMIUM_HEADLESS_FLAGS]

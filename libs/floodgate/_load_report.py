"""The load-test report: one self-contained HTML page from a run's ``summary.json`` (docs/loadtest.md).

A verdict per SLO (pass/fail, like k6's thresholds), then line charts over the run's time: per endpoint
offered vs good vs rejected rate, p50/p95/p99 against the SLO, rejected and degraded shares; from the
scraped series, gates (in use, capacity, waiting), pool waits, loop lag, CPU and memory per process,
queue depth, oldest job age, submit-to-finish job latency, tokens and cost. Counters arrive as raw
cumulative values and become rates by differences here. The charts are inline SVG drawn by the small
code below (no script, no network); each is also written as a standalone SVG and, where headless
Chromium is installed, a PNG. `build_charts` and `verdict_rows` are pure and tested on their own.
"""

from __future__ import annotations

import html
import itertools
import json
import math
import re
import shutil
import subprocess
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from ._top import histogram_quantile

__all__ = [
    "Chart",
    "Line",
    "VerdictRow",
    "budget_html",
    "build_charts",
    "counter_rate",
    "find_chromium",
    "phase_marks",
    "render_html",
    "render_svg",
    "verdict_rows",
    "write_report",
]

Point = tuple[float, float]

#: line colours, in legend order (Okabe-Ito, readable by the colour-blind)
_COLOURS = ("#0072B2", "#009E73", "#D55E00", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442")
_WIDTH, _HEIGHT = 760, 300
_LEFT, _RIGHT, _TOP, _BOTTOM = 64, 190, 34, 44


@dataclass(frozen=True)
class Line:
    name: str
    points: tuple[Point, ...]


@dataclass(frozen=True)
class Chart:
    """One figure: lines over the run's time (seconds), and horizontal reference lines (the SLO,
    a capacity) as ``(label, y)``."""

    slug: str
    section: str
    title: str
    y_label: str
    lines: tuple[Line, ...]
    refs: tuple[tuple[str, float], ...] = ()
    #: vertical markers ``(label, t)``: where each phase of a composite scenario starts
    marks: tuple[tuple[str, float], ...] = ()
    #: the time axis runs from 0 to at least this (the run's duration: every chart on the same axis)
    span: float = 0.0


@dataclass(frozen=True)
class VerdictRow:
    endpoint: str
    threshold: str  # "p95_ms < 1500"
    measured_ms: float | None
    verdict: str  # "pass" | "fail" | "n/a"


# ---------------------------------------------------------------------------------------- chart data


def counter_rate(points: Iterable[Point]) -> list[Point]:
    """Per-second rate of a cumulative counter, by differences between consecutive samples, placed at
    the later sample's time. A drop (a process restarted) counts the new value as the increase, as
    Prometheus's ``rate`` does."""
    out: list[Point] = []
    previous: Point | None = None
    for t, v in sorted(points):
        if previous is not None and t > previous[0]:
            increase = v - previous[1] if v >= previous[1] else v
            out.append((t, increase / (t - previous[0])))
        previous = (t, v)
    return out


def _ratio_of_rates(num: Iterable[Point], den: Iterable[Point]) -> list[Point]:
    """Δnum/Δden between consecutive samples (a histogram's mean: Δsum/Δcount); no point where Δden is 0."""
    d = dict(sorted(den))
    out: list[Point] = []
    previous: tuple[float, float, float] | None = None
    for t, n in sorted(num):
        if t not in d:
            continue
        if previous is not None:
            dn, dd = n - previous[1], d[t] - previous[2]
            if dd > 0 and dn >= 0:
                out.append((t, dn / dd))
        previous = (t, n, d[t])
    return out


def _series_index(series: Iterable[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    by_name: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for sample in series:
        by_name[sample["name"]].append(sample)
    return by_name


def _group(
    samples: Iterable[Mapping[str, Any]], key: Sequence[str], *, with_process: bool = False
) -> dict[str, list[Point]]:
    """Samples summed by the label values named in ``key`` (and by process: job/instance), one point
    per time."""
    sums: dict[str, dict[float, float]] = defaultdict(lambda: defaultdict(float))
    for s in samples:
        labels = s.get("labels") or {}
        parts = [str(labels.get(k, "")) for k in key]
        if with_process:
            parts.insert(0, str(s.get("instance") or s.get("job") or ""))
        name = " ".join(p for p in parts if p) or s["name"]
        sums[name][float(s["t"])] += float(s["value"])
    return {name: sorted(points.items()) for name, points in sorted(sums.items())}


def _histogram_lines(index: Mapping[str, list[Mapping[str, Any]]], base: str, *, scale: float) -> list[Line]:
    """p50/p95/p99 per interval from ``base_bucket`` (all labels but ``le`` summed), else the mean
    from ``base_sum``/``base_count``."""
    buckets = index.get(f"{base}_bucket", [])
    if buckets:
        cumulative: dict[float, dict[float, float]] = defaultdict(lambda: defaultdict(float))
        for s in buckets:
            le = float((s.get("labels") or {}).get("le", "inf").replace("+Inf", "inf"))
            cumulative[float(s["t"])][le] += float(s["value"])
        times = sorted(cumulative)
        lines = []
        for q in (0.5, 0.95, 0.99):
            points = []
            for before, after in itertools.pairwise(times):
                increases = [
                    (le, cumulative[after][le] - cumulative[before].get(le, 0.0)) for le in cumulative[after]
                ]
                value = histogram_quantile(q, increases)
                if value is not None:
                    points.append((after, value * scale))
            lines.append(Line(f"p{round(q * 100)}", tuple(points)))
        if any(line.points for line in lines):
            return lines
    sums = _group(index.get(f"{base}_sum", []), ())
    counts = _group(index.get(f"{base}_count", []), ())
    if sums and counts:
        mean = _ratio_of_rates(next(iter(sums.values())), next(iter(counts.values())))
        return [Line("mean", tuple((t, v * scale) for t, v in mean))]
    return []


def _endpoint_charts(summary: Mapping[str, Any]) -> list[Chart]:
    rows: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for row in summary.get("timeline") or []:
        rows[row["endpoint"]].append(row)
    charts = []
    endpoints = list(summary.get("endpoints") or {})
    endpoints += [e for e in rows if e not in endpoints]
    for endpoint in endpoints:
        timeline = sorted(rows.get(endpoint, []), key=lambda r: r["t"])
        if not timeline:
            continue
        slo = ((summary.get("endpoints") or {}).get(endpoint) or {}).get("slo") or {}
        # each row counts one interval (a second) from its `t`: a rate is the count over the interval
        widths = [b["t"] - a["t"] for a, b in itertools.pairwise(timeline)]
        width = min(widths) if widths and min(widths) > 0 else 1.0

        def col(name: str, rows=timeline, per=width) -> tuple[Point, ...]:
            return tuple((r["t"], r.get(name, 0) / per) for r in rows)

        charts.append(
            Chart(
                f"{endpoint}-rates",
                endpoint,
                f"{endpoint}: offered vs good vs rejected",
                "requests/s",
                (
                    Line("offered", col("offered")),
                    Line("good", col("good")),
                    Line("rejected", col("rejected")),
                    Line("errors", col("errors")),
                ),
            )
        )
        refs = tuple(
            (f"SLO {k[:-3]} {v:g} ms", float(v)) for k, v in sorted(slo.items()) if k.endswith("_ms")
        )
        charts.append(
            Chart(
                f"{endpoint}-latency",
                endpoint,
                f"{endpoint}: latency p50/p95/p99 vs SLO",
                "ms",
                tuple(
                    Line(q, tuple((r["t"], r[f"{q}_ms"]) for r in timeline if r.get(f"{q}_ms") is not None))
                    for q in ("p50", "p95", "p99")
                ),
                refs,
            )
        )
        shares = [
            Line(
                "rejected (429/503)",
                tuple((r["t"], r.get("rejected", 0) / r["offered"]) for r in timeline if r.get("offered")),
            )
        ]
        if any("degraded" in r for r in timeline):
            shares.append(
                Line(
                    "degraded",
                    tuple(
                        (r["t"], r.get("degraded", 0) / r["offered"]) for r in timeline if r.get("offered")
                    ),
                )
            )
        charts.append(
            Chart(
                f"{endpoint}-shares",
                endpoint,
                f"{endpoint}: rejected and degraded shares",
                "share of offered",
                tuple(shares),
            )
        )
    return charts


def _series_charts(summary: Mapping[str, Any]) -> list[Chart]:
    index = _series_index(summary.get("series") or [])
    charts: list[Chart] = []

    def add(slug: str, section: str, title: str, y_label: str, lines: Iterable[Line], **kw: Any) -> None:
        lines = tuple(line for line in lines if line.points)
        if lines:
            charts.append(Chart(slug, section, title, y_label, lines, **kw))

    gates = sorted({(s.get("labels") or {}).get("gate", "") for s in index.get("floodgate_gate_in_use", [])})
    for gate in gates:

        def of(name: str, gate=gate) -> tuple[Point, ...]:
            found = _group(
                (s for s in index.get(name, []) if (s.get("labels") or {}).get("gate") == gate), ()
            )
            return tuple(next(iter(found.values()), ()))

        add(
            f"gate-{gate}",
            "dependencies",
            f"gate {gate}: occupancy vs capacity, waiting",
            "calls",
            [
                Line("in use", of("floodgate_gate_in_use")),
                Line("capacity", of("floodgate_gate_capacity")),
                Line("waiting", of("floodgate_gate_waiting")),
            ],
        )

    pool_lines = []
    sums = _group(index.get("floodgate_pool_acquire_wait_seconds_sum", []), ("pool",))
    counts = _group(index.get("floodgate_pool_acquire_wait_seconds_count", []), ("pool",))
    for pool, points in sums.items():
        mean = _ratio_of_rates(points, counts.get(pool, []))
        pool_lines.append(Line(f"{pool} mean wait", tuple((t, v * 1000) for t, v in mean)))
    if not pool_lines:  # a gauge-like sample of the wait
        for pool, points in _group(index.get("floodgate_pool_acquire_wait_seconds", []), ("pool",)).items():
            pool_lines.append(Line(pool, tuple((t, v * 1000) for t, v in points)))
    add("pool-waits", "processes", "connection pool: acquire wait", "ms", pool_lines)

    totals = _group(index.get("http_requests_total", []), ("route",))
    limited = _group(
        (s for s in index.get("http_requests_total", []) if (s.get("labels") or {}).get("status") == "429"),
        ("route",),
    )
    add(
        "served-429",
        "processes",
        "429 share per route, as the services counted it",
        "share of requests",
        [
            Line(route, tuple(_ratio_of_rates(limited.get(route, [(t, 0.0) for t, _ in points]), points)))
            for route, points in totals.items()
        ],
    )

    add(
        "loop-lag",
        "processes",
        "event-loop lag (max per interval)",
        "ms",
        [
            Line(k, tuple((t, v * 1000) for t, v in pts))
            for k, pts in _group(
                index.get("floodgate_loop_lag_max_seconds", []), (), with_process=True
            ).items()
        ],
    )
    add(
        "cpu",
        "processes",
        "CPU per process",
        "cores",
        [
            Line(k, tuple(counter_rate(pts)))
            for k, pts in _group(index.get("process_cpu_seconds_total", []), (), with_process=True).items()
        ],
    )
    add(
        "memory",
        "processes",
        "resident memory per process",
        "MiB",
        [
            Line(k, tuple((t, v / 2**20) for t, v in pts))
            for k, pts in _group(
                index.get("process_resident_memory_bytes", []), (), with_process=True
            ).items()
        ],
    )

    add(
        "queue-depth",
        "ingestion",
        "ingestion queue depth",
        "jobs",
        [Line(k, tuple(pts)) for k, pts in _group(index.get("ingest_queue_depth", []), ("state",)).items()],
    )
    add(
        "oldest-job-age",
        "ingestion",
        "oldest runnable job's age",
        "s",
        [
            Line(k, tuple(pts))
            for k, pts in _group(index.get("ingest_oldest_runnable_job_age_seconds", []), ("tenant",)).items()
        ],
    )
    add(
        "job-latency",
        "ingestion",
        "job latency, submit to finish",
        "s",
        _histogram_lines(index, "ingest_job_latency_seconds", scale=1.0),
    )

    add(
        "tokens",
        "cost",
        "tokens",
        "tokens/s",
        [
            Line(k, tuple(counter_rate(pts)))
            for k, pts in _group(index.get("floodgate_tokens_total", []), ("kind",)).items()
        ],
    )
    add(
        "cost",
        "cost",
        "estimated cost",
        "USD/min",
        [
            Line(k, tuple((t, v * 60) for t, v in counter_rate(pts)))
            for k, pts in _group(index.get("floodgate_cost_usd_total", []), ("endpoint",)).items()
        ],
    )
    return charts


def phase_marks(summary: Mapping[str, Any]) -> tuple[tuple[str, float], ...]:
    """Where each phase starts (its earliest stream), when the run had more than one phase."""
    starts: dict[str, float] = {}
    for row in summary.get("phases") or []:
        name, start = str(row.get("phase") or ""), float(row.get("start_s") or 0.0)
        starts[name] = min(start, starts.get(name, start))
    if len(starts) < 2:
        return ()
    return tuple(sorted(starts.items(), key=lambda mark: mark[1]))


def build_charts(summary: Mapping[str, Any]) -> list[Chart]:
    """Every chart the summary has data for: the endpoints' from ``timeline``, the rest from ``series``
    (a chart with no samples is left out, and the page says so); each marks where the phases start."""
    marks, span = phase_marks(summary), float(summary.get("duration_s") or 0.0)
    charts = _endpoint_charts(summary) + _series_charts(summary)
    return [replace(chart, marks=marks, span=span) for chart in charts]


def verdict_rows(summary: Mapping[str, Any]) -> list[VerdictRow]:
    """One row per endpoint and SLO threshold. The runner's verdict is taken as it is; where it gave
    none, the measured percentile is judged against the threshold here (``<=`` passes)."""
    rows = []
    for endpoint, result in (summary.get("endpoints") or {}).items():
        verdicts = result.get("verdicts") or {}
        for key, limit in sorted((result.get("slo") or {}).items()):
            quantile = key.removesuffix("_ms")
            measured = result.get(key)
            verdict = verdicts.get(quantile)
            if verdict is None:
                verdict = "n/a" if measured is None else ("pass" if measured <= limit else "fail")
            rows.append(VerdictRow(endpoint, f"{key} < {limit:g}", measured, verdict))
    return rows


# ------------------------------------------------------------------------------------------ drawing


def _nice_ticks(top: float, count: int = 5) -> list[float]:
    if top <= 0:
        return [0.0, 1.0]
    raw = top / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    return [i * step for i in range(math.ceil(top / step - 1e-9) + 1)]


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.3g}"


def render_svg(chart: Chart) -> str:
    """The chart as one standalone ``<svg>``: title, axes with ticks and labels, one ``<path>`` per line,
    dashed reference lines, a legend on the right."""
    xs = [t for line in chart.lines for t, _ in line.points] or [0.0, 1.0]
    ys = [v for line in chart.lines for _, v in line.points] + [y for _, y in chart.refs]
    x0 = min(0.0, *xs)
    x1 = max(chart.span, *xs)
    x1 = x1 if x1 > x0 else x0 + 1
    y_ticks = _nice_ticks(max([*ys, 0.0]) * 1.05)
    x_ticks = _nice_ticks(x1 - x0)
    y1 = y_ticks[-1]
    pw, ph = _WIDTH - _LEFT - _RIGHT, _HEIGHT - _TOP - _BOTTOM
    x1 = max(x1, x0 + x_ticks[-1]) if x_ticks[-1] <= (x1 - x0) * 1.2 else x1

    def px(t: float) -> float:
        return _LEFT + (t - x0) / (x1 - x0) * pw

    def py(v: float) -> float:
        return _TOP + ph - v / y1 * ph

    e = html.escape
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{_WIDTH}" height="{_HEIGHT}" '
        f'viewBox="0 0 {_WIDTH} {_HEIGHT}" font-family="sans-serif" font-size="11" role="img">',
        f"<title>{e(chart.title)}</title>",
        f'<rect width="{_WIDTH}" height="{_HEIGHT}" fill="#fff"/>',
        f'<text x="{_LEFT}" y="20" font-size="14" font-weight="bold">{e(chart.title)}</text>',
    ]
    for v in y_ticks:
        y = py(v)
        out.append(f'<line x1="{_LEFT}" x2="{_LEFT + pw}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e5e5e5"/>')
        out.append(f'<text x="{_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{_fmt(v)}</text>')
    for v in x_ticks:
        x = px(x0 + v)
        if x <= _LEFT + pw + 0.5:
            out.append(
                f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{_TOP + ph}" y2="{_TOP + ph + 4}" stroke="#333"/>'
            )
            out.append(f'<text x="{x:.1f}" y="{_TOP + ph + 16}" text-anchor="middle">{_fmt(x0 + v)}</text>')
    out.append(
        f'<path d="M{_LEFT},{_TOP} V{_TOP + ph} H{_LEFT + pw}" fill="none" stroke="#333" class="axes"/>'
    )
    out.append(
        f'<text x="{_LEFT + pw / 2}" y="{_HEIGHT - 8}" text-anchor="middle">time since start (s)</text>'
    )
    out.append(
        f'<text transform="translate(14,{_TOP + ph / 2}) rotate(-90)" text-anchor="middle">{e(chart.y_label)}</text>'
    )
    legend_y = _TOP + 4
    for i, line in enumerate(chart.lines):
        colour = _COLOURS[i % len(_COLOURS)]
        d = " ".join(
            f"{'M' if j == 0 else 'L'}{px(t):.1f},{py(v):.1f}" for j, (t, v) in enumerate(line.points)
        )
        out.append(f'<path class="series" d="{d}" fill="none" stroke="{colour}" stroke-width="1.6"/>')
        if len(line.points) == 1:
            ((t, v),) = line.points
            out.append(f'<circle cx="{px(t):.1f}" cy="{py(v):.1f}" r="2.5" fill="{colour}"/>')
        out.append(
            f'<line x1="{_WIDTH - _RIGHT + 12}" x2="{_WIDTH - _RIGHT + 30}" y1="{legend_y}" y2="{legend_y}" '
            f'stroke="{colour}" stroke-width="3"/>'
        )
        out.append(f'<text x="{_WIDTH - _RIGHT + 36}" y="{legend_y + 4}">{e(line.name)}</text>')
        legend_y += 16
    for label, t in chart.marks:
        if x0 <= t <= x1:
            out.append(
                f'<line class="mark" x1="{px(t):.1f}" x2="{px(t):.1f}" y1="{_TOP}" y2="{_TOP + ph}" '
                'stroke="#777" stroke-dasharray="2 3"/>'
            )
            anchor, dx = ("end", -3) if px(t) > _LEFT + pw - 80 else ("start", 3)
            out.append(
                f'<text x="{px(t) + dx:.1f}" y="{_TOP + 10}" fill="#555" text-anchor="{anchor}">{e(label)}</text>'
            )
    for label, y_value in chart.refs:
        y = py(y_value)
        out.append(
            f'<line class="ref" x1="{_LEFT}" x2="{_LEFT + pw}" y1="{y:.1f}" y2="{y:.1f}" stroke="#c00" '
            'stroke-dasharray="6 4"/>'
        )
        out.append(
            f'<line x1="{_WIDTH - _RIGHT + 12}" x2="{_WIDTH - _RIGHT + 30}" y1="{legend_y}" y2="{legend_y}" '
            'stroke="#c00" stroke-dasharray="6 4" stroke-width="2"/>'
        )
        out.append(f'<text x="{_WIDTH - _RIGHT + 36}" y="{legend_y + 4}">{e(label)}</text>')
        legend_y += 16
    out.append("</svg>")
    return "\n".join(out)


_CSS = """
body { font-family: sans-serif; margin: 24px; color: #222; max-width: 1600px; }
table { border-collapse: collapse; margin: 8px 0 16px; }
th, td { border: 1px solid #ccc; padding: 4px 10px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
.pass { color: #080; font-weight: bold; } .fail { color: #c00; font-weight: bold; }
.charts { display: flex; flex-wrap: wrap; gap: 12px; }
figure { margin: 0; border: 1px solid #ddd; }
"""


def render_html(summary: Mapping[str, Any], charts: Sequence[Chart]) -> str:
    """The report page: the run, the verdicts, each endpoint's totals, then the charts by section."""
    e = html.escape
    rows = verdict_rows(summary)
    overall = "pass" if summary.get("valid", True) and all(r.verdict != "fail" for r in rows) else "fail"
    lateness = summary.get("lateness_ms") or {}
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>floodgate loadtest: {e(str(summary.get('scenario', '')))}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>Load test <code>{e(str(summary.get('scenario', '')))}</code>: "
        f'<span class="{overall}">{overall.upper()}</span></h1>',
        f"<p>target {e(str(summary.get('target', '')))}, started {e(str(summary.get('started_at', '')))}, "
        f"{_num(summary.get('duration_s'))} s. Generator: lateness p50 {_num(lateness.get('p50'))} ms, "
        f"p99 {_num(lateness.get('p99'))} ms, max {_num(lateness.get('max'))} ms; "
        f"{summary.get('dropped', 0)} dropped.</p>",
    ]
    if not summary.get("valid", True):
        parts.append(
            f'<p class="fail">Not a valid run: {e(str(summary.get("invalid_reason") or ""))}. '
            "Its figures measure the generator, not the system.</p>"
        )
    parts.append(
        "<h2>Verdicts</h2><table><tr><th>endpoint</th><th>threshold</th><th>measured</th><th>verdict</th></tr>"
    )
    for r in rows:
        measured = "—" if r.measured_ms is None else f"{r.measured_ms:g} ms"
        mark = {"pass": "✓", "fail": "✗"}.get(r.verdict, "")
        parts.append(
            f"<tr><td>{e(r.endpoint)}</td><td>{e(r.threshold)}</td><td>{measured}</td>"
            f'<td class="{r.verdict}">{mark} {r.verdict}</td></tr>'
        )
    parts.append("</table>")
    parts.extend(budget_html(summary.get("budget")))
    parts.append("<h2>Endpoints</h2><table><tr><th>endpoint</th>")
    columns = ("offered", "good", "rejected", "errors", "degraded", "p50_ms", "p95_ms", "p99_ms")
    parts.append("".join(f"<th>{c}</th>" for c in columns) + "</tr>")
    for endpoint, result in (summary.get("endpoints") or {}).items():
        cells = "".join(f"<td>{_num(result.get(c))}</td>" for c in columns)
        parts.append(f"<tr><td>{e(endpoint)}</td>{cells}</tr>")
    parts.append("</table>")
    followed = {name: r["jobs"] for name, r in (summary.get("endpoints") or {}).items() if r.get("jobs")}
    if followed:
        parts.append(
            "<h2>Jobs followed</h2><p>Submit to a final state, as the client saw it (ms).</p>"
            "<table><tr><th>template</th><th>followed</th><th>finished</th><th>states</th>"
            "<th>p50</th><th>p95</th><th>p99</th></tr>"
        )
        for name, jobs in followed.items():
            states = ", ".join(f"{k} {v}" for k, v in (jobs.get("states") or {}).items())
            quantiles = "".join(f"<td>{_num(jobs.get(q))}</td>" for q in ("p50_ms", "p95_ms", "p99_ms"))
            parts.append(
                f"<tr><td>{e(name)}</td><td>{_num(jobs.get('followed'))}</td>"
                f"<td>{_num(jobs.get('finished'))}</td><td>{e(states)}</td>{quantiles}</tr>"
            )
        parts.append("</table>")
    section = None
    for chart in charts:
        if chart.section != section:
            if section is not None:
                parts.append("</div>")
            section = chart.section
            parts.append(f'<h2>{e(section)}</h2><div class="charts">')
        parts.append(f'<figure id="{e(chart.slug)}">{render_svg(chart)}</figure>')
    if section is not None:
        parts.append("</div>")
    missing = _missing(summary, charts)
    if missing:
        parts.append(f"<p>No samples for: {e(', '.join(missing))}.</p>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value:+.1%}"


def budget_html(budget: Mapping[str, Any] | None) -> list[str]:
    """The budget-truth section (summary.json's ``budget``, floodgate/_load_verdict.py): predicted vs
    measured capacity with the error and the limit the plan missed, each knee's steps, isolation."""
    if not budget:
        return []
    e = html.escape
    tolerance = float(budget.get("tolerance") or 0.1)
    parts = [
        "<h2>Budget truth: predicted vs measured</h2>",
        f"<p>Capacity: the plan's prediction against the knee (the median goodput of the saturated "
        f"steps); the error is (measured - predicted) / predicted, within ±{tolerance:.0%} passes.</p>",
        "<table><tr><th>endpoint</th><th>predicted</th><th>plan's bottleneck</th><th>measured</th>"
        "<th>error</th><th>verdict</th><th>saturated at the knee</th><th>limit the plan missed</th></tr>",
    ]
    for check in budget.get("capacity") or []:
        verdict = "pass" if check.get("within") else "fail"
        measured = check.get("measured")
        if measured is None:
            measured_text = f"≥ {_num(check.get('lower_bound'))}/s (no knee)"
        else:
            measured_text = f"{_num(measured)}/s"
        parts.append(
            f"<tr><td>{e(str(check['name']))}</td><td>{_num(check.get('predicted'))}/s</td>"
            f"<td>{e(str(check.get('plan_bottleneck') or '—'))}</td><td>{measured_text}</td>"
            f'<td>{_pct(check.get("error"))}</td><td class="{verdict}">{verdict}</td>'
            f"<td>{e('; '.join(check.get('saturated') or []) or '—')}</td>"
            f"<td>{e(str(check.get('missed') or '—'))}</td></tr>"
        )
    parts.append(
        "</table><p>Steps (goodput per second at each hold; * saturated, ▲ on the plateau):</p><table>"
    )
    parts.append("<tr><th>endpoint</th><th>steps: offered → goodput</th></tr>")
    for check in budget.get("capacity") or []:
        steps = ", ".join(
            f"{_num(s['offered'])} → {_num(s['goodput'])}{'*' if s.get('saturated') else ''}"
            f"{'▲' if s.get('plateau') else ''}"
            for s in check.get("steps") or []
        )
        parts.append(f"<tr><td>{e(str(check['name']))}</td><td>{e(steps)}</td></tr>")
    parts.append("</table>")
    iso = budget.get("isolation")
    if iso:
        targets = iso.get("targets") or {}
        verdict = "pass" if iso.get("holds") else "fail"
        parts.append(
            f"<h3>Isolation: {e(str(iso['endpoint']))} alone, then with ingestion</h3>"
            "<table><tr><th>phase</th><th>offered</th><th>goodput</th><th>rejected</th><th>errors</th>"
            "<th>degraded</th><th>p50_ms</th><th>p99_ms</th></tr>"
        )
        for label, key in (("alone", "alone"), ("with ingestion", "together")):
            row = iso.get(key) or {}
            cells = "".join(
                f"<td>{_num(row.get(c))}</td>"
                for c in ("offered", "goodput", "rejected", "errors", "degraded", "p50_ms", "p99_ms")
            )
            parts.append(f"<tr><td>{label}</td>{cells}</tr>")
        parts.append(
            f"</table><p>p99 ratio {_num(iso.get('p99_ratio'))} (target ≤ {_num(targets.get('p99_ratio'))}), "
            f"goodput ratio {_num(iso.get('goodput_ratio'))} (target ≥ {_num(targets.get('goodput_ratio'))}): "
            f'<span class="{verdict}">{verdict}</span>.'
            + (f" The shared resource: {e(str(iso['resource']))}." if iso.get("resource") else "")
            + "</p>"
        )
        signals = iso.get("signals") or []
        if signals:
            parts.append("<table><tr><th>shared signal</th><th>alone</th><th>with ingestion</th></tr>")
            for sig in signals:
                parts.append(
                    f"<tr><td>{e(str(sig['signal']))}</td><td>{_num(sig.get('alone'))}</td>"
                    f"<td>{_num(sig.get('together'))}</td></tr>"
                )
            parts.append("</table>")
    inputs = budget.get("inputs") or {}
    if inputs:
        parts.append(f"<p>The plan's inputs: <code>{e(json.dumps(inputs, sort_keys=True))}</code></p>")
    return parts


def _num(value: Any) -> str:
    return "—" if value is None else f"{value:g}"


def _missing(summary: Mapping[str, Any], charts: Sequence[Chart]) -> list[str]:
    have = {c.slug for c in charts}
    wanted = {
        "pool-waits": "pool waits",
        "loop-lag": "loop lag",
        "cpu": "CPU",
        "memory": "memory",
        "queue-depth": "queue depth",
        "oldest-job-age": "oldest job age",
        "job-latency": "job latency",
        "tokens": "tokens",
        "cost": "cost",
    }
    out = [label for slug, label in wanted.items() if slug not in have]
    if not any(c.slug.startswith("gate-") for c in charts):
        out.insert(0, "gates")
    return out


# ------------------------------------------------------------------------------------------- output


def find_chromium() -> str | None:
    """Headless Chromium for the PNG figures (Debian's ``chromium`` package), or None."""
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


#: Headless Chromium without its background connections (this machine's network is closed to them).
CHROMIUM_HEADLESS_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)


def _chromium_png(chromium: str, source: Path, png: Path, *, width: int, height: int) -> None:
    subprocess.run(
        [
            chromium,
            *CHROMIUM_HEADLESS_FLAGS,
            "--hide-scrollbars",
            f"--screenshot={png}",
            f"--window-size={width},{height}",
            source.resolve().as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )


def write_report(summary: dict, out_dir: Path, *, png: bool = True) -> Path:
    """Write ``report.html`` into ``out_dir`` and return its path; beside it ``figures/`` with each chart
    as a standalone SVG (and a PNG when ``png`` and headless Chromium is installed; otherwise a note is
    printed and the PNGs are skipped), ``report.json`` (the verdicts, the overall verdict and the
    figures' files), and ``summary.json`` when it is not there yet."""
    out_dir = Path(out_dir)
    figures = out_dir / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    charts = build_charts(summary)
    page = out_dir / "report.html"
    page.write_text(render_html(summary, charts), encoding="utf-8")
    if not (out_dir / "summary.json").exists():
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    chromium = find_chromium() if png else None
    if png and chromium is None:
        print("floodgate loadtest: no PNG figures (headless Chromium is missing: apt-get install chromium)")
    written = []
    for i, chart in enumerate(charts):
        stem = f"{i:02d}-{re.sub(r'[^A-Za-z0-9_.-]+', '_', chart.slug)}"
        svg = figures / f"{stem}.svg"
        svg.write_text(render_svg(chart), encoding="utf-8")
        entry = {"title": chart.title, "svg": str(svg.relative_to(out_dir))}
        if chromium is not None:
            try:
                _chromium_png(chromium, svg, figures / f"{stem}.png", width=_WIDTH, height=_HEIGHT)
                entry["png"] = str((figures / f"{stem}.png").relative_to(out_dir))
            except (subprocess.SubprocessError, OSError) as exc:
                print(f"floodgate loadtest: no PNG for {chart.slug} ({exc})")
        written.append(entry)
    rows = verdict_rows(summary)
    verdict = "pass" if summary.get("valid", True) and all(r.verdict != "fail" for r in rows) else "fail"
    report = {
        "verdict": verdict,
        "valid": summary.get("valid", True),
        "verdicts": [asdict(r) for r in rows],
        "figures": written,
    }
    (out_dir / "report.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
    return page

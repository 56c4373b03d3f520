"""``floodgate top``: a live terminal view of a running deployment, from its Prometheus endpoints.

Four steps, each replaceable: *targets* (which ``/metrics`` to read: a cluster's state file or URLs
on the command line), *scrape* (one GET each, parsed with prometheus_client's text parser),
*snapshot* (two scrapes of the same targets -> rates and percentiles over the interval between them,
the way Prometheus's ``rate()`` and ``histogram_quantile()`` would compute them), *render* (a pure
function from a snapshot to plain text). Only the first two do I/O; tests feed canned text to the
rest. Rates need two scrapes: a snapshot from one scrape shows ``—`` where a rate would be.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit, urlunsplit

import httpx
from prometheus_client.parser import text_string_to_metric_families

__all__ = [
    "Scrape",
    "Snapshot",
    "Target",
    "TopError",
    "default_state_path",
    "histogram_quantile",
    "parse_samples",
    "read_state_targets",
    "render",
    "run_top",
    "sample_name",
    "scrape",
    "scrape_all",
    "snapshot",
    "targets_from_state",
    "targets_from_urls",
]

#: routes every chassis service serves that are not endpoints
_PROBE_ROUTES = frozenset({"/healthz", "/readyz", "/metrics", "/openapi.json", "unmatched"})
_NOT_SCRAPED = frozenset({"postgres", "migrate"})
_BREAKER = {0: "closed", 1: "half-open", 2: "open"}

#: one series: its labels and its value
Series = tuple[Mapping[str, str], float]
#: every sample of one scrape, by sample name (``http_requests_total``, ``..._bucket``)
Samples = Mapping[str, Sequence[Series]]


class TopError(Exception):
    """Nothing to look at: no state file, a state file without services, or a bad ``--target``."""


# -- targets --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """One Prometheus endpoint: ``job`` groups the replicas of a service, ``instance`` names this one."""

    job: str
    instance: str
    url: str


def _job_of(child: str) -> str:
    """``ingest-worker-2`` -> ``ingest_worker``: the scrape job names of the metrics contract."""
    return re.sub(r"-\d+$", "", child).replace("-", "_")


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "", "", ""))


def targets_from_state(document: Mapping[str, Any]) -> list[Target]:
    """The services of a local cluster from its state file (``.data/cluster.json``, read as JSON).

    Each child's metrics live on the origin of its HTTP readiness probe (``probe.http``), or of its
    ``url``: ``/metrics`` for the services, ``/stats/prometheus`` on Envoy's admin port (Envoy's probe
    is its admin ``/ready``). PostgreSQL and the one-shot migrations are not scraped.
    """
    targets = []
    for child in document.get("children", []):
        name = child.get("name", "")
        if name in _NOT_SCRAPED or child.get("state") == "done":
            continue
        probe = (child.get("probe") or {}).get("http")
        base = probe or child.get("url") or ""
        if urlsplit(base).scheme not in ("http", "https"):
            continue
        is_envoy = name == "envoy" or urlsplit(base).path == "/ready"
        path = "/stats/prometheus" if is_envoy else "/metrics"
        targets.append(Target(_job_of(name), name, _origin(base) + path))
    return targets


def targets_from_urls(specs: Iterable[str]) -> list[Target]:
    """``[JOB=]URL`` each: a service's base URL (``/metrics`` is added) or a full metrics URL.

    Without ``JOB=`` the job is ``envoy`` for a ``/stats/prometheus`` URL, else the URL's host:port.
    """
    targets = []
    for spec in specs:
        job, sep, url = spec.partition("=")
        if not sep or "://" in job:
            job, url = "", spec
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise TopError(f"--target {spec!r}: expected [JOB=]http://HOST:PORT[/PATH]")
        if parts.path in ("", "/"):
            url = _origin(url) + "/metrics"
        if not job:
            job = "envoy" if urlsplit(url).path == "/stats/prometheus" else parts.netloc
        targets.append(Target(job, parts.netloc, url))
    return targets


def read_state_targets(path: Path) -> list[Target]:
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        raise TopError(
            f"no cluster state at {path} (is the cluster running? `make start`; or give --target URLs)"
        ) from None
    except json.JSONDecodeError as exc:
        raise TopError(f"{path}: not a cluster state file ({exc})") from None
    targets = targets_from_state(document)
    if not targets:
        raise TopError(f"{path}: the cluster state names no service to scrape")
    return targets


# -- scrape ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scrape:
    """One target's samples at ``at`` (monotonic seconds), or the ``error`` that stopped the read.

    ``endpoints`` are the routes its OpenAPI document declares (``(method, route)``), so that an
    endpoint without traffic yet still has its row.
    """

    target: Target
    at: float
    samples: Samples = field(default_factory=dict)
    error: str | None = None
    endpoints: tuple[tuple[str, str], ...] = ()


def sample_name(line: str) -> str:
    """The name a sample line of a text exposition gives its sample (``name{labels} value``)."""
    return line.split("{", 1)[0].split(" ", 1)[0]


def parse_samples(text: str) -> dict[str, list[Series]]:
    """Prometheus text exposition -> series by sample name (``_total``, ``_bucket``... included)."""
    # The parser names every counter sample ``<name>_total``, also Envoy's, whose counters have no
    # such suffix, and Envoy exposes both ``upstream_rq_total`` and ``upstream_rq{code}``: a sample
    # keeps the name its own line gave it (the parser yields one sample per line, in order), the one
    # PromQL selects.
    names = [sample_name(line) for line in text.splitlines() if line.strip() and line[0] != "#"]
    parsed = [sample for family in text_string_to_metric_families(text) for sample in family.samples]
    if len(parsed) != len(names):  # not one sample a line: keep the parser's names
        names = [sample.name for sample in parsed]
    samples: dict[str, list[Series]] = defaultdict(list)
    for name, sample in zip(names, parsed, strict=True):
        samples[name].append((sample.labels, float(sample.value)))
    return dict(samples)


_RULE_PARAM = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")


def _route_template(route: str) -> str:
    """Quart's ``/jobs/<uuid:job_id>`` and OpenAPI's ``/jobs/{job_id}`` as one form."""
    return _RULE_PARAM.sub(r"{\1}", route)


def _openapi_endpoints(document: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    found = []
    for path, operations in (document.get("paths") or {}).items():
        if path in _PROBE_ROUTES or path.startswith("/healthz"):
            continue
        for method in operations:
            if method in ("get", "post", "put", "patch", "delete"):
                found.append((method.upper(), _route_template(path)))
    return tuple(found)


def scrape(
    target: Target, client: httpx.Client, *, clock: Callable[[], float] = time.monotonic, openapi: bool
) -> Scrape:
    """GET the target's metrics (and, with ``openapi``, its ``/openapi.json``); never raises."""
    at = clock()
    try:
        response = client.get(target.url)
        response.raise_for_status()
        samples = parse_samples(response.text)
    except (httpx.HTTPError, ValueError) as exc:
        return Scrape(target, at, error=f"{type(exc).__name__}: {exc}"[:120])
    endpoints: tuple[tuple[str, str], ...] = ()
    if openapi and target.job != "envoy":
        try:
            doc = client.get(_origin(target.url) + "/openapi.json")
            if doc.status_code == 200:
                endpoints = _openapi_endpoints(doc.json())
        except (httpx.HTTPError, ValueError):
            pass
    return Scrape(target, at, samples, endpoints=endpoints)


def scrape_all(targets: Sequence[Target], client: httpx.Client, *, openapi: bool = False) -> list[Scrape]:
    with ThreadPoolExecutor(max_workers=max(1, min(8, len(targets)))) as pool:
        return list(pool.map(lambda t: scrape(t, client, openapi=openapi), targets))


# -- arithmetic -----------------------------------------------------------------------------------


def _matches(labels: Mapping[str, str], match: Mapping[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in match.items())


def _key(labels: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(labels.items()))


def _increase(prev: Samples | None, cur: Samples, name: str, match: Mapping[str, str]) -> float | None:
    """Sum of a counter's increase over the series that match; a series that went down restarted
    (the process was restarted), so its whole current value is the increase, as in Prometheus."""
    if prev is None:
        return None
    before = {_key(labels): value for labels, value in prev.get(name, ()) if _matches(labels, match)}
    total = 0.0
    for labels, value in cur.get(name, ()):
        if _matches(labels, match):
            old = before.get(_key(labels), 0.0)
            total += value - old if value >= old else value
    return total


def histogram_quantile(q: float, buckets: Iterable[tuple[float, float]]) -> float | None:
    """Prometheus's ``histogram_quantile``: ``buckets`` are cumulative ``(le, count)``; linear
    interpolation inside the bucket the rank falls in; the highest finite bound when it falls in the
    ``+Inf`` bucket; None when there are no observations."""
    ordered = sorted(buckets)
    if not ordered or ordered[-1][1] <= 0:
        return None
    total = ordered[-1][1]
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for le, count in ordered:
        if count >= rank:
            if math.isinf(le):
                return lower_bound
            if count == lower_count:
                return le
            return lower_bound + (le - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = le, count
    return lower_bound


class _Window:
    """The samples of a group of targets at two scrapes: current values, increases, quantiles."""

    def __init__(self, pairs: Sequence[tuple[Scrape | None, Scrape]]) -> None:
        self._pairs = [(p, c) for p, c in pairs if c.error is None]
        spans = [c.at - p.at for p, c in self._pairs if p is not None and p.error is None]
        self.seconds = max(spans) if spans else None

    def _prev(self, prev: Scrape | None) -> Samples | None:
        return prev.samples if prev is not None and prev.error is None else None

    def has(self, name: str) -> bool:
        return any(name in c.samples for _, c in self._pairs)

    def series(self, name: str, **match: str) -> list[Series]:
        return [
            (labels, v)
            for _, c in self._pairs
            for labels, v in c.samples.get(name, ())
            if _matches(labels, match)
        ]

    def values(self, name: str, label: str, **match: str) -> set[str]:
        return {labels[label] for labels, _ in self.series(name, **match) if label in labels}

    def value(self, name: str, agg: Callable[[Iterable[float]], float] = sum, **match: str) -> float | None:
        found = [v for _, v in self.series(name, **match)]
        return agg(found) if found else None

    def increase(self, name: str, **match: str) -> float | None:
        total: float | None = None
        for prev, cur in self._pairs:
            inc = _increase(self._prev(prev), cur.samples, name, match)
            if inc is not None:
                total = (total or 0.0) + inc
        return total

    def rate(self, name: str, **match: str) -> float | None:
        inc = self.increase(name, **match)
        return None if inc is None or not self.seconds else inc / self.seconds

    def quantile(self, q: float, name: str, **match: str) -> float | None:
        """The q-quantile of a histogram's observations between the two scrapes."""
        by_le: dict[float, float] = defaultdict(float)
        seen = False
        for prev, cur in self._pairs:
            before = self._prev(prev)
            if before is None:
                continue
            for le in {labels["le"] for labels, _ in cur.samples.get(f"{name}_bucket", ()) if "le" in labels}:
                inc = _increase(before, cur.samples, f"{name}_bucket", {**match, "le": le})
                if inc is not None:
                    by_le[float(le)] += inc
                    seen = True
        return histogram_quantile(q, by_le.items()) if seen else None


# -- snapshot -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EndpointRow:
    job: str
    method: str
    route: str
    qps: float | None
    p95: float | None
    p99: float | None
    pct_429: float | None
    pct_5xx: float | None
    pct_degraded: float | None


@dataclass(frozen=True)
class DependencyRow:
    job: str
    dependency: str
    in_use: float | None
    capacity: float | None
    waiting: float | None
    p99: float | None
    n_429: float | None
    breaker: str


@dataclass(frozen=True)
class PoolRow:
    job: str
    pool: str
    in_use: float | None
    size: float | None
    wait_p99: float | None


@dataclass(frozen=True)
class ProcessRow:
    instance: str
    job: str
    up: bool
    cpu_pct: float | None
    rss_bytes: float | None
    lag_p99: float | None
    lag_max: float | None
    error: str | None = None


@dataclass(frozen=True)
class QueueView:
    #: tenant -> (queued, running, oldest runnable job's age)
    tenants: Mapping[str, tuple[float, float, float]]
    jobs_per_s: float | None
    failed_per_s: float | None
    dead: float | None


@dataclass(frozen=True)
class GatewayView:
    rps: float | None
    #: response code class ("2", "4", "5") -> share of downstream responses, percent
    pct_by_class: Mapping[str, float]


@dataclass(frozen=True)
class Snapshot:
    """What one refresh shows. ``seconds`` is the interval the rates cover (None: one scrape)."""

    seconds: float | None
    endpoints: tuple[EndpointRow, ...]
    dependencies: tuple[DependencyRow, ...]
    pools: tuple[PoolRow, ...]
    processes: tuple[ProcessRow, ...]
    queue: QueueView | None
    gateway: GatewayView | None
    #: per job: degraded steps per second, by step (the online endpoints' fallbacks)
    degraded: Mapping[str, Mapping[str, float]] = field(default_factory=dict)


def _pct(part: float | None, whole: float | None) -> float | None:
    if part is None or whole is None:
        return None
    return 100.0 * part / whole if whole > 0 else 0.0


def snapshot(previous: Sequence[Scrape] | None, current: Sequence[Scrape]) -> Snapshot:
    """Rates and percentiles over the interval between ``previous`` and ``current`` (the same
    targets, scraped twice); from ``current`` alone, gauges only (rates are None)."""
    before = {s.target: s for s in previous or ()}
    pairs = [(before.get(s.target), s) for s in current]
    jobs: dict[str, list[tuple[Scrape | None, Scrape]]] = defaultdict(list)
    for pair in pairs:
        jobs[pair[1].target.job].append(pair)
    windows = {job: _Window(group) for job, group in jobs.items()}
    every = _Window(pairs)

    endpoints: list[EndpointRow] = []
    dependencies: list[DependencyRow] = []
    pools: list[PoolRow] = []
    degraded: dict[str, dict[str, float]] = {}
    for job, w in windows.items():
        if job == "envoy":
            continue
        endpoints += _endpoints(job, w, [c for _, c in jobs[job]])
        dependencies += _dependencies(job, w)
        pools += _pools(job, w)
        steps = {
            step: rate
            for step in sorted(w.values("floodgate_degraded_total", "step"))
            if (rate := w.rate("floodgate_degraded_total", step=step))
        }
        if steps:
            degraded[job] = steps
    processes = [_process(prev, cur) for prev, cur in pairs]
    return Snapshot(
        seconds=every.seconds,
        endpoints=tuple(endpoints),
        dependencies=tuple(dependencies),
        pools=tuple(pools),
        processes=tuple(processes),
        queue=_queue(every),
        gateway=_gateway(windows["envoy"])
        if "envoy" in windows and windows["envoy"].has("envoy_http_downstream_rq_xx")
        else None,
        degraded=degraded,
    )


def _endpoints(job: str, w: _Window, scrapes: Sequence[Scrape]) -> list[EndpointRow]:
    declared = {e for s in scrapes for e in s.endpoints}
    seen = {
        (labels.get("method", ""), _route_template(labels["route"])): labels["route"]
        for labels, _ in w.series("http_requests_total")
        if labels.get("route") not in _PROBE_ROUTES
    }
    rows = []
    served = (
        "2xx"
        if any("status_class" in labels for labels, _ in w.series("http_request_duration_seconds_count"))
        else None
    )
    for method, template in sorted(declared | set(seen), key=lambda e: (e[1], e[0])):
        route = seen.get((method, template))
        if route is None:
            total = n_429 = n_5xx = p95 = p99 = None
            if w.seconds:
                total = n_429 = n_5xx = 0.0
        else:
            match = {"route": route, "method": method}
            total = w.increase("http_requests_total", **match)
            n_429 = w.increase("http_requests_total", status="429", **match)
            n_5xx = (
                sum(
                    w.increase("http_requests_total", status=s, **match) or 0.0
                    for s in w.values("http_requests_total", "status", **match)
                    if s.startswith("5")
                )
                if total is not None
                else None
            )
            hist = {**match, "status_class": served} if served else match
            p95 = w.quantile(0.95, "http_request_duration_seconds", **hist)
            p99 = w.quantile(0.99, "http_request_duration_seconds", **hist)
        degraded = None
        if route is not None and w.has("online_degraded_responses_total"):
            # The answers served with a fallen-back step, counted per route by the online service.
            degraded = _pct(w.increase("online_degraded_responses_total", route=route) or 0.0, total)
        rows.append(
            EndpointRow(
                job,
                method,
                template,
                None if total is None or not w.seconds else total / w.seconds,
                p95,
                p99,
                _pct(n_429, total),
                _pct(n_5xx, total),
                degraded,
            )
        )
    return rows


def _dependencies(job: str, w: _Window) -> list[DependencyRow]:
    names = w.values("floodgate_gate_capacity", "gate") | w.values(
        "floodgate_downstream_latency_seconds_count", "dependency"
    )
    rows = []
    for name in sorted(names, key=lambda n: (n.startswith("admission_"), n)):
        state = w.value("floodgate_breaker_state", max, dependency=name)
        n_429 = w.increase("floodgate_attempts_total", dependency=name, outcome="429")
        if n_429 is not None and not w.has("floodgate_attempts_total"):
            n_429 = None
        rows.append(
            DependencyRow(
                job,
                name,
                w.value("floodgate_gate_in_use", gate=name),
                w.value("floodgate_gate_capacity", gate=name),
                w.value("floodgate_gate_waiting", gate=name),
                w.quantile(0.99, "floodgate_downstream_latency_seconds", dependency=name),
                n_429,
                "-" if state is None else _BREAKER.get(int(state), str(state)),
            )
        )
    return rows


def _pools(job: str, w: _Window) -> list[PoolRow]:
    return [
        PoolRow(
            job,
            pool,
            w.value("floodgate_pool_in_use", pool=pool),
            w.value("floodgate_pool_size", pool=pool),
            w.quantile(0.99, "floodgate_pool_acquire_wait_seconds", pool=pool),
        )
        for pool in sorted(w.values("floodgate_pool_size", "pool"))
    ]


def _process(prev: Scrape | None, cur: Scrape) -> ProcessRow:
    if cur.error is not None:
        return ProcessRow(cur.target.instance, cur.target.job, False, None, None, None, None, cur.error)
    w = _Window([(prev, cur)])
    cpu = w.rate("process_cpu_seconds_total")
    if cpu is not None and not w.has("process_cpu_seconds_total"):
        cpu = None
    lag = (
        "floodgate_loop_lag_seconds"
        if w.has("floodgate_loop_lag_seconds_bucket")
        else "ratelimit_loop_round_seconds"
    )
    rss = w.value("process_resident_memory_bytes")
    if rss is None:  # Envoy: what its allocator holds
        rss = w.value("envoy_server_memory_allocated")
    return ProcessRow(
        cur.target.instance,
        cur.target.job,
        True,
        None if cpu is None else 100.0 * cpu,
        rss,
        w.quantile(0.99, lag),
        w.value("floodgate_loop_lag_max_seconds", max),
    )


def _queue(w: _Window) -> QueueView | None:
    # An empty queue has no depth series at all: a worker is there when its counters are.
    if not (w.has("ingest_queue_depth") or w.has("ingest_jobs_dead_total")):
        return None
    tenants: dict[str, tuple[float, float, float]] = {}
    # Every worker samples the whole queue: the freshest view is the largest of their readings.
    for tenant in sorted(w.values("ingest_queue_depth", "tenant")):
        tenants[tenant] = (
            w.value("ingest_queue_depth", max, tenant=tenant, state="queued") or 0.0,
            w.value("ingest_queue_depth", max, tenant=tenant, state="running") or 0.0,
            w.value("ingest_oldest_runnable_job_age_seconds", max, tenant=tenant) or 0.0,
        )
    return QueueView(
        tenants,
        w.rate("ingest_job_outcomes_total", outcome="succeeded"),
        w.rate("ingest_job_outcomes_total", outcome="failed"),
        w.value("ingest_jobs_dead_total"),
    )


def _gateway(w: _Window) -> GatewayView:
    # Envoy counts its admin listener too; only the gateway's own listeners are traffic.
    classes = {
        c: w.increase("envoy_http_downstream_rq_xx", envoy_response_code_class=c) or 0.0
        for c in sorted(w.values("envoy_http_downstream_rq_xx", "envoy_response_code_class"))
    }
    admin = {
        c: w.increase(
            "envoy_http_downstream_rq_xx", envoy_response_code_class=c, envoy_http_conn_manager_prefix="admin"
        )
        or 0.0
        for c in classes
    }
    traffic = {c: classes[c] - admin[c] for c in classes}
    total = sum(traffic.values())
    return GatewayView(
        None if not w.seconds or w.increase("envoy_http_downstream_rq_xx") is None else total / w.seconds,
        {c: _pct(n, total) or 0.0 for c, n in traffic.items()} if total else {},
    )


# -- render ---------------------------------------------------------------------------------------

DASH = "—"


def _num(value: float | None, fmt: str = "{:.1f}") -> str:
    return DASH if value is None else fmt.format(value)


def _ms(value: float | None) -> str:
    if value is None:
        return DASH
    return f"{value * 1000:.0f}ms" if value < 10 else f"{value:.0f}s"


def _bytes(value: float | None) -> str:
    if value is None:
        return DASH
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    return DASH  # unreachable


def _age(seconds: float) -> str:
    return f"{seconds:.0f}s" if seconds < 120 else f"{seconds / 60:.0f}m"


def _table(
    title: str, headers: Sequence[str], rows: Sequence[Sequence[str]], bold: Callable[[str], str]
) -> list[str]:
    lines = [bold(title)]
    if not rows:
        return [*lines, "  (none)"]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        # the first column reads left to right, the figures line up on the right
        first = cells[0].ljust(widths[0])
        rest = [c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True)]
        return "  " + "  ".join([first, *rest]).rstrip()

    return [*lines, line(headers), *(line(r) for r in rows)]


def render(snap: Snapshot, *, title: str = "floodgate top", bold: Callable[[str], str] = str) -> str:
    """The view as plain text: one table per section, ``—`` where there is no figure yet."""
    over = DASH if snap.seconds is None else f"{snap.seconds:.1f}s"
    out = [f"{title}   rates over {over}", ""]
    out += _table(
        "Endpoints",
        ["endpoint", "qps", "p95", "p99", "429%", "5xx%", "degr%"],
        [
            [
                f"{e.job} {e.method} {e.route}",
                _num(e.qps),
                _ms(e.p95),
                _ms(e.p99),
                _num(e.pct_429),
                _num(e.pct_5xx),
                _num(e.pct_degraded),
            ]
            for e in snap.endpoints
        ],
        bold,
    )
    for job, steps in snap.degraded.items():
        out.append(f"  {job} degraded steps/s: " + ", ".join(f"{s} {r:.1f}" for s, r in steps.items()))
    if snap.gateway is not None:
        g = snap.gateway
        classes = "  ".join(f"{c}xx {p:.1f}%" for c, p in g.pct_by_class.items()) or DASH
        out += ["", bold("Gateway"), f"  downstream {_num(g.rps)} rq/s   {classes}"]
    out.append("")
    out += _table(
        "Dependencies",
        ["dependency", "in use/cap", "waiting", "p99", "429s", "breaker"],
        [
            [
                f"{d.job} {d.dependency}",
                f"{_num(d.in_use, '{:.0f}')}/{_num(d.capacity, '{:.0f}')}",
                _num(d.waiting, "{:.0f}"),
                _ms(d.p99),
                _num(d.n_429, "{:.0f}"),
                d.breaker,
            ]
            for d in snap.dependencies
        ],
        bold,
    )
    out.append("")
    out += _table(
        "Pools",
        ["pool", "in use/size", "wait p99"],
        [
            [f"{p.job} {p.pool}", f"{_num(p.in_use, '{:.0f}')}/{_num(p.size, '{:.0f}')}", _ms(p.wait_p99)]
            for p in snap.pools
        ],
        bold,
    )
    out.append("")
    q = snap.queue
    if q is None:
        out += [bold("Queue"), "  (no ingest worker scraped)"]
    else:
        queued = sum(t[0] for t in q.tenants.values())
        running = sum(t[1] for t in q.tenants.values())
        oldest = max((t[2] for t in q.tenants.values()), default=0.0)
        out += [
            bold("Queue"),
            f"  depth {queued:.0f} queued, {running:.0f} running   oldest runnable {_age(oldest)}   "
            f"jobs/s {_num(q.jobs_per_s, '{:.2f}')}   failed/s {_num(q.failed_per_s, '{:.2f}')}   "
            f"dead {_num(q.dead, '{:.0f}')}",
        ]
        out += [
            f"    {tenant}: {t[0]:.0f} queued, {t[1]:.0f} running, oldest {_age(t[2])}"
            for tenant, t in q.tenants.items()
            if t[0] or t[1]
        ]
    out.append("")
    out += _table(
        "Processes",
        ["process", "cpu%", "rss", "loop lag p99", "lag max"],
        [
            [p.instance, _num(p.cpu_pct), _bytes(p.rss_bytes), _ms(p.lag_p99), _ms(p.lag_max)]
            if p.up
            else [p.instance, "down", DASH, DASH, DASH]
            for p in snap.processes
        ],
        bold,
    )
    out += [f"  {p.instance} ({p.job}) is down: {p.error}" for p in snap.processes if not p.up]
    return "\n".join(out) + "\n"


# -- the loop -------------------------------------------------------------------------------------

_CLEAR = "\x1b[H\x1b[2J"


def run_top(
    targets: Sequence[Target],
    *,
    once: bool,
    interval: float,
    out: TextIO,
    client: httpx.Client | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Scrape every ``interval`` seconds and redraw (ANSI clear + home; Ctrl-C stops). ``once``:
    two scrapes ``interval`` apart, one snapshot printed, no escape codes."""
    colour = out.isatty() and not once
    bold: Callable[[str], str] = (lambda s: f"\x1b[1m{s}\x1b[0m") if colour else str
    owned = client is None
    client = client or httpx.Client(timeout=max(0.5, min(interval, 2.0)))
    try:
        previous = scrape_all(targets, client, openapi=True)
        endpoints = {s.target: s.endpoints for s in previous}
        if not once:
            out.write(_CLEAR + render(snapshot(None, previous), bold=bold))
            out.flush()
        while True:
            sleep(interval)
            current = [
                Scrape(s.target, s.at, s.samples, s.error, endpoints.get(s.target, ()))
                for s in scrape_all(targets, client)
            ]
            text = render(snapshot(previous, current), bold=bold)
            if once:
                out.write(text)
                return 0 if any(s.error is None for s in current) else 1
            out.write(_CLEAR + text)
            out.flush()
            previous = current
    except KeyboardInterrupt:
        return 0
    finally:
        if owned:
            client.close()


def default_state_path(environ: Mapping[str, str] | None = None) -> Path:
    """The local cluster's state file: ``$FLOODGATE_DATA_DIR/cluster.json`` (default ``.data``)."""
    env = os.environ if environ is None else environ
    return Path(env.get("FLOODGATE_DATA_DIR") or ".data") / "cluster.json"

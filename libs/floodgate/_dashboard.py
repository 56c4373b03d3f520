"""``floodgate dashboard``: a Grafana dashboard generated from the budget file.

One row per endpoint (requests, served p95/p99 against the budget's SLO targets, 429 and 5xx
shares) and one per dependency (gate in use / capacity / waiting, latency, 429s and 5xx, retries,
refusals, breaker; the pool of a PostgreSQL dependency; HTTP connection wait, tokens and cost of an
HTTP one), then the queue, the processes and the gateway. The budget does not know the URL routes
its endpoints are served on: the caller names them (``routes``, the ``route`` label of
``http_requests_total``). Every panel's PromQL is in `dashboard_expressions`, so promtool can check
them (`recording_rules` wraps them in a rule file).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from typing import Any

from ._budget import Budget

__all__ = [
    "DashboardError",
    "build_dashboard",
    "dashboard_expressions",
    "recording_rules",
    "referenced_metrics",
    "render_dashboard",
]

#: the Prometheus data source the provisioning files declare (observability/grafana/provisioning)
DATASOURCE = {"type": "prometheus", "uid": "prometheus"}
_WINDOW = "1m"


class DashboardError(ValueError):
    """An endpoint without a route, or a route for an endpoint the budget does not have."""


def _q(quantile: float, histogram: str, selector: str, by: str = "") -> str:
    group = f"le{', ' + by if by else ''}"
    return f"histogram_quantile({quantile}, sum by ({group}) (rate({histogram}_bucket{{{selector}}}[{_WINDOW}])))"


def _rate(counter: str, selector: str = "", by: str = "") -> str:
    grouping = f" by ({by})" if by else ""
    return f"sum{grouping} (rate({counter}{{{selector}}}[{_WINDOW}]))"


class _Layout:
    """Places rows and panels on Grafana's 24-column grid, numbering them."""

    def __init__(self) -> None:
        self.panels: list[dict[str, Any]] = []
        self._y = 0
        self._x = 0
        self._id = 0

    def _next_id(self) -> int:
        self._id += 1
        return self._id

    def row(self, title: str) -> None:
        if self._x:
            self._y += 8
            self._x = 0
        self.panels.append(
            {
                "type": "row",
                "id": self._next_id(),
                "title": title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": self._y},
                "panels": [],
            }
        )
        self._y += 1

    def panel(
        self,
        title: str,
        targets: list[tuple[str, str]],
        *,
        unit: str = "short",
        thresholds: list[tuple[str, float]] | None = None,
        description: str = "",
    ) -> None:
        if self._x + 8 > 24:
            self._x = 0
            self._y += 8
        defaults: dict[str, Any] = {"unit": unit}
        if thresholds:
            defaults["thresholds"] = {
                "mode": "absolute",
                "steps": [{"color": "green", "value": None}]
                + [{"color": color, "value": value} for color, value in thresholds],
            }
            defaults["custom"] = {"thresholdsStyle": {"mode": "line"}}
        panel: dict[str, Any] = {
            "type": "timeseries",
            "id": self._next_id(),
            "title": title,
            "datasource": DATASOURCE,
            "gridPos": {"h": 8, "w": 8, "x": self._x, "y": self._y},
            "fieldConfig": {"defaults": defaults, "overrides": []},
            "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
            "targets": [
                {"refId": chr(ord("A") + i), "expr": expr, "legendFormat": legend, "datasource": DATASOURCE}
                for i, (expr, legend) in enumerate(targets)
            ],
        }
        if description:
            panel["description"] = description
        self.panels.append(panel)
        self._x += 8


def build_dashboard(budget: Budget, *, routes: Mapping[str, str]) -> dict[str, Any]:
    """The dashboard as Grafana's JSON model. ``routes``: endpoint name -> the ``route`` label of its
    requests, optionally after the method (``"POST /v1/omnirag/jobs"``: the same route may serve
    other methods)."""
    missing = sorted(set(budget.endpoints) - set(routes))
    unknown = sorted(set(routes) - set(budget.endpoints))
    if missing:
        raise DashboardError(
            "no route for endpoint(s) " + ", ".join(missing) + " (give --route NAME=ROUTE for each)"
        )
    if unknown:
        raise DashboardError("route(s) for endpoint(s) the budget does not have: " + ", ".join(unknown))
    grid = _Layout()
    _overview(grid)
    for name, policy in budget.endpoints.items():
        route = routes[name]
        method, _, path = route.rpartition(" ")
        sel = f'route="{path}"' + (f',method="{method}"' if method else "")
        grid.row(f"Endpoint {name} ({route})")
        grid.panel(
            "Requests/s by status class",
            [(_rate("http_requests_total", sel, "status_class"), "{{status_class}}")],
            unit="reqps",
        )
        served = f'{sel},status_class="2xx"'
        grid.panel(
            "Served latency p95 / p99 (2xx) vs SLO",
            [
                (_q(0.95, "http_request_duration_seconds", served), "p95"),
                (_q(0.99, "http_request_duration_seconds", served), "p99"),
            ],
            unit="s",
            thresholds=[("orange", policy.slo_p95_ms / 1000), ("red", policy.slo_p99_ms / 1000)],
            description=f"SLO: p95 {policy.slo_p95_ms:g} ms, p99 {policy.slo_p99_ms:g} ms (budget file)",
        )
        everything = _rate("http_requests_total", sel)
        refused = _rate("http_requests_total", sel + ',status="429"')
        failed = _rate("http_requests_total", sel + ',status_class="5xx"')
        grid.panel(
            "429 and 5xx share",
            [(f"{refused} / {everything}", "429"), (f"{failed} / {everything}", "5xx")],
            unit="percentunit",
        )
    for name, dep in budget.dependencies.items():
        _dependency_row(grid, name, dep.kind, dep.max_wait)
    _queue(grid)
    _processes(grid)
    _gateway(grid)
    return {
        "uid": "floodgate",
        "title": "Floodgate",
        "description": "Generated by `floodgate dashboard` from the budget file; do not edit by hand.",
        "tags": ["floodgate"],
        "editable": True,
        "schemaVersion": 39,
        "time": {"from": "now-1h", "to": "now"},
        "refresh": "10s",
        "timezone": "",
        "templating": {"list": []},
        "annotations": {"list": []},
        "panels": grid.panels,
    }


def _overview(grid: _Layout) -> None:
    grid.row("Overview")
    grid.panel(
        "Requests/s by service and status class",
        [
            (
                _rate("http_requests_total", 'route!~"/healthz|/readyz|/metrics"', "job, status_class"),
                "{{job}} {{status_class}}",
            )
        ],
        unit="reqps",
    )
    grid.panel(
        "Degraded steps/s (answers served with a fallback)",
        [(_rate("floodgate_degraded_total", "", "step, reason"), "{{step}} {{reason}}")],
        unit="ops",
    )
    grid.panel(
        "Endpoint doors: in use / capacity",
        [
            ('sum by (gate) (floodgate_gate_in_use{gate=~"admission_.*"})', "{{gate}} in use"),
            ('sum by (gate) (floodgate_gate_capacity{gate=~"admission_.*"})', "{{gate}} capacity"),
        ],
    )


def _dependency_row(grid: _Layout, name: str, kind: str, max_wait: float) -> None:
    dep = f'dependency="{name}"'
    gate = f'gate="{name}"'
    grid.row(f"Dependency {name} ({kind})")
    grid.panel(
        "Gate: in use / capacity / waiting",
        [
            (f"sum by (job) (floodgate_gate_in_use{{{gate}}})", "{{job}} in use"),
            (f"sum by (job) (floodgate_gate_capacity{{{gate}}})", "{{job}} capacity"),
            (f"sum by (job) (floodgate_gate_waiting{{{gate}}})", "{{job}} waiting"),
        ],
    )
    grid.panel(
        "Gate wait p99 vs max_wait",
        [(_q(0.99, "floodgate_gate_wait_seconds", gate, "job"), "{{job}}")],
        unit="s",
        thresholds=[("red", max_wait)],
    )
    grid.panel(
        "Attempt latency p95 / p99",
        [
            (_q(0.95, "floodgate_downstream_latency_seconds", dep), "p95"),
            (_q(0.99, "floodgate_downstream_latency_seconds", dep), "p99"),
        ],
        unit="s",
    )
    grid.panel(
        "Attempts/s by outcome (429, 5xx, timeouts)",
        [(_rate("floodgate_attempts_total", dep, "outcome"), "{{outcome}}")],
        unit="ops",
    )
    grid.panel(
        "Retries and refusals/s",
        [
            (_rate("floodgate_retries_total", dep, "reason"), "retry {{reason}}"),
            (_rate("floodgate_rejections_total", dep, "reason"), "refused {{reason}}"),
        ],
        unit="ops",
    )
    grid.panel(
        "Breaker state (0 closed, 1 half-open, 2 open)",
        [(f"max by (job) (floodgate_breaker_state{{{dep}}})", "{{job}}")],
    )
    if kind == "postgres":
        pool = f'pool="{name}"'
        grid.panel(
            "Pool: in use / size",
            [
                (f"sum by (job) (floodgate_pool_in_use{{{pool}}})", "{{job}} in use"),
                (f"sum by (job) (floodgate_pool_size{{{pool}}})", "{{job}} size"),
            ],
        )
        grid.panel(
            "Pool acquire wait p99",
            [(_q(0.99, "floodgate_pool_acquire_wait_seconds", pool, "job"), "{{job}}")],
            unit="s",
        )
    else:
        grid.panel(
            "HTTP connection wait p99",
            [(_q(0.99, "floodgate_http_connection_wait_seconds", dep, "job"), "{{job}}")],
            unit="s",
        )
        grid.panel(
            "Tokens/s and estimated cost/h",
            [
                (_rate("floodgate_tokens_total", dep, "kind"), "{{kind}} tokens/s"),
                (f"3600 * {_rate('floodgate_cost_usd_total', dep)}", "USD/h"),
            ],
        )


def _queue(grid: _Layout) -> None:
    grid.row("Queue (omniRAG ingestion)")
    grid.panel(
        "Depth by state",
        [("max by (state) (sum by (state, instance) (ingest_queue_depth))", "{{state}}")],
    )
    grid.panel(
        "Oldest runnable job age",
        [("max(ingest_oldest_runnable_job_age_seconds)", "oldest")],
        unit="s",
    )
    grid.panel(
        "Job latency p95 (submit to finish) and queue wait p95",
        [
            (_q(0.95, "ingest_job_latency_seconds", "", "outcome"), "{{outcome}}"),
            (_q(0.95, "ingest_queue_wait_seconds", ""), "queue wait"),
            (_q(0.95, "ingest_job_duration_seconds", ""), "one attempt"),
        ],
        unit="s",
    )
    grid.panel(
        "Jobs/s by outcome",
        [(_rate("ingest_job_outcomes_total", "", "outcome"), "{{outcome}}")],
        unit="ops",
    )
    grid.panel(
        "Retries, dead jobs, lease expiries",
        [
            (_rate("ingest_job_retries_total"), "retries/s"),
            (_rate("ingest_jobs_dead_total"), "dead/s"),
            (_rate("ingest_lease_expiries_total"), "lease expiries/s"),
            ("max(ingest_jobs_expired_leases)", "running with expired lease"),
        ],
    )


def _processes(grid: _Layout) -> None:
    grid.row("Processes")
    grid.panel(
        "CPU (cores)", [("sum by (job, instance) (rate(process_cpu_seconds_total[1m]))", "{{instance}}")]
    )
    grid.panel(
        "Resident memory",
        [("sum by (job, instance) (process_resident_memory_bytes)", "{{instance}}")],
        unit="bytes",
    )
    grid.panel("Open file descriptors", [("sum by (job, instance) (process_open_fds)", "{{instance}}")])
    grid.panel(
        "Event-loop lag p99 and max",
        [
            (_q(0.99, "floodgate_loop_lag_seconds", "", "job, instance"), "{{instance}} p99"),
            ("max by (job, instance) (floodgate_loop_lag_max_seconds)", "{{instance}} max"),
            (_q(0.99, "ratelimit_loop_round_seconds", "", "job, instance"), "{{instance}} loop round p99"),
        ],
        unit="s",
    )
    grid.panel(
        "GC pause p99",
        [(_q(0.99, "floodgate_gc_pause_seconds", "", "job, generation"), "{{job}} gen {{generation}}")],
        unit="s",
    )


def _gateway(grid: _Layout) -> None:
    grid.row("Gateway (Envoy) and rate-limit service")
    grid.panel(
        "Downstream requests/s by code class",
        [
            (
                _rate(
                    "envoy_http_downstream_rq_xx",
                    'envoy_http_conn_manager_prefix!="admin"',
                    "envoy_response_code_class",
                ),
                "{{envoy_response_code_class}}xx",
            )
        ],
        unit="reqps",
    )
    grid.panel(
        "Upstream requests/s by cluster and code class",
        [
            (
                _rate("envoy_cluster_upstream_rq_xx", "", "envoy_cluster_name, envoy_response_code_class"),
                "{{envoy_cluster_name}} {{envoy_response_code_class}}xx",
            )
        ],
        unit="reqps",
    )
    grid.panel(
        "Rate-limit decisions/s by verdict",
        [(_rate("ratelimit_requests_total", "", "code"), "{{code}}")],
        unit="ops",
    )


def _walk_targets(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard.get("panels", []):
        yield from panel.get("targets", [])
        for inner in panel.get("panels", []):
            yield from inner.get("targets", [])


def dashboard_expressions(dashboard: Mapping[str, Any]) -> list[str]:
    """Every PromQL expression of the dashboard's panels, each once, in panel order."""
    return list(dict.fromkeys(t["expr"] for t in _walk_targets(dashboard)))


_SELECTORS = re.compile(
    r"\{[^}]*\}|\[[^\]]*\]|\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)"
)
_NAME = re.compile(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\b(?!\s*\()")
_KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset", "group_left", "group_right"})


def referenced_metrics(expressions: list[str]) -> set[str]:
    """The metric names the expressions select (label matchers, ranges, groupings and function
    names left out)."""
    names = set()
    for expr in expressions:
        names.update(_NAME.findall(_SELECTORS.sub(" ", expr)))
    return names - _KEYWORDS


def recording_rules(dashboard: Mapping[str, Any]) -> str:
    """A Prometheus rule file recording every dashboard expression (JSON, which YAML reads), for
    ``promtool check rules``: the dashboard's PromQL checked by Prometheus's own parser."""
    rules = [
        {"record": f"floodgate_dashboard:expr_{i:03d}", "expr": expr}
        for i, expr in enumerate(dashboard_expressions(dashboard), start=1)
    ]
    return json.dumps({"groups": [{"name": "floodgate_dashboard", "rules": rules}]}, indent=2) + "\n"


def render_dashboard(dashboard: Mapping[str, Any]) -> str:
    """The committed form: stable key order, two-space indent, one trailing newline."""
    return json.dumps(dashboard, indent=2, ensure_ascii=False) + "\n"

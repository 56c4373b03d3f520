"""Prometheus alerting rules generated from the budget file: the symptom table, executable.

`alert_rules` turns a `Budget` into one rules document (``groups:``) whose thresholds are the
budget's own numbers, so an alert moves when the budget does: each endpoint's SLO latencies
(``slo_p95_ms``/``slo_p99_ms``), each gate's ``max_wait``, each pool's size, the ``[cost]`` limits.
`rules_yaml` writes it as YAML; ``floodgate alerts`` prints it.

The six symptoms, each an alert whose runbook (``docs/runbooks/<alert>.md``) says what it means,
how to confirm it and which budget key to change:

====================================  =========================================================
``FloodgateSlowWhileCPUIdle``         1. p95 above its SLO while the process's CPU is low
``FloodgateGateWaitNearMaxWait``      2. callers wait at a gate nearly as long as ``max_wait``
``FloodgateTimeoutBurst``             2. a burst of 504s (requests that piled up time out together)
``FloodgateJobLeasesExpired``         3. running jobs whose lease expired (a worker is stuck or gone)
``FloodgateOldestJobTooOld``          3. the oldest runnable job waited too long
``FloodgateJobsDead``                 3. jobs moved to dead
``FloodgateDbPoolExhausted``          4. a pool in use at its size, or slow to hand out connections
``FloodgateProviderThrottled``        5. a provider answers 429 to a share of the attempts
``FloodgateSpendOverBudget``          5. tokens or estimated dollars per hour above ``[cost]``
``FloodgateIngestSlowingOnline``      6. p99 above its SLO while ingestion is running
====================================  =========================================================

plus, per endpoint and SLO percentile, the SRE workbook's multi-window, multi-burn-rate alerts on
the fraction of requests slower than the SLO latency (``FloodgateLatencySLOFastBurn``: 1 h and
5 min at 14.4 times the error budget; ``FloodgateLatencySLOSlowBurn``: 6 h and 30 min at 6 times).
A p95 target allows 5 % of requests above it, a p99 target 1 %.

Requests are selected by the route label the services count them under (``routes``: endpoint name
-> route, or ``"METHOD route"`` when other methods share the route), which the budget does not hold;
the scrape jobs are the budget's service names. The
request histogram must have a bucket at every SLO latency (`slo_bucket_bounds`): the fraction above
the SLO is read from the bucket at exactly that bound.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from ._budget import Budget

__all__ = ["ALERT_NAMES", "alert_rules", "rules_yaml", "slo_bucket_bounds"]

ALERT_NAMES = (
    "FloodgateSlowWhileCPUIdle",
    "FloodgateGateWaitNearMaxWait",
    "FloodgateTimeoutBurst",
    "FloodgateJobLeasesExpired",
    "FloodgateOldestJobTooOld",
    "FloodgateJobsDead",
    "FloodgateDbPoolExhausted",
    "FloodgateProviderThrottled",
    "FloodgateSpendOverBudget",
    "FloodgateIngestSlowingOnline",
    "FloodgateLatencySLOFastBurn",
    "FloodgateLatencySLOSlowBurn",
)

#: (alert, long window, short window, burn rate, for): the SRE workbook's two paging pairs.
_BURN_WINDOWS = (
    ("FloodgateLatencySLOFastBurn", "1h", "5m", 14.4, "2m"),
    ("FloodgateLatencySLOSlowBurn", "6h", "30m", 6.0, "15m"),
)
#: The error budget of a percentile target: the fraction of requests allowed above it.
_ALLOWED_SLOW = {"p95": 0.05, "p99": 0.01}
_SLOW_RATIO = "floodgate_endpoint:slow_requests:ratio_rate"

#: "CPU is low": under half of one core (a Python process uses at most one).
CPU_IDLE_CORES = 0.5
#: "near max_wait": the gate's p95 wait above this fraction of it.
NEAR_MAX_WAIT = 0.8
#: A pool is slow to hand out connections when its p95 acquire wait passes this fraction of max_wait.
POOL_WAIT_FRACTION = 0.5
#: 504s above this fraction of an endpoint's requests are a burst.
TIMEOUT_RATIO = 0.05
#: 429s above this fraction of a dependency's attempts.
THROTTLED_RATIO = 0.05
#: Ingestion's service in the budget: whose running jobs may slow the endpoints it shares with.
INGEST_SERVICE = "ingest_worker"


def slo_bucket_bounds(budget: Budget) -> tuple[float, ...]:
    """Every SLO latency of the budget's endpoints, in seconds: the request histogram needs a
    bucket at each (the SLO alerts read the fraction of requests above it from that bucket)."""
    bounds = {ms / 1000.0 for ep in budget.endpoints.values() for ms in (ep.slo_p95_ms, ep.slo_p99_ms)}
    return tuple(sorted(bounds))


def alert_rules(
    budget: Budget,
    *,
    routes: Mapping[str, str],
    runbook_base: str = "docs/runbooks",
    max_job_age: float = 600.0,
) -> dict[str, Any]:
    """The rules document (``{"groups": [...]}``) for ``budget``.

    ``routes`` maps every endpoint of the budget to the route its requests are counted under
    (``http_requests_total{route=...}``), optionally after its method (``"POST /v1/jobs"``) when the
    route serves other methods too; ``runbook_base`` prefixes each ``runbook_url``;
    ``max_job_age`` is the age (seconds) at which the oldest runnable job is too old.
    Raises `LookupError` naming the endpoints without a route.
    """
    missing = sorted(set(budget.endpoints) - set(routes))
    if missing:
        raise LookupError(
            f"no route for endpoint(s) {', '.join(missing)}: give each as ENDPOINT=[METHOD ]ROUTE"
        )
    rules = _Rules(runbook_base)
    recording: list[dict[str, Any]] = []
    windows = sorted({w for _, long, short, _, _ in _BURN_WINDOWS for w in (long, short)}, key=_minutes)
    for name, ep in budget.endpoints.items():
        for slo, ms in (("p95", ep.slo_p95_ms), ("p99", ep.slo_p99_ms)):
            recording.extend(
                {
                    "record": f"{_SLOW_RATIO}{window}",
                    "expr": _slow_ratio(_requests(routes[name]), ms / 1000.0, window),
                    "labels": {"endpoint": name, "slo": slo},
                }
                for window in windows
            )
    for name, ep in budget.endpoints.items():
        _endpoint_alerts(rules, budget, name, routes[name], ep.slo_p95_ms, ep.slo_p99_ms)
    _gate_alerts(rules, budget)
    _job_alerts(rules, max_job_age)
    _pool_alerts(rules, budget)
    _provider_alerts(rules, budget)
    groups = [
        {"name": "floodgate-slo-ratios", "rules": recording},
        {"name": "floodgate-slo-burn", "rules": rules.groups["slo"]},
        {"name": "floodgate-symptoms", "rules": rules.groups["symptoms"]},
    ]
    return {"groups": [g for g in groups if g["rules"]]}


# -- the rules -----------------------------------------------------------------------------------


class _Rules:
    def __init__(self, runbook_base: str) -> None:
        self.base = runbook_base.rstrip("/")
        self.groups: dict[str, list[dict[str, Any]]] = {"slo": [], "symptoms": []}

    def add(
        self,
        group: str,
        alert: str,
        expr: str,
        *,
        for_: str | None,
        severity: str,
        labels: Mapping[str, str],
        summary: str,
        description: str,
    ) -> None:
        assert alert in ALERT_NAMES, alert
        rule: dict[str, Any] = {"alert": alert, "expr": expr}
        if for_ is not None:
            rule["for"] = for_
        rule["labels"] = {"severity": severity, **labels}
        rule["annotations"] = {
            "summary": summary,
            "description": description,
            "runbook_url": f"{self.base}/{alert}.md",
        }
        self.groups[group].append(rule)


def _endpoint_alerts(
    rules: _Rules, budget: Budget, name: str, route: str, p95_ms: float, p99_ms: float
) -> None:
    sel = _requests(route)
    for slo, ms in (("p95", p95_ms), ("p99", p99_ms)):
        allowed = _ALLOWED_SLOW[slo]
        for alert, long, short, rate, for_ in _BURN_WINDOWS:
            threshold = _num(rate * allowed)
            ratio = f'{{endpoint="{name}",slo="{slo}"}}'
            rules.add(
                "slo",
                alert,
                f"{_SLOW_RATIO}{long}{ratio} > {threshold}\nand\n{_SLOW_RATIO}{short}{ratio} > {threshold}",
                for_=for_,
                severity="critical",
                labels={"endpoint": name, "slo": slo},
                summary=f"{name}: {slo} latency SLO ({_num(ms)} ms) burning {_num(rate)}x its error budget",
                description=(
                    f"More than {_num(rate * allowed * 100)} % of {name}'s requests took longer than "
                    f"{_num(ms)} ms over both the last {long} and {short} (its {slo} target allows "
                    f"{_num(allowed * 100)} %). Budget key: endpoints.{name}.slo_{slo}_ms."
                ),
            )
    served = f'{sel},status_class="2xx"'
    rules.add(
        "symptoms",
        "FloodgateSlowWhileCPUIdle",
        f"{_quantile(0.95, 'http_request_duration_seconds', served, 'job')} > {_num(p95_ms / 1000)}\n"
        f"and on (job)\n"
        f"max by (job) (rate(process_cpu_seconds_total[5m])) < {_num(CPU_IDLE_CORES)}",
        for_="10m",
        severity="warning",
        labels={"endpoint": name},
        summary=f"{name}: p95 above its {_num(p95_ms)} ms SLO while the service's CPU is low",
        description=(
            f"{name}'s served requests have a p95 of {{{{ $value | humanizeDuration }}}} (SLO {_num(p95_ms)} ms) "
            f"while the busiest process of its service uses under {_num(CPU_IDLE_CORES)} of a core: "
            "the time is spent waiting, on a slow dependency or at a saturated gate."
        ),
    )
    rules.add(
        "symptoms",
        "FloodgateTimeoutBurst",
        f'sum by (job, route) (rate(http_requests_total{{{sel},status="504"}}[2m]))\n'
        f"/\nsum by (job, route) (rate(http_requests_total{{{sel}}}[2m])) > {_num(TIMEOUT_RATIO)}",
        for_="1m",
        severity="critical",
        labels={"endpoint": name},
        summary=f"{name}: a burst of 504s",
        description=(
            f"{{{{ $value | humanizePercentage }}}} of {name}'s requests ended at their deadline "
            f"({_num(budget.endpoint(name).deadline)} s) over the last 2 minutes: requests piled up "
            "and are timing out together. Budget keys: endpoints."
            f"{name}.deadline and the max_wait of its dependencies."
        ),
    )
    if _shares_with_ingest(budget, name):
        rules.add(
            "symptoms",
            "FloodgateIngestSlowingOnline",
            f"{_quantile(0.99, 'http_request_duration_seconds', served)} > {_num(p99_ms / 1000)}\n"
            "and on ()\n"
            'max(sum by (instance) (ingest_queue_depth{state="running"})) > 0',
            for_="10m",
            severity="warning",
            labels={"endpoint": name},
            summary=f"{name}: p99 above its {_num(p99_ms)} ms SLO while ingestion runs",
            description=(
                f"{name}'s served requests have a p99 of {{{{ $value | humanizeDuration }}}} (SLO "
                f"{_num(p99_ms)} ms) while ingest jobs are running, and {name} shares "
                f"{', '.join(_shared_with_ingest(budget, name))} with ingestion."
            ),
        )


def _gate_alerts(rules: _Rules, budget: Budget) -> None:
    for dep_name, dep in budget.dependencies.items():
        if dep.max_wait <= 0:
            continue
        threshold = NEAR_MAX_WAIT * dep.max_wait
        gate = f'gate="{dep_name}"'
        rules.add(
            "symptoms",
            "FloodgateGateWaitNearMaxWait",
            f"{_quantile(0.95, 'floodgate_gate_wait_seconds', gate, 'job, gate')} > {_num(threshold)}",
            for_="5m",
            severity="warning",
            labels={"dependency": dep_name},
            summary=f"{dep_name}: callers wait at the gate nearly max_wait ({_num(dep.max_wait)} s)",
            description=(
                f"The p95 wait for a slot of {dep_name} in {{{{ $labels.job }}}} is "
                f"{{{{ $value | humanizeDuration }}}}, above {_num(NEAR_MAX_WAIT * 100)} % of its "
                f"max_wait: requests pile up behind the gate and start timing out together. "
                f"Budget keys: dependencies.{dep_name}.max_wait, dependencies.{dep_name}.global_concurrency, "
                f"dependencies.{dep_name}.shares."
            ),
        )


def _job_alerts(rules: _Rules, max_job_age: float) -> None:
    rules.add(
        "symptoms",
        "FloodgateJobLeasesExpired",
        "max(ingest_jobs_expired_leases) > 0",
        for_="5m",
        severity="warning",
        labels={},
        summary="ingest: running jobs whose lease has expired",
        description=(
            "{{ $value }} running job(s) have held an expired lease for 5 minutes: their worker is "
            "stuck or gone and the reaper has not taken them back."
        ),
    )
    rules.add(
        "symptoms",
        "FloodgateOldestJobTooOld",
        f"max by (tenant) (ingest_oldest_runnable_job_age_seconds) > {_num(max_job_age)}",
        for_="5m",
        severity="warning",
        labels={},
        summary="ingest: the oldest runnable job has waited too long",
        description=(
            "Tenant {{ $labels.tenant }}'s oldest runnable job has waited "
            f"{{{{ $value | humanizeDuration }}}} (alert above {_num(max_job_age)} s): the workers "
            "do not keep up, or claim nothing."
        ),
    )
    rules.add(
        "symptoms",
        "FloodgateJobsDead",
        "sum(increase(ingest_jobs_dead_total[15m])) > 0",
        for_=None,
        severity="warning",
        labels={},
        summary="ingest: jobs moved to dead",
        description=(
            "{{ $value | humanize }} job(s) moved to dead over the last 15 minutes (retries exhausted "
            "or too many lease expiries): their documents are not indexed."
        ),
    )


def _pool_alerts(rules: _Rules, budget: Budget) -> None:
    for dep_name, dep in budget.dependencies.items():
        if dep.kind != "postgres":
            continue
        for service in dep.shares:
            size = budget.process_limit(service, dep_name)
            sel = f'job="{service}",pool="{dep_name}"'
            wait = POOL_WAIT_FRACTION * dep.max_wait
            rules.add(
                "symptoms",
                "FloodgateDbPoolExhausted",
                f"min_over_time(floodgate_pool_in_use{{{sel}}}[5m]) >= {size}\n"
                f"or\n{_quantile(0.95, 'floodgate_pool_acquire_wait_seconds', sel, 'job, instance, pool')} "
                f"> {_num(wait)}",
                for_="5m",
                severity="warning",
                labels={"dependency": dep_name, "service": service},
                summary=f"{service}: the {dep_name} pool is exhausted",
                description=(
                    f"{{{{ $labels.instance }}}}'s {dep_name} pool has had all {size} connections in use "
                    f"for 5 minutes, or its p95 wait for one is above {_num(wait)} s (half its max_wait). "
                    f"Budget keys: dependencies.{dep_name}.shares.{service}, "
                    f"dependencies.{dep_name}.global_concurrency, deployment.database_max_connections."
                ),
            )


def _provider_alerts(rules: _Rules, budget: Budget) -> None:
    for dep_name, dep in budget.dependencies.items():
        if dep.kind != "http":
            continue
        sel = f'dependency="{dep_name}"'
        rpm = "" if dep.rate_limit is None else f" (budget: {_num(dep.rate_limit.rpm)} rpm)"
        rules.add(
            "symptoms",
            "FloodgateProviderThrottled",
            f'sum by (dependency) (rate(floodgate_attempts_total{{{sel},outcome="429"}}[5m]))\n'
            f"/\nsum by (dependency) (rate(floodgate_attempts_total{{{sel}}}[5m])) > {_num(THROTTLED_RATIO)}",
            for_="5m",
            severity="warning",
            labels={"dependency": dep_name},
            summary=f"{dep_name}: the provider throttles (429)",
            description=(
                f"{{{{ $value | humanizePercentage }}}} of the attempts to {dep_name} were answered 429 "
                f"over 5 minutes{rpm}. Budget keys: dependencies.{dep_name}.rate_limit.rpm, "
                f"dependencies.{dep_name}.global_concurrency."
            ),
        )
    cost = budget.cost
    if cost is None:
        return
    for kind, limit, metric, unit in (
        ("usd", cost.max_usd_per_hour, "floodgate_cost_usd_total", "USD"),
        ("tokens", cost.max_tokens_per_hour, "floodgate_tokens_total", "tokens"),
    ):
        if limit is None:
            continue
        rules.add(
            "symptoms",
            "FloodgateSpendOverBudget",
            f"sum(rate({metric}[1h])) * 3600 > {_num(limit)}",
            for_="15m",
            severity="warning",
            labels={"kind": kind},
            summary=f"spending more {unit} per hour than the budget's {_num(limit)}",
            description=(
                f"The last hour ran at {{{{ $value | humanize }}}} {unit} per hour, above "
                f"cost.max_{kind}_per_hour = {_num(limit)}. See which endpoint and tenant with "
                f"sum by (endpoint, tenant) (rate({metric}[1h]))."
            ),
        )


# -- PromQL pieces ---------------------------------------------------------------------------------


def _le(seconds: float) -> str:
    """A matcher for the bucket at ``seconds``: Python's client writes 3.0 where Go writes 3."""
    text = _num(seconds)
    if re.fullmatch(r"\d+", text):
        return f'le=~"{text}(\\\\.0)?"'
    return f'le="{text}"'


def _requests(route: str) -> str:
    """The selector of an endpoint's requests: ``"/path"`` or ``"METHOD /path"``."""
    method, _, path = route.strip().rpartition(" ")
    return f'route="{path}",method="{method}"' if method else f'route="{path}"'


def _slow_ratio(requests: str, seconds: float, window: str) -> str:
    counted = f'{requests},status_class!="4xx"'
    metric = "http_request_duration_seconds"
    return (
        f"1 - (\n  sum by (route) (rate({metric}_bucket{{{counted},{_le(seconds)}}}[{window}]))\n"
        f"  /\n  sum by (route) (rate({metric}_count{{{counted}}}[{window}]))\n)"
    )


def _quantile(q: float, metric: str, selector: str, by: str = "") -> str:
    keys = f"{by}, le" if by else "le"
    return f"histogram_quantile({_num(q)}, sum by ({keys}) (rate({metric}_bucket{{{selector}}}[5m])))"


def _num(value: float) -> str:
    """A number as PromQL and people read it: no exponent, no trailing zeros."""
    return format(round(value, 9), "f").rstrip("0").rstrip(".")


def _minutes(window: str) -> float:
    return float(window[:-1]) * {"m": 1, "h": 60, "d": 1440}[window[-1]]


def _shared_with_ingest(budget: Budget, endpoint: str) -> list[str]:
    """What ``endpoint`` shares with ingestion: a dependency both use, or the database server."""
    ep = budget.endpoint(endpoint)
    used = [*ep.required, *ep.degradable]
    if INGEST_SERVICE not in budget.services:
        return []
    ingest = budget.dependencies_of(INGEST_SERVICE)
    ingest_pg = any(budget.dependency(d).kind == "postgres" for d in ingest)
    return [d for d in used if d in ingest or (ingest_pg and budget.dependency(d).kind == "postgres")]


def _shares_with_ingest(budget: Budget, endpoint: str) -> bool:
    return bool(_shared_with_ingest(budget, endpoint))


# -- YAML ------------------------------------------------------------------------------------------

_PLAIN = re.compile(r"^[A-Za-z_][\w./-]*$")
_YAML_WORDS = {"true", "false", "yes", "no", "on", "off", "null", "y", "n"}


def rules_yaml(document: Mapping[str, Any], *, header: Sequence[str] = ()) -> str:
    """``document`` as YAML (block style; multi-line strings as literal blocks), with ``header``
    as comment lines on top. Enough YAML for a rules file: mappings, lists, strings, numbers."""
    lines = [f"# {line}".rstrip() for line in header]
    _emit(document, 0, lines)
    return "\n".join(lines) + "\n"


def _scalar(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return _num(value) if isinstance(value, float) else str(value)
    text = str(value)
    if _PLAIN.match(text) and text.lower() not in _YAML_WORDS:
        return text
    return json.dumps(text, ensure_ascii=False)


def _emit(value: object, indent: int, lines: list[str]) -> None:
    """A mapping whose keys start at column ``indent`` (the first key is appended to the line
    already started, as after a list's dash), or a scalar."""
    assert isinstance(value, Mapping), value
    pad = " " * indent
    for number, (key, item) in enumerate(value.items()):
        head = f"{key}:"
        if number == 0 and lines and lines[-1].endswith("- "):
            lines[-1] += head
        else:
            lines.append(pad + head)
        if isinstance(item, Mapping) and item:
            _emit(item, indent + 2, lines)
        elif isinstance(item, list) and item:
            for element in item:
                if isinstance(element, Mapping):
                    lines.append(pad + "  - ")
                    _emit(element, indent + 4, lines)
                else:
                    lines.append(f"{pad}  - {_scalar(element)}")
        elif isinstance(item, str) and "\n" in item:
            lines[-1] += " |-"
            lines.extend(f"{pad}  {line}" if line else "" for line in item.split("\n"))
        elif isinstance(item, Mapping):
            lines[-1] += " {}"
        elif isinstance(item, list):
            lines[-1] += " []"
        else:
            lines[-1] += f" {_scalar(item)}"

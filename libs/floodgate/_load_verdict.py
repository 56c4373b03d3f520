"""Budget truth: what `floodgate plan` predicted against what a load test measured.

From a run's ``summary.json`` (floodgate/_load_run.py) and its scenario file: for each ``capacity``
stream (one template, stepped ramp), the knee (floodgate/_knee.py) of its goodput, full answers
within the SLO per second, or for a job template the documents the ingest workers finished per
second (their ``ingest_job_outcomes_total{outcome="succeeded"}``); the plan's prediction beside it
with the relative error, and where the error is past the tolerance, the limit the plan missed: what
the scraped series show saturated on the plateau (a gate or pool full with waiters, a process's CPU,
loop lag), against the plan's bottleneck. For ``isolation``, one endpoint's p99 and goodput share
with ingestion against without, and the shared signals that moved between the two phases.

Pure: the summary in, a JSON-ready section (`budget_section`) out; the report prints it.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ._knee import Knee, Step, counter_rate_between, find_knee, hold_windows, rate_between
from ._load_scenario import LoadTestFile
from ._plan import Plan

__all__ = [
    "INGESTION",
    "SETTLE",
    "BottleneckUse",
    "IsolationCheck",
    "PlanCheck",
    "Prediction",
    "bottleneck_use",
    "budget_section",
    "capacity_checks",
    "isolation_check",
    "prediction",
    "predictions_from_json",
    "predictions_from_plan",
    "render_budget",
    "saturated_limits",
]

#: the name of ingestion's knee (documents finished per second), beside the endpoints'
INGESTION = "ingestion"

#: the first seconds of each capacity hold left out of its goodput, where a run compares its knees
#: with a plan: the adaptive doors' transient. A door updates once per interval of at least ten
#: answers (seconds apart at a slow endpoint's rate) and moves a fifth of the way each time, so when
#: a step first saturates its bottleneck, the door admits what its ceiling allows for several
#: seconds, and work that then waits past its gate's max_wait comes back degraded (docs/loadtest.md)
SETTLE = 8.0

FINISHED = ("ingest_job_outcomes_total", "outcome", "succeeded")


@dataclass(frozen=True)
class Prediction:
    """The plan's capacity for one endpoint (or ingestion), its bottleneck and every limit by name."""

    rate: float
    bottleneck: str
    limits: Mapping[str, float] = field(default_factory=dict)
    #: where the bottleneck is a dependency: the service that calls it, the plan's latency of one
    #: call (s) and the calls per unit of work, to tell on the plateau which of them was off
    service: str | None = None
    call_latency: float | None = None
    calls: float | None = None


def predictions_from_plan(plan: Plan) -> dict[str, Prediction]:
    rows = [dataclasses.asdict(row) for row in plan.dependencies]
    out = {
        c.endpoint: prediction(c.rps, c.bottleneck, {lim.name: lim.rate for lim in c.limits}, c.service, rows)
        for c in plan.capacities
    }
    if plan.ingestion is not None:
        ing = plan.ingestion
        limits = {limit.name: limit.rate for limit in ing.limits}
        out[INGESTION] = prediction(ing.documents_per_second, ing.bottleneck, limits, ing.service, rows)
    return out


def predictions_from_json(plan: Mapping[str, Any]) -> dict[str, Prediction]:
    """`predictions_from_plan` of ``floodgate plan --format json``'s output: what
    ``floodgate loadtest --plan`` reads, so a user's plan from measured inputs (``--latency-from``,
    ``--cpu-ms``) is what their run's knees are compared with. Raises `KeyError` or `TypeError` for
    a document that is not such a plan."""
    rows = plan["dependencies"]
    out = {
        cap["endpoint"]: prediction(
            cap["rps"],
            cap["bottleneck"],
            {lim["name"]: lim["rate"] for lim in cap["limits"]},
            cap["service"],
            rows,
        )
        for cap in plan["capacities"]
    }
    ing = plan.get("ingestion")
    if ing is not None:
        limits = {lim["name"]: lim["rate"] for lim in ing["limits"]}
        out[INGESTION] = prediction(
            ing["documents_per_second"], ing["bottleneck"], limits, ing["service"], rows
        )
    return out


def prediction(
    rate: float,
    bottleneck: str,
    limits: Mapping[str, float],
    service: str,
    dependencies: Iterable[Mapping[str, Any]],
) -> Prediction:
    """A `Prediction`, with the bottleneck's call latency and calls per unit where it is one of
    ``dependencies`` (the plan's rows, or their JSON: ``service``, ``dependency``, ``latency``,
    ``limit``, ``processes``). The calls follow from the limit's rate, ``limit x processes / (calls
    x latency)``, so they need not be stated twice."""
    for row in dependencies:
        if row["service"] == service and row["dependency"] == bottleneck and limits.get(bottleneck):
            calls = row["limit"] * row["processes"] / (limits[bottleneck] * row["latency"])
            return Prediction(rate, bottleneck, limits, service, float(row["latency"]), calls)
    return Prediction(rate, bottleneck, limits)


# -- reading the scraped series ------------------------------------------------------------------------


def _points(
    series: Iterable[Mapping[str, Any]], name: str, **labels: str
) -> dict[tuple[str, tuple[tuple[str, str], ...]], list[tuple[float, float]]]:
    """(process, labels) -> [(t, value)] of the samples named ``name`` whose labels include ``labels``."""
    out: dict[tuple[str, tuple[tuple[str, str], ...]], list[tuple[float, float]]] = defaultdict(list)
    for s in series:
        if s["name"] != name:
            continue
        have = s.get("labels") or {}
        if any(have.get(k) != v for k, v in labels.items()):
            continue
        process = str(s.get("instance") or s.get("job") or "")  # instance: one per process
        out[(process, tuple(sorted(have.items())))].append((float(s["t"]), float(s["value"])))
    return out


def _mean_between(points: Sequence[tuple[float, float]], start: float, end: float) -> float | None:
    inside = [v for t, v in points if start <= t < end]
    return statistics.fmean(inside) if inside else None


def _label(labels: tuple[tuple[str, str], ...], key: str) -> str:
    return dict(labels).get(key, "")


def saturated_limits(
    series: Sequence[Mapping[str, Any]], start: float, end: float, *, busy_cores: float = 0.85
) -> list[str]:
    """What was saturated over ``[start, end]``, by the scraped series: each gate and pool at
    85 % or more of its capacity (with its waiters), each process at ``busy_cores`` of a core or
    more (one event loop uses one core), each process whose loop lagged 20 ms or more on average."""
    found: list[tuple[float, str]] = []  # (how saturated, what), the most first
    waiting = {
        (p, _label(ls, "gate")): _mean_between(pts, start, end) or 0.0
        for (p, ls), pts in _points(series, "floodgate_gate_waiting").items()
    }
    capacity = {
        (p, _label(ls, "gate")): _mean_between(pts, start, end)
        for (p, ls), pts in _points(series, "floodgate_gate_capacity").items()
    }
    for (process, labels), pts in sorted(_points(series, "floodgate_gate_in_use").items()):
        gate = _label(labels, "gate")
        in_use, cap = _mean_between(pts, start, end), capacity.get((process, gate))
        if in_use is not None and cap and in_use >= 0.85 * cap:
            wait = waiting.get((process, gate), 0.0)
            found.append(
                (
                    in_use / cap + wait / cap,
                    f"gate {gate} ({process}): {in_use:.1f} of {cap:g} in use, {wait:.1f} waiting",
                )
            )
    sizes = {
        (p, _label(ls, "pool")): _mean_between(pts, start, end)
        for (p, ls), pts in _points(series, "floodgate_pool_size").items()
    }
    for (process, labels), pts in sorted(_points(series, "floodgate_pool_in_use").items()):
        pool = _label(labels, "pool")
        in_use, size = _mean_between(pts, start, end), sizes.get((process, pool))
        if in_use is not None and size and in_use >= 0.85 * size:
            found.append(
                (in_use / size, f"pool {pool} ({process}): {in_use:.1f} of {size:g} connections in use")
            )
    for (process, _), pts in sorted(_points(series, "process_cpu_seconds_total").items()):
        cores = counter_rate_between(pts, start, end)
        if cores is not None and cores >= busy_cores:
            found.append((cores, f"CPU of {process}: {cores:.2f} cores"))
    for process, lag in sorted(_loop_lag(series, start, end).items()):
        if lag >= 0.02:
            found.append((lag * 20, f"event-loop lag of {process}: {lag * 1000:.0f} ms on average"))
    return [what for _, what in sorted(found, key=lambda item: -item[0])]


LOOP_LAG = "floodgate_loop_lag_seconds"


def _loop_lag(series: Sequence[Mapping[str, Any]], start: float, end: float) -> dict[str, float]:
    """process -> its mean event-loop lag over the window: the lag histogram's increase of ``_sum``
    over its increase of ``_count`` (``floodgate_loop_lag_max_seconds`` is the largest since the
    process started: one start-up spike would stay in it)."""
    counts = {p: pts for (p, _), pts in _points(series, f"{LOOP_LAG}_count").items()}
    out = {}
    for (process, _), sums in _points(series, f"{LOOP_LAG}_sum").items():
        total, n = (
            counter_rate_between(sums, start, end),
            counter_rate_between(counts.get(process, []), start, end),
        )
        if total is not None and n:
            out[process] = total / n
    return out


def _finished_rate(series: Sequence[Mapping[str, Any]], start: float, end: float) -> float:
    """Documents finished per second over the window, every worker's counter's rate summed."""
    name, key, value = FINISHED
    return _summed(series, name, counter_rate_between, (start, end), **{key: value}) or 0.0


def _summed(
    series: Sequence[Mapping[str, Any]],
    name: str,
    read: Callable[[Sequence[tuple[float, float]], float, float], float | None],
    window: tuple[float, float],
    processes: Callable[[str], bool] = lambda process: True,
    **labels: str,
) -> float | None:
    """``read`` (a gauge's mean, a counter's rate) of each process's samples named ``name`` with
    ``labels`` over ``window``, summed over the ``processes`` that have one; None when none has."""
    found = [
        value
        for (process, _), points in _points(series, name, **labels).items()
        if processes(process) and (value := read(points, *window)) is not None
    ]
    return sum(found) if found else None


# -- capacity --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BottleneckUse:
    """How the plan's bottleneck dependency was used on the plateau, by the service's processes
    together: ``busy``, its slots in use over its capacity; ``call_latency``, the mean seconds of a
    call (``floodgate_downstream_latency_seconds``); ``call_rate``, calls completed per second."""

    busy: float | None
    call_latency: float | None
    call_rate: float | None


def bottleneck_use(
    series: Sequence[Mapping[str, Any]], service: str, dependency: str, start: float, end: float
) -> BottleneckUse:
    """`BottleneckUse` of ``dependency`` in the processes of ``service`` (their instances start with
    its name, ``_`` as ``-``) over ``[start, end]``."""
    prefix = service.replace("_", "-")

    def ours(process: str) -> bool:
        return process.startswith(prefix)

    window = (start, end)
    in_use = _summed(series, "floodgate_gate_in_use", _mean_between, window, ours, gate=dependency)
    capacity = _summed(series, "floodgate_gate_capacity", _mean_between, window, ours, gate=dependency)
    seconds = _summed(series, f"{LATENCY}_sum", counter_rate_between, window, ours, dependency=dependency)
    calls = _summed(series, f"{LATENCY}_count", counter_rate_between, window, ours, dependency=dependency)
    return BottleneckUse(
        in_use / capacity if in_use is not None and capacity else None,
        seconds / calls if seconds is not None and calls else None,
        calls,
    )


LATENCY = "floodgate_downstream_latency_seconds"


@dataclass(frozen=True)
class PlanCheck:
    """One endpoint's (or ingestion's) predicted capacity against its measured knee."""

    name: str
    prediction: Prediction | None
    knee: Knee
    saturated: tuple[str, ...]
    tolerance: float
    use: BottleneckUse | None = None  # the plan's bottleneck dependency on the plateau

    @property
    def predicted(self) -> float | None:
        return None if self.prediction is None else self.prediction.rate

    @property
    def measured(self) -> float | None:
        return self.knee.capacity

    @property
    def error(self) -> float | None:
        """(measured - predicted) / predicted; None without both."""
        if self.measured is None or not self.predicted:
            return None
        return (self.measured - self.predicted) / self.predicted

    @property
    def within(self) -> bool:
        return self.error is not None and abs(self.error) <= self.tolerance

    @property
    def missed(self) -> str | None:
        """Past the tolerance: the limit the plan missed, from what saturated on the plateau."""
        if self.prediction is None:
            return None
        if self.error is None:
            return (
                f"no knee: every step carried what it was offered (at least {self.knee.lower_bound:.1f}/s); "
                "offer more to find it"
            )
        if self.within:
            return None
        bottleneck = self.prediction.bottleneck.split(" ")[0]
        if bottleneck == "door":  # the plan's name for the endpoint's admission door, a gate in the series
            bottleneck = f"admission_{self.name}"
        ours = [
            s
            for s in self.saturated
            if s.startswith(f"gate {bottleneck} ") or s.startswith(f"pool {bottleneck} ")
        ]
        others = [s for s in self.saturated if s not in ours]
        direction = "below" if self.error < 0 else "above"
        if others and not ours:
            return (
                f"measured {direction} the plan: saturated instead of its bottleneck ({self.prediction.bottleneck}): "
                + "; ".join(others)
            )
        if ours:
            extra = f"; also {'; '.join(others)}" if others else ""
            why = self._why_bottleneck() or (
                f"the calls held its slots {'longer' if self.error < 0 else 'shorter'} than the plan's inputs say"
            )
            return f"measured {direction} the plan with its bottleneck saturated ({ours[0]}): {why}{extra}"
        return f"measured {direction} the plan and nothing scraped was saturated (a limit outside the series: the machine's CPU, the generator, the gateway)"

    def _why_bottleneck(self) -> str | None:
        """Which of the plan's assumptions about its saturated bottleneck the plateau broke: the
        plan takes its slots always busy, each call its latency input, and every call towards an
        answer that counts. Each factor, and the capacity they give together."""
        use, p = self.use, self.prediction
        if use is None or p is None or p.call_latency is None or p.calls is None or self.measured is None:
            return None
        parts, expected = [], p.rate
        if use.busy is not None:
            parts.append(f"its slots were {use.busy:.0%} busy")
            expected *= min(1.0, use.busy)
        if use.call_latency is not None:
            change = use.call_latency / p.call_latency - 1
            parts.append(
                f"a call took {use.call_latency * 1000:.0f} ms against the plan's "
                f"{p.call_latency * 1000:.0f} ms ({change:+.0%})"
            )
            expected *= p.call_latency / use.call_latency
        if use.call_rate:
            lost = 1 - self.measured * p.calls / use.call_rate
            parts.append(
                f"{max(0.0, lost):.0%} of its calls served work that did not count "
                "(degraded, over the SLO or refused part-way)"
            )
            expected *= 1 - max(0.0, lost)
        if not parts:
            return None
        return "; ".join(parts) + f": together {expected:.3g}/s"

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "predicted": _round(self.predicted),
            "plan_bottleneck": None if self.prediction is None else self.prediction.bottleneck,
            "measured": _round(self.measured),
            "reached": self.knee.reached,
            "lower_bound": _round(self.knee.lower_bound),
            "error": _round(self.error, 4),
            "within": self.within,
            "saturated": list(self.saturated),
            "missed": self.missed,
            "steps": [
                {
                    "rate": _round(s.rate),
                    "offered": _round(s.offered),
                    "goodput": _round(s.goodput),
                    "start_s": _round(s.start),
                    "end_s": _round(s.end),
                    "saturated": s.saturated(self.knee.saturation),
                    "plateau": i in self.knee.plateau,
                }
                for i, s in enumerate(self.knee.steps)
            ],
        }


def capacity_checks(
    summary: Mapping[str, Any],
    spec: LoadTestFile,
    predictions: Mapping[str, Prediction],
    *,
    settle: float = 3.0,
    saturation: float = 0.9,
    plateau_band: float = 0.1,
    tolerance: float = 0.10,
) -> list[PlanCheck]:
    """A check per ramping stream of one template in the run: its holds' goodput, its knee, what
    saturated there, and the prediction (by the template's name, or `INGESTION` for a job template)."""
    timeline: dict[str, dict[str, list[tuple[float, float]]]] = defaultdict(lambda: defaultdict(list))
    for row in summary.get("timeline") or []:
        for key in ("offered", "good", "goodput"):
            timeline[row["endpoint"]][key].append((float(row["t"]), float(row.get(key) or 0)))
    series = summary.get("series") or []
    checks = []
    for phase in summary.get("phases") or []:
        stream = spec.scenarios.get(phase["stream"])
        if stream is None or stream.executor != "ramping" or len(stream.requests) != 1:
            continue
        (template,) = stream.requests
        job = spec.requests[template].kind == "job"
        steps = []
        for hold in hold_windows(stream.schedule(), float(phase["start_s"]), settle=settle):
            rows = timeline[template]
            if job:  # accepted submissions against documents finished
                offered = rate_between(rows["good"], hold.start, hold.end)
                goodput = _finished_rate(series, hold.start, hold.end)
            else:
                offered = rate_between(rows["offered"], hold.start, hold.end)
                goodput = rate_between(rows["goodput"], hold.start, hold.end)
            steps.append(Step(hold.rate, offered, goodput, hold.start, hold.end))
        knee = find_knee(steps, saturation=saturation, plateau_band=plateau_band)
        window = knee.window
        saturated = tuple(saturated_limits(series, *window)) if window else ()
        name = INGESTION if job else template
        predicted = predictions.get(name)
        use = None
        if window and predicted is not None and predicted.service is not None:
            use = bottleneck_use(series, predicted.service, predicted.bottleneck, *window)
        checks.append(PlanCheck(name, predicted, knee, saturated, tolerance, use))
    return checks


# -- isolation -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IsolationCheck:
    """``endpoint`` alone, then with the other streams of the next phase: p99 and goodput share."""

    endpoint: str
    alone: Mapping[str, Any]
    together: Mapping[str, Any]
    signals: tuple[tuple[str, float, float], ...]  # (signal, alone, together), those that moved most first
    process: str = "online"  # the endpoint's process: where the shared resource shows
    max_p99_ratio: float = 1.2
    min_goodput_ratio: float = 0.95

    @property
    def p99_ratio(self) -> float | None:
        a, b = self.alone.get("p99_ms"), self.together.get("p99_ms")
        return None if not a or b is None else b / a

    @property
    def goodput_ratio(self) -> float | None:
        """Goodput per request offered, with over without (both phases offer the same rate)."""
        a = self.alone["goodput"] / self.alone["offered"] if self.alone.get("offered") else None
        b = self.together["goodput"] / self.together["offered"] if self.together.get("offered") else None
        return None if not a or b is None else b / a

    @property
    def holds(self) -> bool:
        p, g = self.p99_ratio, self.goodput_ratio
        return p is not None and g is not None and p <= self.max_p99_ratio and g >= self.min_goodput_ratio

    @property
    def resource(self) -> str | None:
        """When isolation does not hold: what the endpoint's process felt most (the first of its
        signals), and the signal elsewhere that grew most (what took the resource)."""
        if self.holds or not self.signals:
            return None
        own = [row for row in self.signals if f" {self.process} " in f"{row[0]} "]
        others = [row for row in self.signals if row not in own]
        text = [f"{name}: {a:.3g} alone, {b:.3g} with ingestion" for name, a, b in (own[:1] + others[:1])]
        return "; taken by ".join(text)

    def as_json(self) -> dict[str, Any]:
        keep = ("offered", "good", "goodput", "rejected", "errors", "degraded", "p50_ms", "p95_ms", "p99_ms")
        return {
            "endpoint": self.endpoint,
            "alone": {k: self.alone.get(k) for k in keep},
            "together": {k: self.together.get(k) for k in keep},
            "p99_ratio": _round(self.p99_ratio, 4),
            "goodput_ratio": _round(self.goodput_ratio, 4),
            "targets": {"p99_ratio": self.max_p99_ratio, "goodput_ratio": self.min_goodput_ratio},
            "holds": self.holds,
            "resource": self.resource,
            "signals": [
                {"signal": n, "alone": _round(a, 4), "together": _round(b, 4)} for n, a, b in self.signals
            ],
        }


def _shared_signals(
    series: Sequence[Mapping[str, Any]], alone: tuple[float, float], together: tuple[float, float]
) -> list[tuple[str, float, float]]:
    """Per process: CPU (cores), loop lag (s), each gate's waiters and each pool's connections in use,
    in each window; ordered by how much they grew (relative, beyond a floor that ignores noise)."""
    rows: list[tuple[str, float, float]] = []

    def both(points: Sequence[tuple[float, float]], counter: bool) -> tuple[float, float] | None:
        read = counter_rate_between if counter else _mean_between
        a, b = read(points, *alone), read(points, *together)
        return None if a is None or b is None else (a, b)

    for (process, _), pts in _points(series, "process_cpu_seconds_total").items():
        if (ab := both(pts, True)) is not None:
            rows.append((f"CPU of {process} (cores)", *ab))
    lag_alone, lag_together = _loop_lag(series, *alone), _loop_lag(series, *together)
    for process in sorted(set(lag_alone) & set(lag_together)):
        rows.append((f"event-loop lag of {process} (s)", lag_alone[process], lag_together[process]))
    for (process, labels), pts in _points(series, "floodgate_gate_waiting").items():
        if (ab := both(pts, False)) is not None:
            rows.append((f"waiting at gate {_label(labels, 'gate')} of {process}", *ab))
    for (process, labels), pts in _points(series, "floodgate_pool_in_use").items():
        if (ab := both(pts, False)) is not None:
            rows.append((f"pool {_label(labels, 'pool')} of {process} in use", *ab))
    floors = {"(cores)": 0.05, "(s)": 0.005}

    def growth(row: tuple[str, float, float]) -> float:
        name, a, b = row
        floor = next((f for k, f in floors.items() if name.endswith(k)), 0.5)
        return (b - a) / max(a, floor)

    return sorted(rows, key=growth, reverse=True)


def isolation_check(
    summary: Mapping[str, Any],
    *,
    endpoint: str = "deal_brain",
    alone: str = "alone",
    together: str = "with_ingest",
    process: str = "online",
) -> IsolationCheck | None:
    """None when the run has no ``alone`` and ``together`` phase both serving ``endpoint`` (answered
    by ``process``, the instance whose signals say what it felt)."""
    found: dict[str, tuple[Mapping[str, Any], tuple[float, float]]] = {}
    for phase in summary.get("phases") or []:
        stats = (phase.get("endpoints") or {}).get(endpoint)
        if phase.get("phase") in (alone, together) and stats:
            start = float(phase["start_s"])
            found[phase["phase"]] = (stats, (start, start + float(phase["duration_s"])))
    if alone not in found or together not in found:
        return None
    signals = _shared_signals(summary.get("series") or [], found[alone][1], found[together][1])
    return IsolationCheck(endpoint, found[alone][0], found[together][0], tuple(signals[:8]), process)


def budget_section(
    summary: Mapping[str, Any],
    spec: LoadTestFile,
    predictions: Mapping[str, Prediction],
    *,
    inputs: Mapping[str, Any] | None = None,
    tolerance: float = 0.10,
    settle: float = 3.0,
) -> dict[str, Any]:
    """The summary's ``budget`` entry: every capacity check (each hold without its first
    ``settle`` seconds), the largest error, the isolation check."""
    checks = capacity_checks(summary, spec, predictions, tolerance=tolerance, settle=settle)
    errors = {c.name: c.error for c in checks if c.prediction is not None}
    known = [abs(e) for e in errors.values() if e is not None]
    iso = isolation_check(summary)
    return {
        "tolerance": tolerance,
        "settle_s": settle,
        "inputs": dict(inputs or {}),
        "capacity": [c.as_json() for c in checks],
        "plan_errors": {k: _round(v, 4) for k, v in errors.items()},
        "max_plan_error": _round(max(known), 4) if known and len(known) == len(errors) else None,
        "isolation": None if iso is None else iso.as_json(),
    }


def render_budget(section: Mapping[str, Any]) -> str:
    """The ``budget`` section as text: per knee, predicted vs measured, its steps, the limit missed
    and what saturated; the isolation ratios."""
    lines = []
    for check in section["capacity"]:
        error = "—" if check["error"] is None else f"{check['error']:+.1%}"
        lines.append(
            f"{check['name']}: predicted {check['predicted']}/s ({check['plan_bottleneck']}), measured "
            f"{check['measured']}/s, error {error}; steps "
            + ", ".join(f"{s['offered']:.1f}->{s['goodput']:.1f}" for s in check["steps"])
        )
        if check["missed"]:
            lines.append(f"  missed: {check['missed']}")
        if check["saturated"]:
            lines.append(f"  saturated: {'; '.join(check['saturated'])}")
    iso = section.get("isolation") or {}
    if iso:
        lines.append(
            f"isolation: p99 {iso['alone']['p99_ms']} -> {iso['together']['p99_ms']} ms (ratio {iso['p99_ratio']}), "
            f"goodput ratio {iso['goodput_ratio']}"
            + (f"; resource: {iso['resource']}" if iso.get("resource") else "")
        )
    return "\n".join(lines)


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)

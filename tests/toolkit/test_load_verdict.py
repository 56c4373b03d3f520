"""The knee of a stepped load and the budget-truth verdicts (libs/floodgate/_knee.py,
libs/floodgate/_load_verdict.py) on synthetic summaries: no clock, no service."""

from __future__ import annotations

import dataclasses
import io
import json

import pytest
from floodgate._knee import (
    Step,
    counter_rate_between,
    find_knee,
    hold_windows,
    rate_between,
)
from floodgate._load_scenario import parse_scenarios
from floodgate._load_schedule import Stage, ramping_rate
from floodgate._load_verdict import (
    INGESTION,
    Prediction,
    bottleneck_use,
    budget_section,
    capacity_checks,
    isolation_check,
    prediction,
    predictions_from_json,
    predictions_from_plan,
    render_budget,
    saturated_limits,
)


def _step(rate: float, goodput: float, offered: float | None = None) -> Step:
    return Step(rate, rate if offered is None else offered, goodput, 0.0, 10.0)


# -- the knee --------------------------------------------------------------------------------------


def test_hold_windows_are_the_holds_of_a_stepped_ramp_less_their_settling_seconds() -> None:
    schedule = ramping_rate(
        0, [Stage(10, 5), Stage(10, 20), Stage(20, 5), Stage(20, 20), Stage(30, 2), Stage(30, 2)]
    )
    holds = hold_windows(schedule, 100.0, settle=3.0)
    assert [(h.rate, h.start, h.end) for h in holds] == [(10, 108.0, 125.0), (20, 133.0, 150.0)]


def test_rate_between_counts_whole_seconds_inside_the_window() -> None:
    rows = [(float(t), 10.0 if t < 5 else 20.0) for t in range(10)]
    assert rate_between(rows, 5.0, 10.0) == 20.0
    assert rate_between(rows, 3.5, 7.2) == pytest.approx((10 + 20 + 20) / 3)  # seconds 4, 5, 6
    assert rate_between(rows, 3.2, 3.9) == 0.0


def test_counter_rate_between_takes_restarts_as_prometheus_does() -> None:
    points = [(0.0, 100.0), (1.0, 110.0), (2.0, 120.0), (3.0, 5.0), (4.0, 15.0), (9.0, 99.0)]
    assert counter_rate_between(points, 0.0, 4.0) == (10 + 10 + 5 + 10) / 4
    assert counter_rate_between(points, 4.5, 8.0) is None


def test_the_knee_is_the_median_of_the_saturated_plateau() -> None:
    knee = find_knee([_step(10, 10), _step(18, 17.9), _step(24, 20.4), _step(30, 19.6), _step(36, 20.0)])
    assert knee.reached and knee.plateau == (2, 3, 4)
    assert knee.capacity == 20.0
    assert knee.window == (0.0, 10.0)


def test_steps_past_a_collapse_are_left_out_of_the_plateau() -> None:
    knee = find_knee([_step(10, 10), _step(20, 16), _step(30, 15), _step(40, 9)])
    assert knee.plateau == (1, 2)
    assert knee.capacity == 15.5


def test_no_saturated_step_is_a_lower_bound_not_a_capacity() -> None:
    knee = find_knee([_step(10, 10), _step(20, 19.5), _step(30, 28.0)])
    assert not knee.reached and knee.capacity is None and knee.window is None
    assert knee.lower_bound == 28.0


def test_saturation_is_measured_against_what_arrived() -> None:
    # the generator offered 15/s of a scheduled 20/s: 14.5 carried of 15 is not saturated
    assert not find_knee([_step(20, 14.5, offered=15)]).reached
    with pytest.raises(ValueError, match="saturation"):
        find_knee([], saturation=0)


# -- a synthetic capacity run ----------------------------------------------------------------------

SPEC = parse_scenarios(
    {
        "tenants": {"acme": 1},
        "requests": {
            "answer": {"path": "/v1/answer"},
            "doc": {
                "kind": "job",
                "path": "/v1/jobs",
                "document_size": {"distribution": "fixed", "bytes": 9},
            },
        },
        "thresholds": {"answer": {"p99_ms": 1000}},
        "scenarios": {
            "cap_answer": {
                "executor": "ramping",
                "start_rate": 0,
                "stages": [
                    {"target": 10, "duration": 2},
                    {"target": 10, "duration": 10},
                    {"target": 20, "duration": 2},
                    {"target": 20, "duration": 10},
                    {"target": 30, "duration": 2},
                    {"target": 30, "duration": 10},
                ],
                "requests": {"answer": 1},
            },
            "cap_doc": {
                "executor": "ramping",
                "stages": [
                    {"target": 4, "duration": 2},
                    {"target": 4, "duration": 10},
                    {"target": 8, "duration": 2},
                    {"target": 8, "duration": 10},
                ],
                "requests": {"doc": 1},
            },
            "capacity": {"phases": [{"name": "a", "run": ["cap_answer"]}, {"name": "d", "run": ["cap_doc"]}]},
        },
    }
)


def _sample(t: float, name: str, value: float, job: str = "online", **labels: str) -> dict:
    return {"t": t, "job": job.rstrip("-12"), "instance": job, "name": name, "labels": labels, "value": value}


def _capacity_summary(*, answer_cap: float = 16.0, gate_full: bool = True) -> dict:
    """answer: goodput min(rate, answer_cap); documents: 5/s finished by two workers at most."""
    timeline, series = [], []
    for t in range(36):  # the answer phase: 0..36 s
        rate = 10 if t < 12 else 20 if t < 24 else 30
        timeline.append(
            {
                "t": float(t),
                "endpoint": "answer",
                "offered": rate,
                "good": rate,
                "goodput": min(rate, answer_cap),
            }
        )
        busy = 16.0 if gate_full and rate > answer_cap else min(12.0, rate * 0.5)
        series += [
            _sample(t, "floodgate_gate_in_use", busy, gate="llm"),
            _sample(t, "floodgate_gate_capacity", 16, gate="llm"),
            _sample(t, "floodgate_gate_waiting", 4.0 if busy == 16 else 0.0, gate="llm"),
            _sample(t, "floodgate_gate_in_use", 1.0, gate="search"),
            _sample(t, "floodgate_gate_capacity", 32, gate="search"),
            _sample(t, "process_cpu_seconds_total", 0.3 * t),
        ]
    finished = 0.0
    for t in range(36, 60):  # the document phase
        rate = 4 if t < 48 else 8
        timeline.append({"t": float(t), "endpoint": "doc", "offered": rate, "good": rate, "goodput": rate})
        for worker in ("ingest-worker-1", "ingest-worker-2"):  # a scrape at t counts what ended before t
            series.append(_sample(t, "ingest_job_outcomes_total", finished, worker, outcome="succeeded"))
            series.append(_sample(t, "process_cpu_seconds_total", 0.95 * t if t >= 48 else 0.5 * t, worker))
        finished += min(rate, 5.0) / 2
    phases = [
        {"phase": "a", "stream": "cap_answer", "start_s": 0.0, "duration_s": 36, "scheduled": 0},
        {"phase": "d", "stream": "cap_doc", "start_s": 36.0, "duration_s": 24, "scheduled": 0},
    ]
    return {"timeline": timeline, "series": series, "phases": phases}


def test_capacity_checks_measure_each_knee_and_compare_it_with_the_plan() -> None:
    predictions = {
        "answer": Prediction(16.0, "llm", {"llm": 16.0, "search": 200.0}),
        INGESTION: Prediction(6.0, "jobs", {"jobs": 6.0, "embed": 50.0}),
    }
    checks = {c.name: c for c in capacity_checks(_capacity_summary(), SPEC, predictions)}
    answer = checks["answer"]
    assert [s.goodput for s in answer.knee.steps] == [10, 16, 16]
    assert answer.measured == 16.0 and answer.error == 0.0 and answer.within and answer.missed is None
    assert answer.saturated == ("gate llm (online): 16.0 of 16 in use, 4.0 waiting",)

    docs = checks[INGESTION]
    assert [s.goodput for s in docs.knee.steps] == pytest.approx([4.0, 5.0])
    assert docs.error == pytest.approx(5 / 6 - 1)
    # the plan's bottleneck (jobs) is no gate: the workers' CPU is what the series show saturated
    assert docs.saturated == ("CPU of ingest-worker-1: 0.95 cores", "CPU of ingest-worker-2: 0.95 cores")
    assert docs.missed.startswith(
        "measured below the plan: saturated instead of its bottleneck (jobs): CPU of"
    )


def test_a_missed_limit_names_what_saturated_and_a_missing_knee_says_so() -> None:
    # measured 16 where the plan said 20: its own bottleneck was saturated, its latency was off
    low = {"answer": Prediction(20.0, "llm")}
    (answer, _) = capacity_checks(_capacity_summary(), SPEC, low)
    assert answer.error == pytest.approx(-0.2)
    assert answer.missed.startswith(
        "measured below the plan with its bottleneck saturated (gate llm (online)"
    )

    never = capacity_checks(_capacity_summary(answer_cap=100.0), SPEC, {"answer": Prediction(16.0, "llm")})[0]
    assert never.error is None and not never.within
    assert never.missed.startswith("no knee: every step carried what it was offered (at least 30.0/s)")

    quiet = capacity_checks(_capacity_summary(gate_full=False), SPEC, low)[0]
    assert "nothing scraped was saturated" in quiet.missed


def _bottleneck_series(busy: float, latency: float, calls_per_second: float) -> list[dict]:
    """The online process's llm gate ``busy`` of 16 and its calls: ``calls_per_second`` of ``latency`` each."""
    out = []
    for t in range(24, 37):
        out += [
            _sample(t, "floodgate_gate_in_use", busy, gate="llm"),
            _sample(t, "floodgate_gate_capacity", 16, gate="llm"),
            _sample(t, "floodgate_gate_waiting", 3.0, gate="llm"),
            _sample(
                t,
                "floodgate_downstream_latency_seconds_count",
                calls_per_second * t,
                dependency="llm",
                status="200",
            ),
            _sample(
                t,
                "floodgate_downstream_latency_seconds_sum",
                calls_per_second * t * latency,
                dependency="llm",
                status="200",
            ),
            # another service's calls to a dependency of the same name are not the endpoint's
            _sample(
                t,
                "floodgate_downstream_latency_seconds_count",
                100.0 * t,
                "ingest-worker-1",
                dependency="llm",
            ),
            _sample(
                t, "floodgate_downstream_latency_seconds_sum", 500.0 * t, "ingest-worker-1", dependency="llm"
            ),
        ]
    return out


def test_a_saturated_bottleneck_tells_which_of_the_plans_assumptions_broke() -> None:
    # The plan: 16 slots always busy, 0.8 s a call, 2 calls a request: 10 requests/s. On the plateau
    # the slots were 15 of 16 busy, a call took 0.85 s (15 / 0.85 = 17.6 calls/s), and only 2 x 8 of
    # them became goodput: 10 x 15/16 x 0.8/0.85 x 16/17.6 = 8/s, what was measured.
    use = bottleneck_use(_bottleneck_series(15.0, 0.85, 15 / 0.85), "online", "llm", 24, 36)
    assert use.busy == pytest.approx(15 / 16)
    assert use.call_latency == pytest.approx(0.85)
    assert use.call_rate == pytest.approx(15 / 0.85)
    rows = [{"service": "online", "dependency": "llm", "latency": 0.8, "limit": 16, "processes": 1}]
    predicted = prediction(10.0, "llm", {"llm": 10.0, "door": 30.0}, "online", rows)
    assert (predicted.service, predicted.call_latency, predicted.calls) == ("online", 0.8, 2.0)
    check = capacity_checks(_capacity_summary(answer_cap=8.0), SPEC, {"answer": predicted})[0]
    check = dataclasses.replace(check, use=use)
    assert check.measured == 8.0 and check.error == pytest.approx(-0.2)
    assert check.missed == (
        "measured below the plan with its bottleneck saturated (gate llm (online): 16.0 of 16 in use, "
        "4.0 waiting): its slots were 94% busy; a call took 850 ms against the plan's 800 ms (+6%); "
        "9% of its calls served work that did not count (degraded, over the SLO or refused part-way): "
        "together 8/s"
    )
    # a bottleneck that is no dependency (jobs, the door), or a plan without the rows: nothing to split
    assert prediction(10.0, "door", {"door": 10.0}, "online", rows).call_latency is None


def test_the_plans_predictions_carry_their_bottlenecks_inputs(repo_budget, tmp_path) -> None:
    from floodgate._loadtest import read_plan
    from floodgate._plan import make_plan
    from floodgate.cli import main

    predictions = predictions_from_plan(make_plan(repo_budget, {"llm": 0.8}))
    hunt = predictions["shadow_hunter"]
    assert (hunt.bottleneck, hunt.service, hunt.call_latency, hunt.calls) == ("llm", "online", 0.8, 5.0)
    assert predictions[INGESTION].service is None  # jobs: the workers' jobs in flight, no dependency
    # the same from the JSON a user saves and gives `floodgate loadtest --plan`
    out, err = io.StringIO(), io.StringIO()
    assert main(["plan", "--format", "json", "--latency", "llm=0.8"], out=out, err=err) == 0, err.getvalue()
    saved = tmp_path / "plan.json"
    saved.write_text(out.getvalue())
    assert read_plan(saved) == predictions == predictions_from_json(json.loads(out.getvalue()))


def test_the_budget_section_reads_as_text() -> None:
    predictions = {"answer": Prediction(20.0, "llm"), INGESTION: Prediction(6.0, "jobs")}
    text = render_budget(budget_section(_capacity_summary(), SPEC, predictions))
    assert text.splitlines()[0] == (
        "answer: predicted 20.0/s (llm), measured 16.0/s, error -20.0%; steps 10.0->10.0, 20.0->16.0, 30.0->16.0"
    )
    assert "  missed: measured below the plan with its bottleneck saturated (gate llm (online)" in text
    assert "ingestion: predicted 6.0/s (jobs), measured 5.0/s, error -16.7%" in text


def test_a_door_bottleneck_is_the_endpoints_admission_gate() -> None:
    # the plan names an online endpoint's door "door"; the series call it gate admission_<endpoint>
    check = capacity_checks(_capacity_summary(), SPEC, {"answer": Prediction(20.0, "door")})[0]
    assert check.missed.startswith(
        "measured below the plan: saturated instead of its bottleneck (door): gate llm"
    )
    door_full = dataclasses.replace(
        check, saturated=("gate admission_answer (online): 5.0 of 5 in use, 0.0 waiting",)
    )
    assert door_full.missed.startswith(
        "measured below the plan with its bottleneck saturated (gate admission_answer (online)"
    )


def test_saturated_limits_reads_pools_and_loop_lag_too() -> None:
    series = [
        _sample(1, "floodgate_pool_in_use", 10, "ingest-worker-1", pool="db_write"),
        _sample(1, "floodgate_pool_size", 10, "ingest-worker-1", pool="db_write"),
        # the lag histogram: 4 samples a second, 0.48 s of lag over the second: 120 ms on average
        _sample(1, "floodgate_loop_lag_seconds_sum", 10.0, "online"),
        _sample(1, "floodgate_loop_lag_seconds_count", 100, "online"),
        _sample(2, "floodgate_loop_lag_seconds_sum", 10.48, "online"),
        _sample(2, "floodgate_loop_lag_seconds_count", 104, "online"),
        _sample(2, "floodgate_loop_lag_max_seconds", 3.0, "online"),  # since start: not read
        _sample(1, "floodgate_pool_in_use", 2, "online", pool="db"),
        _sample(1, "floodgate_pool_size", 24, "online", pool="db"),
    ]
    assert saturated_limits(series, 0, 2) == [
        "event-loop lag of online: 120 ms on average",
        "pool db_write (ingest-worker-1): 10.0 of 10 connections in use",
    ]


# -- isolation -------------------------------------------------------------------------------------


def _isolation_summary(*, p99_with: float, goodput_with: int, lag_with: float) -> dict:
    series = []
    lag_sum = 0.0
    for t in range(0, 40):
        series.append(_sample(t, "floodgate_loop_lag_seconds_sum", lag_sum))
        series.append(_sample(t, "floodgate_loop_lag_seconds_count", 4 * t))
        lag_sum += 4 * (0.004 if t < 20 else lag_with)
        series.append(_sample(t, "process_cpu_seconds_total", 0.3 * t))
        worker = 0.02 * t if t < 20 else 0.4 + 0.1 * (t - 20)
        series.append(_sample(t, "process_cpu_seconds_total", worker, "ingest-worker-1"))
    alone = {"offered": 100, "good": 100, "goodput": 100, "p50_ms": 800.0, "p99_ms": 1000.0}
    together = {"offered": 100, "good": 100, "goodput": goodput_with, "p50_ms": 810.0, "p99_ms": p99_with}
    return {
        "phases": [
            {
                "phase": "alone",
                "stream": "db",
                "start_s": 0.0,
                "duration_s": 20,
                "endpoints": {"deal_brain": alone},
            },
            {
                "phase": "with_ingest",
                "stream": "db",
                "start_s": 20.0,
                "duration_s": 20,
                "endpoints": {"deal_brain": together},
            },
            {
                "phase": "with_ingest",
                "stream": "ing",
                "start_s": 20.0,
                "duration_s": 20,
                "endpoints": {"doc": alone},
            },
        ],
        "series": series,
    }


def test_isolation_holds_within_its_targets() -> None:
    check = isolation_check(_isolation_summary(p99_with=1150.0, goodput_with=97, lag_with=0.005))
    assert check is not None and check.holds
    assert check.p99_ratio == pytest.approx(1.15) and check.goodput_ratio == pytest.approx(0.97)
    assert check.resource is None


def test_broken_isolation_names_the_signal_that_moved_most() -> None:
    check = isolation_check(_isolation_summary(p99_with=1500.0, goodput_with=90, lag_with=0.080))
    assert not check.holds
    assert check.resource == (
        "event-loop lag of online (s): 0.004 alone, 0.08 with ingestion; "
        "taken by CPU of ingest-worker-1 (cores): 0.02 alone, 0.1 with ingestion"
    )
    assert isolation_check({"phases": []}) is None


def test_budget_section_is_the_summary_entry_with_the_largest_error() -> None:
    summary = {**_capacity_summary(), "phases": _capacity_summary()["phases"]}
    section = budget_section(
        summary,
        SPEC,
        {"answer": Prediction(16.0, "llm"), INGESTION: Prediction(5.5, "jobs")},
        inputs={"latencies_s": {"llm": 0.8}},
    )
    assert section["plan_errors"] == {"answer": 0.0, INGESTION: round(5 / 5.5 - 1, 4)}
    assert section["max_plan_error"] == round(1 - 5 / 5.5, 4)
    assert section["capacity"][0]["steps"][2] == {
        "rate": 30,
        "offered": 30.0,
        "goodput": 16.0,
        "start_s": 29.0,
        "end_s": 36.0,
        "saturated": True,
        "plateau": True,
    }
    assert section["isolation"] is None and section["inputs"] == {"latencies_s": {"llm": 0.8}}


def test_the_report_prints_the_budget_section() -> None:
    from floodgate._load_report import render_html

    summary = _capacity_summary()
    iso = _isolation_summary(p99_with=1500.0, goodput_with=90, lag_with=0.080)
    summary["phases"] += iso["phases"]
    summary["series"] += [{**s, "t": s["t"] + 100} for s in iso["series"]]
    summary["budget"] = budget_section(
        summary, SPEC, {"answer": Prediction(20.0, "llm"), INGESTION: Prediction(5.0, "jobs")}
    )
    page = render_html(summary, [])
    assert "Budget truth: predicted vs measured" in page
    assert "<td>answer</td><td>20/s</td><td>llm</td><td>16/s</td><td>-20.0%</td>" in page
    assert (
        '<td class="fail">fail</td>' in page
        and "measured below the plan with its bottleneck saturated" in page
    )
    assert "10 → 10, 20 → 16*▲, 30 → 16*▲" in page
    assert (
        "Isolation: deal_brain alone, then with ingestion" in page and "p99 ratio 1.5 (target ≤ 1.2)" in page
    )

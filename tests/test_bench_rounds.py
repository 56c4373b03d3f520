"""bench/_rounds.py: the statistics and verdicts every benchmark with a target reports (pure, no timing)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

from _rounds import Spread, Target, alternate, alternating, json_fields, judge, percentile


def test_spread_of_five_rounds() -> None:
    s = Spread.of([5.0, 1.0, 4.0, 2.0, 3.0])
    assert (s.median, s.q1, s.q3, s.low, s.high, s.rounds) == (3.0, 2.0, 4.0, 1.0, 5.0, 5)


def test_spread_of_three_rounds_puts_the_quartiles_halfway_to_the_outer_rounds() -> None:
    s = Spread.of([0.79, 1.14, 0.73])
    assert s.median == 0.79
    assert s.q1 == pytest.approx(0.76)
    assert s.q3 == pytest.approx(0.965)
    assert (s.low, s.high) == (0.73, 1.14)


def test_spread_of_an_even_count_averages_the_middle_rounds() -> None:
    s = Spread.of([1.0, 2.0, 3.0, 10.0])
    assert s.median == 2.5
    assert s.q1 == pytest.approx(1.75)
    assert s.q3 == pytest.approx(4.75)


def test_spread_of_one_round_is_that_round() -> None:
    s = Spread.of([7.0])
    assert (s.median, s.q1, s.q3, s.low, s.high, s.rounds) == (7.0, 7.0, 7.0, 7.0, 7.0, 1)


def test_spread_refuses_no_rounds_and_nan() -> None:
    with pytest.raises(ValueError, match="no rounds"):
        Spread.of([])
    with pytest.raises(ValueError, match="NaN"):
        Spread.of([1.0, float("nan")])


def test_target_comparisons() -> None:
    assert Target("x", "<", 1.0).holds(0.99) and not Target("x", "<", 1.0).holds(1.0)
    assert Target("x", "<=", 1.0).holds(1.0) and not Target("x", "<=", 1.0).holds(1.01)
    assert Target("x", ">", 1.0).holds(1.01) and not Target("x", ">", 1.0).holds(1.0)
    assert Target("x", ">=", 1.0).holds(1.0) and not Target("x", ">=", 1.0).holds(0.99)
    with pytest.raises(ValueError, match="comparison"):
        Target("x", "==", 1.0)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("values", "verdict"),
    [
        ([1.01, 1.02, 1.03, 1.04, 1.049], "met"),
        ([1.051, 1.06, 1.07], "missed"),
        ([1.04, 1.046, 1.05, 1.058, 1.06], "straddles"),
        # one round on someone else's burst does not decide it: the range crosses, the spread does not
        ([1.01, 1.02, 1.02, 1.03, 1.03, 1.04, 1.30], "met"),
        ([1.06, 1.07, 1.07, 1.08, 1.08, 1.09, 0.90], "missed"),
        # the threshold itself fails a strict target, so a spread ending on it straddles
        ([1.00, 1.05, 1.05], "straddles"),
    ],
)
def test_verdict_reads_the_spread_of_a_less_than_target(values: list[float], verdict: str) -> None:
    assert judge(Target("loopback_ratio", "<", 1.05), values).verdict == verdict


@pytest.mark.parametrize(
    ("values", "verdict"),
    [
        ([0.91, 0.93, 0.94], "met"),
        ([0.90, 0.90, 0.95], "met"),  # >= holds on the threshold
        ([0.85, 0.88, 0.89], "missed"),
        ([0.86, 0.90, 0.94], "straddles"),
    ],
)
def test_verdict_reads_the_spread_of_an_at_least_target(values: list[float], verdict: str) -> None:
    assert judge(Target("embed_budget_utilisation", ">=", 0.9), values).verdict == verdict


def test_line_names_target_median_spread_range_rounds_and_verdict() -> None:
    result = judge(Target("gateway_added_p50_ms", "<", 1, unit="ms", digits=3), [0.79, 1.14, 0.73])
    assert result.line() == (
        "gateway_added_p50_ms < 1 ms: median 0.79 (spread [0.76, 0.965], range [0.73, 1.14]; 3 rounds): met"
    )


def test_json_fields_keep_the_old_key_as_the_median_and_add_spread_range_and_verdicts() -> None:
    results = [
        judge(Target("loopback_ratio", "<", 1.05, digits=4), [1.046, 1.058, 1.05]),
        judge(Target("rls_decisions_per_s", ">=", 5000, digits=0), [38951.4, 38056.2, 39000.9]),
    ]
    fields = json_fields(results)
    assert fields == {
        "loopback_ratio": 1.05,
        "loopback_ratio_spread": [1.048, 1.054],
        "loopback_ratio_range": [1.046, 1.058],
        "rls_decisions_per_s": 38951,
        "rls_decisions_per_s_spread": [38504, 38976],
        "rls_decisions_per_s_range": [38056, 39001],
        "verdicts": {"loopback_ratio": "straddles", "rls_decisions_per_s": "met"},
    }
    assert isinstance(fields["rls_decisions_per_s"], int)
    json.dumps(fields)  # one JSON line


def test_alternating_reverses_every_other_round() -> None:
    assert [alternating(["a", "b", "c"], n) for n in range(3)] == [
        ["a", "b", "c"],
        ["c", "b", "a"],
        ["a", "b", "c"],
    ]


def test_alternate_runs_each_once_per_round_in_alternating_order() -> None:
    calls: list[tuple[str, int]] = []

    def run(name: str):
        def one(n: int) -> float:
            calls.append((name, n))
            return n * 10 + (1 if name == "candidate" else 2)

        return one

    results = alternate(4, {"candidate": run("candidate"), "baseline": run("baseline")})
    assert calls == [
        ("candidate", 0),
        ("baseline", 0),
        ("baseline", 1),
        ("candidate", 1),
        ("candidate", 2),
        ("baseline", 2),
        ("baseline", 3),
        ("candidate", 3),
    ]
    assert results == {"candidate": [1, 11, 21, 31], "baseline": [2, 12, 22, 32]}


def test_percentile_is_the_nearest_rank_an_observed_value() -> None:
    values = [float(v) for v in range(100, 0, -1)]  # 100..1, unsorted
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 99.5) == 100.0  # rounds up to the next rank, never between two values
    assert percentile(values, 100) == 100.0
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile([1.0, 2.0], 50) == 1.0  # no interpolation: 1.5 was never measured
    assert percentile([7.0], 1) == 7.0
    assert math.isnan(percentile([], 50))

"""Rounds, medians and verdicts: how every benchmark with a pass/fail target judges it; and the one
percentile every benchmark reports its latencies with (`percentile`).

A benchmark runs its candidate and its baseline in alternating rounds (``alternating`` reverses the
order every other round, so neither always runs right after the other's load), keeps one figure per
round for each target, and ``judge`` turns those figures into a ``Result``: the median, the
interquartile range (the *spread*: the middle half of the rounds), the full range, and a verdict.

The verdict reads the spread, not the median alone, because on a shared machine two runs of the same
code can land on either side of a target. ``met`` means the whole spread meets the target, ``missed``
that none of it does, and ``straddles`` that the target lies inside the spread, so the run cannot
tell (run again on a quieter machine, or with more rounds). The full range is reported, not judged:
one round that landed on someone else's burst should not decide a verdict, a quarter of them should.
"""

from __future__ import annotations

import math
import operator
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, TypeVar

__all__ = ["Result", "Spread", "Target", "alternate", "alternating", "json_fields", "judge", "percentile"]

T = TypeVar("T")
Verdict = Literal["met", "missed", "straddles"]
Comparison = Literal["<", "<=", ">", ">="]

_COMPARE: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


@dataclass(frozen=True)
class Target:
    """A pass/fail target on one figure: ``key`` (its name in the JSON line) ``comparison`` ``threshold``.

    ``digits`` is how the figure is rounded in the JSON line and the report (0: a whole number)."""

    key: str
    comparison: Comparison
    threshold: float
    unit: str = ""
    digits: int = 3

    def __post_init__(self) -> None:
        if self.comparison not in _COMPARE:
            raise ValueError(f"comparison must be one of {sorted(_COMPARE)}, not {self.comparison!r}")

    def holds(self, value: float) -> bool:
        return _COMPARE[self.comparison](value, self.threshold)

    def rounded(self, value: float) -> float | int:
        return round(value, self.digits) if self.digits else round(value)

    def __str__(self) -> str:
        unit = f" {self.unit}" if self.unit else ""
        return f"{self.key} {self.comparison} {self.threshold:g}{unit}"


@dataclass(frozen=True)
class Spread:
    """The median of per-round figures, their interquartile range (``q1``..``q3``, inclusive
    quartiles: with 3 rounds, halfway between the middle round and each outer one) and their range."""

    median: float
    q1: float
    q3: float
    low: float
    high: float
    rounds: int

    @classmethod
    def of(cls, values: Iterable[float]) -> Spread:
        ordered = sorted(values)
        if not ordered:
            raise ValueError("no rounds to summarise")
        if any(math.isnan(v) for v in ordered):
            raise ValueError("a round's figure is NaN; leave rounds without a figure out")
        if len(ordered) == 1:
            q1 = q3 = ordered[0]
        else:
            q1, _, q3 = statistics.quantiles(ordered, n=4, method="inclusive")
        return cls(
            median=statistics.median(ordered),
            q1=q1,
            q3=q3,
            low=ordered[0],
            high=ordered[-1],
            rounds=len(ordered),
        )


@dataclass(frozen=True)
class Result:
    """One target judged on its rounds."""

    target: Target
    spread: Spread
    values: tuple[float, ...] = field(repr=False)

    @property
    def verdict(self) -> Verdict:
        low_holds, high_holds = self.target.holds(self.spread.q1), self.target.holds(self.spread.q3)
        if low_holds and high_holds:
            return "met"
        if not low_holds and not high_holds:
            return "missed"
        return "straddles"

    def line(self) -> str:
        """``KEY < TARGET: median M (spread [Q1, Q3], range [LOW, HIGH]; N rounds): VERDICT``"""
        s, r = self.spread, self.target.rounded
        return (
            f"{self.target}: median {r(s.median)} (spread [{r(s.q1)}, {r(s.q3)}], "
            f"range [{r(s.low)}, {r(s.high)}]; {s.rounds} rounds): {self.verdict}"
        )


def percentile(values: Iterable[float], q: float) -> float:
    """The ``q``-th percentile (0 < q <= 100) by nearest rank: the smallest of ``values`` with at
    least ``q`` % of them at or below it. No interpolation, so it is always a figure that was
    measured (a p99 of latencies is one request's latency); NaN when there are no values."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def judge(target: Target, values: Iterable[float]) -> Result:
    values = tuple(values)
    return Result(target, Spread.of(values), values)


def json_fields(results: Sequence[Result]) -> dict[str, object]:
    """For the JSON line: per target its median under ``key`` (the figure the benchmark has always
    reported), ``key_spread`` and ``key_range`` as [low, high], and every verdict under ``verdicts``."""
    fields: dict[str, object] = {}
    for result in results:
        key, s, r = result.target.key, result.spread, result.target.rounded
        fields[key] = r(s.median)
        fields[f"{key}_spread"] = [r(s.q1), r(s.q3)]
        fields[f"{key}_range"] = [r(s.low), r(s.high)]
    fields["verdicts"] = {result.target.key: result.verdict for result in results}
    return fields


def alternating(items: Sequence[T], round_index: int) -> list[T]:
    """``items`` in order on even rounds and reversed on odd ones (A B, B A, A B, ...)."""
    return list(items) if round_index % 2 == 0 else list(reversed(items))


def alternate(rounds: int, runs: Mapping[str, Callable[[int], T]]) -> dict[str, list[T]]:
    """Call every run once per round (with the round's index), in ``alternating`` order; each run's
    results in round order."""
    results: dict[str, list[T]] = {name: [] for name in runs}
    for n in range(rounds):
        for name in alternating(list(runs), n):
            results[name].append(runs[name](n))
    return results

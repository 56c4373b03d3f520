"""The knee of a stepped load: where goodput stops growing as the offered rate climbs.

A ``capacity`` stream climbs in steps (a short ramp, then a hold at each rate). Each hold, less its
first seconds while queues settle, gives one `Step`: the rate offered and the goodput carried (full
answers within the SLO per second; for ingestion, documents finished per second). A step is
*saturated* when its goodput falls short of what was offered by more than ``saturation`` allows. The
knee is the plateau of the saturated steps: those within ``plateau_band`` of the best saturated
goodput, and the measured capacity is their median. The median of a plateau, not the best step,
so one lucky hold does not set it; the band leaves out steps past a collapse (goodput falling as
load grows), which measure the collapse, not the capacity. With no saturated step the knee was not
reached: the run gives a lower bound, never a capacity. Pure: no clock, no I/O.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ._load_schedule import ArrivalSchedule

__all__ = ["Hold", "Knee", "Step", "counter_rate_between", "find_knee", "hold_windows", "rate_between"]


@dataclass(frozen=True)
class Hold:
    """A window of a stepped schedule at a steady rate, in seconds from the run's start."""

    rate: float
    start: float
    end: float

    @property
    def seconds(self) -> float:
        return self.end - self.start


def hold_windows(schedule: ArrivalSchedule, offset: float, *, settle: float) -> list[Hold]:
    """The holds of ``schedule`` (stages whose target is the rate they start from) started at
    ``offset``, each without its first ``settle`` seconds (a hold no longer than that is left out)."""
    holds, begin, rate = [], offset, schedule.start_rate
    for stage in schedule.stages:
        if stage.target == rate and stage.duration > settle:
            holds.append(Hold(rate, begin + settle, begin + stage.duration))
        begin += stage.duration
        rate = stage.target
    return holds


def rate_between(rows: Iterable[tuple[float, float]], start: float, end: float) -> float:
    """Per second, over the whole seconds inside ``[start, end)``, of per-second counts ``(t,
    count)``: a row counts the second from its ``t`` (the summary's timeline)."""
    first, last = math.ceil(start - 1e-9), math.floor(end + 1e-9)
    if last <= first:
        return 0.0
    return sum(count for t, count in rows if first <= t < last) / (last - first)


def counter_rate_between(points: Sequence[tuple[float, float]], start: float, end: float) -> float | None:
    """The rate of a cumulative counter over ``[start, end]``: the increase between its first and
    last sample inside the window over their distance (a drop, a restart, counts the new value).
    None with fewer than two samples inside."""
    inside = sorted((t, v) for t, v in points if start <= t <= end)
    if len(inside) < 2 or inside[-1][0] <= inside[0][0]:
        return None
    increase, previous = 0.0, inside[0][1]
    for _, value in inside[1:]:
        increase += value - previous if value >= previous else value
        previous = value
    return increase / (inside[-1][0] - inside[0][0])


@dataclass(frozen=True)
class Step:
    """One hold: the rate scheduled, the rate that arrived (``offered``) and the goodput carried."""

    rate: float
    offered: float
    goodput: float
    start: float
    end: float

    def saturated(self, saturation: float) -> bool:
        return self.goodput < saturation * self.offered


@dataclass(frozen=True)
class Knee:
    """The steps, the saturated plateau (indices into ``steps``) and the capacity it measures."""

    steps: tuple[Step, ...]
    plateau: tuple[int, ...]
    saturation: float

    @property
    def reached(self) -> bool:
        return bool(self.plateau)

    @property
    def capacity(self) -> float | None:
        """The plateau's median goodput; None when no step was saturated."""
        if not self.plateau:
            return None
        return statistics.median(self.steps[i].goodput for i in self.plateau)

    @property
    def lower_bound(self) -> float:
        """The best goodput any step carried: what the run shows at least."""
        return max((s.goodput for s in self.steps), default=0.0)

    @property
    def window(self) -> tuple[float, float] | None:
        """From the plateau's first step's start to its last's end: where to read what saturated."""
        if not self.plateau:
            return None
        return self.steps[self.plateau[0]].start, self.steps[self.plateau[-1]].end


def find_knee(steps: Sequence[Step], *, saturation: float = 0.9, plateau_band: float = 0.1) -> Knee:
    """The knee of ``steps`` (in the order they ran): saturated steps carry less than
    ``saturation`` x what they were offered; the plateau is the saturated steps within
    ``plateau_band`` (a fraction) of the best saturated goodput."""
    if not 0 < saturation <= 1:
        raise ValueError(f"saturation must be in (0, 1], got {saturation}")
    if plateau_band < 0:
        raise ValueError(f"plateau_band must be >= 0, got {plateau_band}")
    saturated = [i for i, step in enumerate(steps) if step.saturated(saturation)]
    if not saturated:
        return Knee(tuple(steps), (), saturation)
    best = max(steps[i].goodput for i in saturated)
    plateau = tuple(i for i in saturated if steps[i].goodput >= (1 - plateau_band) * best)
    return Knee(tuple(steps), plateau, saturation)

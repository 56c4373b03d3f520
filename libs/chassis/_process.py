"""What a process costs, on the process's one registry: CPU, memory, file descriptors, GC pauses.

prometheus_client registers its process, platform and GC collectors on its global registry only;
Floodgate never uses that one (a process may host several apps, tests make a registry each), so
`register_process_metrics` adds them to the registry a service's ``/metrics`` serves, with
``floodgate_gc_pause_seconds``: how long each cyclic collection stopped the process.
"""

from __future__ import annotations

import bisect
import gc
import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.core import HistogramMetricFamily, Metric

__all__ = ["GcPauses", "gc_pauses", "register_process_metrics"]

# A young collection takes microseconds; a full one over a large heap, tens to hundreds of ms.
_PAUSE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
_GENERATIONS = (0, 1, 2)


class GcPauses:
    """A ``gc.callbacks`` hook timing each collection, and the collector that reports the times.

    The hook runs inside the collector, in whichever thread triggered it, so it only does
    arithmetic on plain lists: no lock, no prometheus child (a collection triggered while a scrape
    holds a metric's lock would otherwise wait on that lock in the same thread, for ever).
    Collections never overlap (the interpreter runs one at a time), so one start time suffices.
    """

    def __init__(self, buckets: tuple[float, ...] = _PAUSE_BUCKETS) -> None:
        self.buckets = buckets
        self._counts = {g: [0] * (len(buckets) + 1) for g in _GENERATIONS}  # last: over the top bound
        self._sums = dict.fromkeys(_GENERATIONS, 0.0)
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        self.record(info["generation"], time.perf_counter() - self._started)

    def record(self, generation: int, pause: float) -> None:
        """Count one collection of ``generation`` that took ``pause`` seconds."""
        self._counts[generation][bisect.bisect_left(self.buckets, pause)] += 1
        self._sums[generation] += pause

    def describe(self) -> Iterator[Metric]:
        yield self._family()

    def collect(self) -> Iterator[Metric]:
        family = self._family()
        for generation in _GENERATIONS:
            counts = list(self._counts[generation])  # a copy: a collection may land meanwhile
            cumulative, total = [], 0
            for bound, count in zip((*map(str, self.buckets), "+Inf"), counts, strict=True):
                total += count
                cumulative.append((bound, total))
            family.add_metric([str(generation)], cumulative, self._sums[generation])
        yield family

    @staticmethod
    def _family() -> HistogramMetricFamily:
        return HistogramMetricFamily(
            "floodgate_gc_pause_seconds",
            "How long each cyclic garbage collection stopped the process, by generation",
            labels=["generation"],
        )

    def __repr__(self) -> str:
        counts = {g: sum(c) for g, c in self._counts.items()}
        return f"<GcPauses collections={counts}>"


_process_gc_pauses: GcPauses | None = None


def gc_pauses() -> GcPauses:
    """The process's `GcPauses`, hooked into ``gc.callbacks`` on first use.

    One per process, not per registry: the garbage collector is the process's, and a hook per
    app (tests build hundreds) would time every collection hundreds of times over.
    """
    global _process_gc_pauses
    if _process_gc_pauses is None:
        _process_gc_pauses = GcPauses()
        gc.callbacks.append(_process_gc_pauses)
    return _process_gc_pauses


def register_process_metrics(registry: CollectorRegistry) -> None:
    """Add ``process_*`` (CPU seconds, resident memory, open file descriptors...), ``python_info``,
    ``python_gc_*`` and ``floodgate_gc_pause_seconds`` to ``registry``. Once per registry."""
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    registry.register(gc_pauses())

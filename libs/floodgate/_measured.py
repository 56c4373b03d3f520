"""Dependencies' measured latencies from a Prometheus-format source, for `floodgate plan --latency-from`.

The mean latency of each dependency is ``floodgate_downstream_latency_seconds`` ``_sum`` over
``_count``, summed over every status and process in the source: what the providers really did,
in place of the budget's ``typical_latency``.
"""

from __future__ import annotations

import urllib.request
from collections import defaultdict
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

__all__ = ["LATENCY_METRIC", "MeasuredLatencyError", "mean_latencies", "read_latencies"]

LATENCY_METRIC = "floodgate_downstream_latency_seconds"


class MeasuredLatencyError(ValueError):
    """The source could not be read or holds no latency of any dependency."""


def mean_latencies(*texts: str) -> dict[str, float]:
    """dependency -> mean seconds per call, from Prometheus exposition ``texts`` (several
    processes' pooled: every call counts once; dependencies with no calls are left out)."""
    sums: dict[str, float] = defaultdict(float)
    counts: dict[str, float] = defaultdict(float)
    for text in texts:
        _add_latency_totals(text, sums, counts)
    return {dep: sums[dep] / n for dep, n in sorted(counts.items()) if n > 0}


def _add_latency_totals(text: str, sums: dict[str, float], counts: dict[str, float]) -> None:
    try:
        families = list(text_string_to_metric_families(text))
    except ValueError as exc:
        raise MeasuredLatencyError(f"not Prometheus text format: {exc}") from None
    for family in families:
        if family.name != LATENCY_METRIC:
            continue
        for sample in family.samples:
            dependency = sample.labels.get("dependency")
            if dependency is None:
                continue
            if sample.name == f"{LATENCY_METRIC}_sum":
                sums[dependency] += sample.value
            elif sample.name == f"{LATENCY_METRIC}_count":
                counts[dependency] += sample.value


def read_latencies(*sources: str, timeout: float = 5.0) -> dict[str, float]:
    """`mean_latencies` of ``/metrics`` URLs (http or https) or files (the processes of one service)."""
    texts = []
    for source in sources:
        try:
            if source.startswith(("http://", "https://")):
                with urllib.request.urlopen(source, timeout=timeout) as response:
                    texts.append(response.read().decode())
            else:
                texts.append(Path(source).read_text())
        except OSError as exc:
            raise MeasuredLatencyError(f"cannot read {source}: {exc}") from None
    latencies = mean_latencies(*texts)
    if not latencies:
        raise MeasuredLatencyError(f"{', '.join(sources)}: no {LATENCY_METRIC} samples with calls")
    return latencies

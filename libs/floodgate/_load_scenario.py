"""The scenario file of ``floodgate loadtest`` (config/loadtest.toml): request templates, load
streams at an arrival rate, scenarios made of phases of streams, SLO thresholds and the limits that
make a run valid. Validated once at load (`load_scenarios`); errors name the key path, as the budget's.

A *stream* is one open-loop load: an executor (``constant`` rate, or ``ramping`` through stages), a
``max_in_flight``, a weighted mix of request templates and of tenants. A *composite* scenario runs
``phases`` one after the other, each phase running some streams at once (``mixed``: online and
ingestion together; ``isolation``: dealBrain alone, then with ingestion).
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ._budget import FileProblems, TenantName, _describe, read_toml_file
from ._load_schedule import ArrivalSchedule, Stage, Validity, constant_rate, ramping_rate

__all__ = [
    "DocumentSize",
    "LoadTestFile",
    "Phase",
    "RequestTemplate",
    "ScenarioError",
    "ScenarioSpec",
    "load_scenarios",
    "parse_scenarios",
]

Weight = Annotated[float, Field(gt=0, allow_inf_nan=False)]


class ScenarioError(FileProblems):
    """The scenario file is invalid."""

    default_source = "scenario file"


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# -- document sizes ----------------------------------------------------------------------------------


class FixedSize(_Model):
    """Every document ``bytes`` long."""

    distribution: Literal["fixed"]
    bytes: int = Field(ge=1)

    def sample(self, rng: random.Random) -> int:
        return self.bytes


class UniformSize(_Model):
    """Sizes drawn evenly from ``min_bytes`` to ``max_bytes`` inclusive."""

    distribution: Literal["uniform"]
    min_bytes: int = Field(ge=1)
    max_bytes: int = Field(ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> UniformSize:
        if self.max_bytes < self.min_bytes:
            raise ValueError("max_bytes must be >= min_bytes")
        return self

    def sample(self, rng: random.Random) -> int:
        return rng.randint(self.min_bytes, self.max_bytes)


class LogNormalSize(_Model):
    """Sizes whose logarithm is normal: half below ``median_bytes``, a long tail set by ``sigma``
    (real document collections look like this), cut at ``max_bytes``."""

    distribution: Literal["lognormal"]
    median_bytes: int = Field(ge=1)
    sigma: float = Field(gt=0, le=4)
    max_bytes: int = Field(ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> LogNormalSize:
        if self.max_bytes < self.median_bytes:
            raise ValueError("max_bytes must be >= median_bytes")
        return self

    def sample(self, rng: random.Random) -> int:
        size = self.median_bytes * math.exp(self.sigma * rng.gauss(0.0, 1.0))
        return max(1, min(self.max_bytes, round(size)))


DocumentSize = Annotated[FixedSize | UniformSize | LogNormalSize, Field(discriminator="distribution")]


# -- requests ----------------------------------------------------------------------------------------


class RequestTemplate(_Model):
    """One kind of request a stream sends. ``online``: ``method path`` with ``body`` as JSON.
    ``job``: a job submission whose document's size is drawn from ``document_size``; the client then
    follows the job as a client would (``follow``: poll its status, or list the tenant's jobs),
    honouring ``Retry-After``."""

    kind: Literal["online", "job"] = "online"
    method: Literal["GET", "POST", "PUT", "DELETE"] = "POST"
    path: str = Field(pattern=r"^/")
    body: dict[str, Any] = Field(default_factory=dict)
    document_size: DocumentSize | None = None
    follow: Literal["status", "list", "none"] = "status"

    @model_validator(mode="after")
    def _kind_fits(self) -> RequestTemplate:
        if self.kind == "job" and self.document_size is None:
            raise ValueError("a job template needs document_size")
        if self.kind == "online" and self.document_size is not None:
            raise ValueError("document_size is for job templates (kind = 'job') only")
        return self


class Threshold(_Model):
    """An SLO a run is judged against, per request template: latency percentiles in milliseconds."""

    p95_ms: float | None = Field(default=None, gt=0)
    p99_ms: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _some(self) -> Threshold:
        if self.p95_ms is None and self.p99_ms is None:
            raise ValueError("set p95_ms, p99_ms or both")
        return self


class ValiditySpec(_Model):
    """When a run kept to its schedule (floodgate/_load_schedule.py's `Validity`)."""

    max_late_p99_ms: float = Field(default=10.0, gt=0)
    #: every request's lateness bound; 0 means none (TOML has no null)
    max_late_ms: float = Field(default=100.0, ge=0)
    max_dropped_fraction: float = Field(default=0.0, ge=0, le=1)

    def validity(self) -> Validity:
        late = self.max_late_ms / 1000 if self.max_late_ms > 0 else None
        return Validity(self.max_late_p99_ms / 1000, late, self.max_dropped_fraction)


# -- scenarios ---------------------------------------------------------------------------------------


class StageSpec(_Model):
    target: float = Field(ge=0, allow_inf_nan=False)
    duration: float = Field(gt=0, allow_inf_nan=False)


class Phase(_Model):
    """Streams (stream scenarios, by name) run at once; the phase lasts as long as its longest."""

    name: str = Field(min_length=1)
    run: list[str] = Field(min_length=1)


class ScenarioSpec(_Model):
    """A stream (``executor`` set) or a composite (``phases`` set); never both."""

    description: str = ""
    executor: Literal["constant", "ramping"] | None = None
    rate: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    duration: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    start_rate: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    stages: list[StageSpec] = Field(default_factory=list)
    max_in_flight: int = Field(default=100, ge=1)
    #: seconds requests still running at the end get before they are cancelled (k6's gracefulStop)
    grace: float = Field(default=5.0, ge=0)
    tenants: dict[TenantName, Weight] | None = None
    requests: dict[str, Weight] = Field(default_factory=dict)
    phases: list[Phase] = Field(default_factory=list)

    @model_validator(mode="after")
    def _shape(self) -> ScenarioSpec:
        if self.phases:
            stray = [k for k in ("executor", "rate", "duration", "tenants") if getattr(self, k) is not None]
            stray += [k for k in ("stages", "requests") if getattr(self, k)]
            if stray:
                raise ValueError(f"a scenario with phases takes no {', '.join(stray)} (its streams do)")
            return self
        if self.executor is None:
            raise ValueError("set executor ('constant' or 'ramping') or phases")
        if not self.requests:
            raise ValueError("a stream needs requests (template name = weight)")
        if self.executor == "constant":
            if self.rate is None or self.duration is None:
                raise ValueError("a constant executor needs rate and duration")
            if self.stages:
                raise ValueError("stages are for the ramping executor")
        else:
            if not self.stages:
                raise ValueError("a ramping executor needs stages [{target, duration}, ...]")
            if self.rate is not None or self.duration is not None:
                raise ValueError("a ramping executor takes start_rate and stages, not rate or duration")
        return self

    @property
    def is_stream(self) -> bool:
        return not self.phases

    def schedule(self) -> ArrivalSchedule:
        if self.executor == "constant":
            assert self.rate is not None and self.duration is not None
            return constant_rate(self.rate, self.duration)
        return ramping_rate(self.start_rate, [Stage(s.target, s.duration) for s in self.stages])


class LoadTestFile(_Model):
    """The whole file. ``tenants`` is the default mix for streams that name none."""

    tenants: dict[TenantName, Weight] = Field(default_factory=dict)
    validity: ValiditySpec = Field(default_factory=ValiditySpec)
    requests: dict[str, RequestTemplate] = Field(min_length=1)
    thresholds: dict[str, Threshold] = Field(default_factory=dict)
    scenarios: dict[str, ScenarioSpec] = Field(min_length=1)

    def phases(self, name: str) -> list[tuple[str, list[tuple[str, ScenarioSpec]]]]:
        """The scenario ``name`` as phases of (stream name, stream); a stream is one phase of itself."""
        scenario = self.scenarios[name]
        if scenario.is_stream:
            return [(name, [(name, scenario)])]
        return [(p.name, [(s, self.scenarios[s]) for s in p.run]) for p in scenario.phases]

    def tenants_of(self, stream: ScenarioSpec) -> dict[str, float]:
        return dict(stream.tenants if stream.tenants is not None else self.tenants)


# -- loading -----------------------------------------------------------------------------------------


def load_scenarios(path: str | Path) -> LoadTestFile:
    """Read and validate the scenario file at ``path`` (TOML). Raises `ScenarioError`."""
    path = Path(path)
    return parse_scenarios(read_toml_file(path, ScenarioError), source=str(path))


def parse_scenarios(data: Mapping[str, Any], *, source: str = "scenario file") -> LoadTestFile:
    """Validate an already-parsed scenario mapping. Raises `ScenarioError`."""
    try:
        spec = LoadTestFile.model_validate(data)
    except ValidationError as exc:
        raise ScenarioError([_describe(_without_tags(err)) for err in exc.errors()], source=source) from None
    problems = _cross_checks(spec)
    if problems:
        raise ScenarioError(problems, source=source)
    return spec


_TAGS = {"fixed", "uniform", "lognormal"}


def _without_tags(err: Mapping[str, Any]) -> Mapping[str, Any]:
    """Drop the union tag pydantic puts in a location (``document_size.lognormal.sigma``): it is not
    a key of the file."""
    loc = err["loc"]
    kept = [p for i, p in enumerate(loc) if not (p in _TAGS and i > 0 and loc[i - 1] == "document_size")]
    return {**err, "loc": tuple(kept)}


def _cross_checks(spec: LoadTestFile) -> list[str]:
    """The checks that span keys: names that refer to templates, streams and tenants."""
    problems: list[str] = []
    templates = ", ".join(spec.requests)
    for name in spec.thresholds:
        if name not in spec.requests:
            problems.append(f"thresholds.{name}: unknown request template (known: {templates})")
    streams = [name for name, s in spec.scenarios.items() if s.is_stream]
    for name, scenario in spec.scenarios.items():
        key = f"scenarios.{name}"
        for template in scenario.requests:
            if template not in spec.requests:
                problems.append(f"{key}.requests.{template}: unknown request template (known: {templates})")
        if scenario.is_stream and not spec.tenants_of(scenario):
            problems.append(f"{key}.tenants: no tenants (set them here or at the top of the file)")
        for i, phase in enumerate(scenario.phases):
            for stream in phase.run:
                if stream not in spec.scenarios:
                    problems.append(f"{key}.phases.{i}.run: unknown scenario {stream!r}")
                elif not spec.scenarios[stream].is_stream:
                    problems.append(
                        f"{key}.phases.{i}.run: {stream!r} has phases itself; a phase runs streams "
                        f"(streams: {', '.join(streams)})"
                    )
            if len(set(phase.run)) != len(phase.run):
                problems.append(f"{key}.phases.{i}.run: a stream is named twice")
    return problems


# -- the summary a dry run prints --------------------------------------------------------------------


@dataclass(frozen=True)
class StreamSummary:
    name: str
    schedule: str
    duration: float
    expected_requests: float
    peak_rate: float
    max_in_flight: int
    requests: dict[str, float]
    tenants: dict[str, float]


def summarize(spec: LoadTestFile, name: str) -> list[tuple[str, list[StreamSummary]]]:
    """Each phase of scenario ``name`` with what each of its streams will offer."""
    out = []
    for phase, streams in spec.phases(name):
        rows = []
        for stream_name, stream in streams:
            schedule = stream.schedule()
            rows.append(
                StreamSummary(
                    stream_name,
                    schedule.describe(),
                    schedule.duration,
                    schedule.expected_count,
                    schedule.peak_rate,
                    stream.max_in_flight,
                    dict(stream.requests),
                    spec.tenants_of(stream),
                )
            )
        out.append((phase, rows))
    return out

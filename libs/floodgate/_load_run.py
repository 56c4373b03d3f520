"""Running a scenario of ``floodgate loadtest`` against a deployment: each stream an `OpenLoop`
(floodgate/_load_schedule.py) over one ``httpx.AsyncClient``, the phases of a composite scenario in
order, every service's ``/metrics`` and Envoy's statistics scraped each second off the loop
(floodgate/_load_scrape.py), and at the end the run's ``summary.json`` (docs/loadtest.md, "The summary").

Each answer is classified: *good* a 2xx (also counted *degraded* when its JSON has a non-empty
``degraded`` list), *rejected* a 429 or 503, *errors* everything else (other statuses, transport
errors, timeouts, requests cut off at the end). Latencies count from each request's scheduled start;
an endpoint's percentiles are its good answers' latencies. A job submission's latency is the submit's
answer; when the template follows the job, its status is polled (honouring ``Retry-After``, bounded)
by a follower outside the stream's ``max_in_flight``, and submit-to-finish latencies are kept apart.
Runs on anyio: trio or asyncio.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import httpx

from ._heap import frozen_heap
from ._load_scenario import FixedSize, LoadTestFile, RequestTemplate, ScenarioSpec
from ._load_schedule import Arrival, ArrivalSchedule, LoadRun, OpenLoop, nearest_rank
from ._load_scrape import Scraper

__all__ = [
    "ApiKeysFileError",
    "Outcome",
    "classify",
    "default_keys_file",
    "exit_status",
    "load_api_keys",
    "render_summary",
    "run_scenario",
    "write_summary",
]

TERMINAL_JOB_STATES = frozenset({"succeeded", "failed", "dead", "cancelled"})


# -- API keys ----------------------------------------------------------------------------------------


class ApiKeysFileError(ValueError):
    """The keys file is missing, unreadable, or names no key for a tenant the scenario sends as."""


def default_keys_file(environ: Mapping[str, str] | None = None) -> Path:
    """What ``make up`` reads: ``$FLOODGATE_API_KEYS_FILE``, else config/api_keys.yaml, else the sample."""
    env = os.environ if environ is None else environ
    if env.get("FLOODGATE_API_KEYS_FILE"):
        return Path(env["FLOODGATE_API_KEYS_FILE"])
    own = Path("config/api_keys.yaml")
    return own if own.exists() else Path("config/api_keys.sample.yaml")


def _parse_keys_text(text: str) -> Any:
    """The keys file's YAML; without PyYAML (the toolkit does not depend on it), the file's one shape:
    ``tenants:`` / ``  NAME:`` / ``    keys:`` then ``- KEY`` lines or ``keys: [KEY, ...]``."""
    try:
        import yaml
    except ImportError:
        pass
    else:
        return yaml.safe_load(text)
    tenants: dict[str, dict[str, list[str]]] = {}
    current: str | None = None
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].rstrip()
        if not line.strip() or line.strip() == "tenants:":
            continue
        stripped = line.strip()
        if stripped.startswith("- ") and current is not None:
            tenants[current]["keys"].append(stripped[2:].strip().strip("'\""))
        elif stripped.startswith("keys:") and current is not None:
            inline = stripped[5:].strip()
            if inline.startswith("["):
                tenants[current]["keys"] += [
                    k.strip().strip("'\"") for k in inline.strip("[]").split(",") if k.strip()
                ]
        elif stripped.endswith(":"):
            current = stripped[:-1].strip().strip("'\"")
            tenants[current] = {"keys": []}
    return {"tenants": tenants}


def load_api_keys(path: str | Path) -> dict[str, str]:
    """Tenant -> the first of its keys, from a file in config/api_keys.sample.yaml's format (the shape
    cluster/api_keys.py validates: ``tenants: {NAME: {keys: [KEY, ...]}}``)."""
    path = Path(path)
    try:
        data = _parse_keys_text(path.read_text())
    except OSError as exc:
        raise ApiKeysFileError(f"{path}: cannot read the API keys file ({exc.strerror or exc})") from None
    except Exception as exc:  # yaml.YAMLError (PyYAML is optional here)
        raise ApiKeysFileError(f"{path}: not valid YAML ({exc})") from None
    tenants = data.get("tenants") if isinstance(data, Mapping) else None
    if not isinstance(tenants, Mapping):
        raise ApiKeysFileError(f"{path}: expected a top-level 'tenants' mapping tenant -> {{keys: [...]}}")
    keys = {}
    for tenant, entry in tenants.items():
        listed = entry.get("keys") if isinstance(entry, Mapping) else None
        if isinstance(listed, list) and listed and isinstance(listed[0], str):
            keys[str(tenant)] = listed[0]
    return keys


# -- one request -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Outcome:
    """One request's answer: ``kind`` is ``good``, ``rejected`` or ``error``; ``latency`` (seconds from
    the scheduled start to the answer) is None for a request without an answer."""

    endpoint: str
    kind: str
    latency: float | None
    status: int | None = None
    degraded: bool = False


def classify(status: int, body: bytes) -> tuple[str, bool]:
    """-> (kind, degraded) for an HTTP answer (the summary contract's classes)."""
    if 200 <= status < 300:
        degraded = False
        try:
            document = json.loads(body) if body else None
        except ValueError:
            document = None
        if isinstance(document, Mapping) and isinstance(document.get("degraded"), list):
            degraded = bool(document["degraded"])
        return "good", degraded
    if status in (429, 503):
        return "rejected", False
    return "error", False


def _retry_after(response: httpx.Response, default: float) -> float:
    raw = response.headers.get("retry-after", "")
    try:
        return max(0.0, min(float(raw), 60.0))
    except ValueError:
        return default


def _pick(weights: Mapping[str, float], rng: random.Random) -> str:
    names = list(weights)
    return rng.choices(names, weights=[weights[n] for n in names])[0]


class _Documents:
    """The texts of job submissions: any size up to ``largest`` bytes, each a slice at a drawn offset
    of one text of words drawn once, before the run. A slice costs microseconds; drawing a document
    word by word would hold the loop for tens of milliseconds at the lognormal tail's megabyte."""

    WORDS = ("supplier", "invoice", "shipment", "contract", "price", "quarter", "delivery", "order")

    def __init__(self, largest: int, *, seed: int) -> None:
        rng = random.Random(f"{seed}:documents")
        # at least twice the largest document (a word and its space: 6 bytes or more), so offsets vary
        self._text = " ".join(rng.choices(self.WORDS, k=2 * largest // 6 + 16))

    @classmethod
    def for_templates(cls, templates: Sequence[RequestTemplate], *, seed: int) -> _Documents:
        sizes = [t.document_size for t in templates if t.document_size is not None]
        largest = max((s.bytes if isinstance(s, FixedSize) else s.max_bytes for s in sizes), default=0)
        return cls(largest, seed=seed)

    def draw(self, size: int, rng: random.Random) -> str:
        """``size`` bytes of words (a word may be cut at either end), never starting with a space."""
        offset = rng.randrange(len(self._text) - size)
        if self._text[offset] == " ":
            offset += 1
        return self._text[offset : offset + size]


@dataclass
class _Job:
    """A followed job: submitted at ``submitted`` (the scheduled start), its end when seen."""

    endpoint: str
    submitted: float
    finished: float | None = None
    state: str | None = None


class _Stream:
    """One stream's ``send``: picks the template and the tenant from the request's index (so the same
    seed sends the same requests, and a dropped request's template is known), sends, classifies."""

    def __init__(
        self,
        name: str,
        stream: ScenarioSpec,
        spec: LoadTestFile,
        client: httpx.AsyncClient,
        keys: Mapping[str, str],
        *,
        seed: int,
        follow: Callable[[str, str, str, str, float], None],
        documents: _Documents,
        phase: str = "",
    ) -> None:
        self.name, self.stream, self.spec, self.client = name, stream, spec, client
        self.keys, self.seed, self.follow, self.phase = keys, seed, follow, phase
        self.documents = documents
        self.tenants = spec.tenants_of(stream)

    def choice(self, index: int) -> tuple[str, str, random.Random]:
        rng = random.Random(f"{self.seed}:{self.name}:{index}")
        return _pick(self.stream.requests, rng), _pick(self.tenants, rng), rng

    async def send(self, arrival: Arrival) -> Outcome:
        endpoint, tenant, rng = self.choice(arrival.index)
        template: RequestTemplate = self.spec.requests[endpoint]
        # "{request}" in a top-level string of the body: this request's own value (a cached
        # endpoint answers repeated bodies from its cache, not from its dependencies).
        body: dict[str, Any] = {
            key: value.replace("{request}", f"{self.phase}-{self.name}-{arrival.index}")
            if isinstance(value, str)
            else value
            for key, value in template.body.items()
        }
        if template.kind == "job":
            body.setdefault("doc_id", f"loadtest-{self.name}-{self.seed}-{arrival.index}")
            if "url" in body:
                # A fragment per request: each job its own content (the API folds an active job's
                # duplicate into it), the same page fetched (a fetch never sends the fragment).
                body["url"] = f"{body['url']}#{self.name}-{self.seed}-{arrival.index}"
            else:
                assert template.document_size is not None
                body.setdefault("text", self.documents.draw(template.document_size.sample(rng), rng))
        headers = {"x-api-key": self.keys[tenant]}
        try:
            response = await self.client.request(
                template.method,
                template.path,
                json=body if template.method != "GET" else None,
                headers=headers,
            )
        except httpx.HTTPError:
            return Outcome(endpoint, "error", anyio.current_time() - arrival.scheduled)
        latency = anyio.current_time() - arrival.scheduled
        kind, degraded = classify(response.status_code, response.content)
        if kind == "good" and template.kind == "job" and template.follow != "none":
            try:
                answer = response.json()
            except ValueError:
                answer = {}
            status_url = answer.get("status_url") if isinstance(answer, Mapping) else None
            if isinstance(status_url, str):
                path = status_url if template.follow == "status" else template.path
                self.follow(endpoint, path, str(answer.get("job_id", "")), tenant, arrival.scheduled)
        return Outcome(endpoint, kind, latency, response.status_code, degraded)


# -- the run -----------------------------------------------------------------------------------------


@dataclass
class _Result:
    stream: str
    phase: str
    loop: LoadRun
    outcomes: list[tuple[float, Outcome]]  # (scheduled, outcome), dropped ones as kind "dropped"


async def _follow_job(
    client: httpx.AsyncClient,
    job: _Job,
    path: str,
    job_id: str,
    key: str,
    *,
    poll_interval: float,
    max_polls: int,
) -> None:
    """Poll ``path`` (the job's status, or the tenant's job list) until the job ends, waiting
    ``Retry-After`` when the answer has one, at most ``max_polls`` times."""
    for _ in range(max_polls):
        wait = poll_interval
        try:
            response = await client.get(path, headers={"x-api-key": key})
        except httpx.HTTPError:
            response = None
        if response is not None:
            if response.status_code == 200:
                try:
                    document = response.json()
                except ValueError:
                    document = {}
                state = _job_state(document, job_id)
                if state in TERMINAL_JOB_STATES:
                    job.finished, job.state = anyio.current_time(), state
                    return
            wait = _retry_after(response, poll_interval)
        await anyio.sleep(wait)


def _job_state(document: Any, job_id: str) -> str | None:
    """The job's state from its status, or from the first page of the tenant's jobs (``follow =
    "list"``; a job not on it yet counts as unfinished)."""
    if not isinstance(document, Mapping):
        return None
    if "state" in document:
        return str(document["state"])
    for item in document.get("jobs") or []:
        if isinstance(item, Mapping) and str(item.get("job_id")) == job_id:
            return str(item.get("state"))
    return None


async def run_scenario(
    spec: LoadTestFile,
    name: str,
    *,
    target: str,
    keys: Mapping[str, str],
    scraper: Scraper | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    seed: int = 1,
    request_timeout: float = 30.0,
    poll_interval: float = 1.0,
    max_polls: int = 120,
    follow_grace: float = 30.0,
    notes: Sequence[str] = (),
    on_phase: Callable[[str, float], None] | None = None,
) -> dict[str, Any]:
    """Run scenario ``name`` against ``target`` and return its summary (``summary.json``'s document).
    ``scraper`` (its owner closes it) reads the deployment's metrics during the run into ``series``;
    ``on_phase(phase, seconds)`` is called as each phase starts (the command prints it)."""
    phases = spec.phases(name)
    needed = {t for _, streams in phases for _, s in streams for t in spec.tenants_of(s)}
    missing = sorted(needed - set(keys))
    if missing:
        raise ApiKeysFileError(f"no API key for tenant(s) {', '.join(missing)} in the keys file")
    started_at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    max_connections = sum(s.max_in_flight for _, streams in phases for _, s in streams) + 50
    results: list[_Result] = []
    jobs: list[_Job] = []
    documents = _Documents.for_templates(  # drawn before the clock starts
        [spec.requests[t] for _, streams in phases for _, s in streams for t in s.requests], seed=seed
    )
    async with httpx.AsyncClient(
        base_url=target,
        transport=transport,
        timeout=request_timeout,
        limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=100),
    ) as client:
        # What is alive now (modules, the scenario, the documents' text) lives through the run: frozen,
        # a full collection during the run walks only what the run made, instead of holding the loop,
        # and every request due, while it walks all the process holds.
        with frozen_heap(collect=True):
            if scraper is not None:
                await scraper.start()  # its rounds count their time from now, as the run does
            start = anyio.current_time()
            try:
                async with anyio.create_task_group() as followers:

                    def follow(endpoint: str, path: str, job_id: str, tenant: str, scheduled: float) -> None:
                        job = _Job(endpoint, scheduled)
                        jobs.append(job)
                        followers.start_soon(
                            lambda: _follow_job(
                                client,
                                job,
                                path,
                                job_id,
                                keys[tenant],
                                poll_interval=poll_interval,
                                max_polls=max_polls,
                            )
                        )

                    for phase, streams in phases:
                        if on_phase is not None:
                            on_phase(phase, max(stream.schedule().duration for _, stream in streams))
                        spacing = stagger(stream.schedule() for _, stream in streams)
                        async with anyio.create_task_group() as running:
                            for index, (stream_name, stream) in enumerate(streams):
                                running.start_soon(
                                    _run_stream,
                                    index * spacing,
                                    phase,
                                    stream_name,
                                    stream,
                                    spec,
                                    client,
                                    keys,
                                    seed,
                                    follow,
                                    documents,
                                    results,
                                )
                    followers.cancel_scope.deadline = anyio.current_time() + follow_grace
            finally:
                if scraper is not None:
                    await scraper.stop()
        duration = anyio.current_time() - start
    series = scraper.series() if scraper is not None else []
    failures = scraper.failures if scraper is not None else {}
    return summarize_run(
        spec,
        name,
        results,
        jobs,
        series,
        target=target,
        start=start,
        duration=duration,
        started_at=started_at,
        notes=[*notes, *(f"scraping {who} failed: {error}" for who, error in sorted(failures.items()))],
    )


def stagger(schedules: Iterable[ArrivalSchedule]) -> float:
    """How far apart the streams of a phase start: the fastest one's interval at its peak, shared out
    among them. The generator is one event loop: streams started together would have every arrival
    due at the same instant (8/s and 4/s: every 0.25 s), each started after the others' requests
    have been sent, and late by their work. Staggered, streams whose rates are multiples of one
    another never have arrivals due together, and each still offers its rate for its duration."""
    schedules = list(schedules)
    fastest = max((s.peak_rate for s in schedules), default=0.0)
    return 0.0 if fastest <= 0 or len(schedules) < 2 else 1 / fastest / len(schedules)


async def _run_stream(
    delay: float,
    phase: str,
    stream_name: str,
    stream: ScenarioSpec,
    spec: LoadTestFile,
    client: httpx.AsyncClient,
    keys: Mapping[str, str],
    seed: int,
    follow: Callable[[str, str, str, str, float], None],
    documents: _Documents,
    results: list[_Result],
) -> None:
    sender = _Stream(
        stream_name, stream, spec, client, keys, seed=seed, follow=follow, documents=documents, phase=phase
    )
    loop = OpenLoop(
        stream.schedule(),
        sender.send,
        max_in_flight=stream.max_in_flight,
        grace=stream.grace,
        validity=spec.validity.validity(),
    )
    await anyio.sleep(delay)
    run = await loop.run()
    outcomes: list[tuple[float, Outcome]] = []
    for record in run.records:
        if isinstance(record.result, Outcome):
            outcomes.append((record.scheduled, record.result))
        else:  # interrupted at the end, or send raised: no answer
            endpoint = sender.choice(record.index)[0]
            outcomes.append((record.scheduled, Outcome(endpoint, "error", None)))
    seen = {r.index for r in run.records}
    dropped = sorted(set(range(run.statistics.scheduled)) - seen)
    for index, scheduled in zip(dropped, run.dropped, strict=False):
        outcomes.append((scheduled, Outcome(sender.choice(index)[0], "dropped", None)))
    results.append(_Result(stream_name, phase, run, outcomes))


# -- the summary -------------------------------------------------------------------------------------


def _ms(value: float) -> float | None:
    return None if math.isnan(value) else round(value * 1000, 3)


def _percentiles(latencies: Sequence[float]) -> dict[str, float | None]:
    return {f"p{q}_ms": _ms(nearest_rank(latencies, q)) for q in (50, 95, 99)}


def _slo_seconds(spec: LoadTestFile, endpoint: str) -> float | None:
    """The latency a full answer must beat to count as goodput: the template's p99 threshold (else
    its p95), None without one."""
    threshold = spec.thresholds.get(endpoint)
    if threshold is None:
        return None
    limit = threshold.p99_ms if threshold.p99_ms is not None else threshold.p95_ms
    return None if limit is None else limit / 1000


def _goodput(outcomes: Sequence[Outcome], slo: float | None) -> int:
    """Full answers (2xx, nothing degraded) within ``slo`` seconds: what the capacity and isolation
    verdicts count (floodgate/_load_verdict.py)."""
    return sum(
        1
        for o in outcomes
        if o.kind == "good" and not o.degraded and o.latency is not None and (slo is None or o.latency <= slo)
    )


def _counts(outcomes: Sequence[Outcome]) -> dict[str, int]:
    return {
        "offered": len(outcomes),
        "good": sum(1 for o in outcomes if o.kind == "good"),
        "rejected": sum(1 for o in outcomes if o.kind == "rejected"),
        "errors": sum(1 for o in outcomes if o.kind == "error"),
        "degraded": sum(1 for o in outcomes if o.degraded),
        "dropped": sum(1 for o in outcomes if o.kind == "dropped"),
    }


def summarize_run(
    spec: LoadTestFile,
    name: str,
    results: Sequence[_Result],
    jobs: Sequence[_Job],
    series: list[dict[str, Any]],
    *,
    target: str,
    start: float,
    duration: float,
    started_at: str,
    notes: Sequence[str] = (),
) -> dict[str, Any]:
    """The summary contract's document from the streams' outcomes (pure: no clock, no I/O)."""
    by_endpoint: dict[str, list[tuple[float, Outcome]]] = defaultdict(list)
    for result in results:
        for scheduled, outcome in result.outcomes:
            by_endpoint[outcome.endpoint].append((scheduled, outcome))
    endpoints: dict[str, Any] = {}
    timeline: list[dict[str, Any]] = []
    for endpoint in sorted(by_endpoint):
        rows = by_endpoint[endpoint]
        outcomes = [o for _, o in rows]
        good = [o.latency for o in outcomes if o.kind == "good" and o.latency is not None]
        slo_s = _slo_seconds(spec, endpoint)
        entry: dict[str, Any] = {
            **_counts(outcomes),
            "goodput": _goodput(outcomes, slo_s),
            **_percentiles(good),
        }
        threshold = spec.thresholds.get(endpoint)
        slo = {k: v for k, v in threshold if v is not None} if threshold else {}
        entry["slo"] = slo
        entry["verdicts"] = {
            key.removesuffix("_ms"): "pass" if entry[key] is not None and entry[key] <= limit else "fail"
            for key, limit in slo.items()
        }
        followed = [j for j in jobs if j.endpoint == endpoint]
        if followed:
            done = [j.finished - j.submitted for j in followed if j.finished is not None]
            entry["jobs"] = {
                "followed": len(followed),
                "finished": len(done),
                "states": dict(sorted(_tally(j.state or "unfinished" for j in followed).items())),
                **_percentiles(done),
            }
        endpoints[endpoint] = entry
        per_second: dict[int, list[Outcome]] = defaultdict(list)
        for scheduled, outcome in rows:
            per_second[int(max(0.0, scheduled - start))].append(outcome)
        for second in sorted(per_second):
            chunk = per_second[second]
            counts = _counts(chunk)
            timeline.append(
                {
                    "t": float(second),
                    "endpoint": endpoint,
                    **{k: counts[k] for k in ("offered", "good", "rejected", "errors", "degraded")},
                    "goodput": _goodput(chunk, slo_s),
                    **_percentiles([o.latency for o in chunk if o.kind == "good" and o.latency is not None]),
                }
            )
    lateness = [x for r in results for x in r.loop.lateness]
    reasons = [f"{r.stream} ({r.phase}): {r.loop.reason}" for r in results if not r.loop.valid]
    return {
        "scenario": name,
        "target": target,
        "started_at": started_at,
        "duration_s": round(duration, 3),
        "valid": not reasons,
        "invalid_reason": "; ".join(reasons) or None,
        "lateness_ms": {
            "p50": _ms(nearest_rank(lateness, 50)),
            "p99": _ms(nearest_rank(lateness, 99)),
            "max": _ms(max(lateness)) if lateness else None,
        },
        "dropped": sum(len(r.loop.dropped) for r in results),
        "phases": [
            {
                "phase": r.phase,
                "stream": r.stream,
                "start_s": round(r.loop.start - start, 3),
                "duration_s": r.loop.schedule.duration,
                "scheduled": r.loop.statistics.scheduled,
                "endpoints": _phase_endpoints(spec, r),
            }
            for r in sorted(results, key=lambda r: r.loop.start)
        ],
        "notes": list(notes),
        "endpoints": endpoints,
        "timeline": sorted(timeline, key=lambda row: (row["t"], row["endpoint"])),
        "series": series,
    }


def _phase_endpoints(spec: LoadTestFile, result: _Result) -> dict[str, Any]:
    """One stream's run in one phase, per endpoint: counts, goodput and percentiles (the isolation
    verdict compares the phases)."""
    by_endpoint: dict[str, list[Outcome]] = defaultdict(list)
    for _, outcome in result.outcomes:
        by_endpoint[outcome.endpoint].append(outcome)
    return {
        endpoint: {
            **_counts(outcomes),
            "goodput": _goodput(outcomes, _slo_seconds(spec, endpoint)),
            **_percentiles([o.latency for o in outcomes if o.kind == "good" and o.latency is not None]),
        }
        for endpoint, outcomes in sorted(by_endpoint.items())
    }


def _tally(values: Any) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for value in values:
        out[value] += 1
    return out


def exit_status(summary: Mapping[str, Any]) -> int:
    """3 the run is not valid (lateness, drops), 1 a threshold failed, else 0."""
    if not summary["valid"]:
        return 3
    failed = any(v != "pass" for e in summary["endpoints"].values() for v in e["verdicts"].values())
    return 1 if failed else 0


def write_summary(summary: Mapping[str, Any], out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "summary.json"
    path.write_text(json.dumps(summary, indent=1) + "\n")
    return path


def default_out_dir(scenario: str, now: float | None = None) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(now))
    return Path(".data") / "loadtest" / f"{scenario}-{stamp}"


def render_summary(summary: Mapping[str, Any]) -> str:
    """A few lines: validity, then one line per endpoint with its counts, percentiles and verdicts."""

    def ms(value: float | None) -> str:
        return "—" if value is None else f"{value:.0f}ms"

    lines = [
        f"floodgate loadtest {summary['scenario']} against {summary['target']}: "
        f"{summary['duration_s']:.1f}s, "
        + ("valid" if summary["valid"] else f"NOT VALID ({summary['invalid_reason']})"),
        f"  lateness p99 {ms(summary['lateness_ms']['p99'])}, max {ms(summary['lateness_ms']['max'])}; "
        f"dropped {summary['dropped']}",
    ]
    for endpoint, e in summary["endpoints"].items():
        verdicts = ", ".join(f"{k} {v}" for k, v in e["verdicts"].items()) or "no threshold"
        lines.append(
            f"  {endpoint}: offered {e['offered']}, good {e['good']}, rejected {e['rejected']}, "
            f"errors {e['errors']}, degraded {e['degraded']}; p50 {ms(e['p50_ms'])} p95 {ms(e['p95_ms'])} "
            f"p99 {ms(e['p99_ms'])}; {verdicts}"
        )
        if "jobs" in e:
            j = e["jobs"]
            lines.append(
                f"    jobs followed {j['followed']}, finished {j['finished']}; submit-to-finish "
                f"p50 {ms(j['p50_ms'])} p99 {ms(j['p99_ms'])}"
            )
    for note in summary.get("notes", []):
        lines.append(f"  note: {note}")
    return "\n".join(lines)

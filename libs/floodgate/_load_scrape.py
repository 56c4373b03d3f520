"""Scraping during a load test: every service's ``/metrics`` and Envoy's statistics, once a second,
kept as the time series the report draws, without ever holding up the generator.

Reading and parsing a text exposition is CPU work (Envoy's alone holds thousands of samples). On the
event loop that starts the requests it starts them late, and the run measures its own scraping; on a
thread of the same process it still does, through the GIL and the garbage collector, whenever the
machine is short of CPU. So a `Scraper` runs in a child process of its own (``python -m
floodgate._load_scrape``, at a lower CPU priority) that writes each round to a file, and the run
reads the file once, at the end. Each round drops, before parsing, every line the series do not keep (the parse is the cost).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
from anyio.abc import Process

from ._top import Target, parse_samples, sample_name

__all__ = [
    "ENVOY_SERIES",
    "SERIES_PREFIXES",
    "ScrapeRound",
    "Scraper",
    "ScraperError",
    "kept_lines",
    "kept_sample",
    "scrape_round",
]

#: the scraped samples kept in the summary's ``series`` (the report's figures), by name prefix; histograms
#: by their ``_sum`` and ``_count`` (no buckets)
SERIES_PREFIXES = (
    "floodgate_",
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "ingest_",
    "http_requests_total",
    "http_request_duration_seconds_sum",
    "http_request_duration_seconds_count",
    "ratelimit_",
)
#: Envoy's statistics kept (it exposes hundreds): requests by class, in flight, queued, timed out
ENVOY_SERIES = frozenset(
    {
        "envoy_cluster_upstream_rq_xx",
        "envoy_cluster_upstream_rq_total",
        "envoy_cluster_upstream_rq_active",
        "envoy_cluster_upstream_rq_pending_active",
        "envoy_cluster_upstream_rq_pending_overflow",
        "envoy_cluster_upstream_rq_timeout",
        "envoy_cluster_upstream_rq_time_sum",
        "envoy_cluster_upstream_rq_time_count",
        "envoy_http_downstream_rq_xx",
        "envoy_http_downstream_rq_total",
        "envoy_http_downstream_rq_active",
    }
)


class ScraperError(RuntimeError):
    """The scraper's child process did not start (it names why)."""


def kept_sample(name: str) -> bool:
    """Whether the series keep samples named ``name`` (as the text names them)."""
    if name.endswith(("_bucket", "_created")):
        return False
    return name in ENVOY_SERIES or name.startswith(SERIES_PREFIXES)


def kept_lines(text: str) -> str:
    """The exposition's sample lines the series keep, comments dropped.

    Parsing what is left gives each kept sample under the name the text gives it (`parse_samples`
    keeps the text's names, with or without a ``# TYPE`` line), and parses less."""
    return "\n".join(
        line for line in text.splitlines() if line[:1] not in ("#", "") and kept_sample(sample_name(line))
    )


@dataclass(frozen=True)
class ScrapeRound:
    """One read of every target at ``t`` seconds from the scraper's start: the kept samples as
    ``(job, instance, name, labels, value)``, and each target that could not be read, with why."""

    t: float
    samples: tuple[tuple[str, str, str, dict[str, str], float], ...]
    failures: dict[str, str]

    def to_json(self) -> str:
        return json.dumps({"t": self.t, "samples": self.samples, "failures": self.failures})

    @classmethod
    def from_json(cls, line: str) -> ScrapeRound:
        data = json.loads(line)
        return cls(data["t"], tuple(tuple(s) for s in data["samples"]), data["failures"])


def scrape_round(client: httpx.Client, targets: Sequence[Target], t: float) -> ScrapeRound:
    """Read every target once, one after the other (blocking); never raises for a target."""
    samples = []
    failures = {}
    for target in targets:
        try:
            response = client.get(target.url)
            response.raise_for_status()
            parsed = parse_samples(kept_lines(response.text))
        except (httpx.HTTPError, ValueError) as exc:
            failures[target.instance] = f"{type(exc).__name__}: {exc}"[:120]
            continue
        for name, values in parsed.items():
            samples += [(target.job, target.instance, name, dict(labels), value) for labels, value in values]
    return ScrapeRound(t, tuple(samples), failures)


def _read_rounds(text: str) -> list[ScrapeRound]:
    """The rounds the child wrote; a line cut short (the child killed while writing it) is left out."""
    rounds = []
    for line in text.splitlines():
        try:
            rounds.append(ScrapeRound.from_json(line))
        except (ValueError, KeyError, TypeError):
            continue
    return rounds


# -- the child process ---------------------------------------------------------------------------------


def _serve(targets: Sequence[Target], out: Path, *, interval: float, timeout: float) -> None:
    """Scrape every ``interval`` seconds from now until stdin closes, a round per line of ``out``.
    Prints ``ready`` once the clock has started: the parent's run starts on it."""
    closed = threading.Event()

    def watch_stdin() -> None:
        sys.stdin.buffer.read()  # returns at EOF: the parent closed the pipe, or died
        closed.set()

    threading.Thread(target=watch_stdin, daemon=True).start()
    with httpx.Client(timeout=timeout) as client, out.open("a") as rows:
        start = time.monotonic()
        print("ready", flush=True)
        tick = 0
        while not closed.is_set():
            rows.write(scrape_round(client, targets, round(tick * interval, 3)).to_json() + "\n")
            rows.flush()
            # the next tick not yet passed: a round that overran skips ticks rather than bunching
            tick = max(tick + 1, math.ceil((time.monotonic() - start) / interval))
            closed.wait(max(0.0, start + tick * interval - time.monotonic()))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m floodgate._load_scrape", description=__doc__)
    parser.add_argument("--out", required=True, type=Path, help="the rounds, one JSON line each")
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--timeout", type=float, default=2.0)
    parser.add_argument("targets", help="JSON: [[job, instance, url], ...]")
    args = parser.parse_args(argv)
    targets = [Target(job, instance, url) for job, instance, url in json.loads(args.targets)]
    # Below the generator's priority: on a machine short of CPU, a round's parse waits, not a request.
    with contextlib.suppress(AttributeError, OSError):  # os.nice: Unix only
        os.nice(10)
    _serve(targets, args.out, interval=args.interval, timeout=args.timeout)
    return 0


# -- the run's side ------------------------------------------------------------------------------------


class Scraper:
    """Scrapes ``targets`` every ``interval`` seconds from `start` to `stop`, in a child process.

    `start` returns once the child's clock has started (the run's start is then): the rounds' ``t``
    are offsets from it. `stop` closes the child's stdin, waits for its round in progress (a few
    ``timeout`` at worst), and reads what it wrote; `series` and `failures` are the summary's
    ``series`` rows and notes. Each target read gets ``timeout`` seconds; a round that overruns its
    interval skips the ticks it missed. While it runs, nothing of it happens on the caller's loop."""

    def __init__(self, targets: Sequence[Target], *, interval: float = 1.0, timeout: float = 2.0) -> None:
        if interval <= 0 or not math.isfinite(interval):
            raise ValueError(f"interval must be > 0 seconds, got {interval!r}")
        self.targets = tuple(targets)
        self.interval = interval
        self.timeout = timeout
        self.rounds: list[ScrapeRound] = []
        self._process: Process | None = None
        self._dir: Path | None = None

    def __repr__(self) -> str:
        state = "running" if self._process is not None else f"{len(self.rounds)} round(s)"
        return f"<Scraper {len(self.targets)} target(s) every {self.interval:g}s {state}>"

    async def start(self, *, within: float = 30.0) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="floodgate-scrape-"))
        command = [
            sys.executable,
            "-m",
            "floodgate._load_scrape",
            "--out",
            str(self._dir / "rounds.jsonl"),
            "--interval",
            f"{self.interval!r}",
            "--timeout",
            f"{self.timeout!r}",
            json.dumps([[t.job, t.instance, t.url] for t in self.targets]),
        ]
        self._process = await anyio.open_process(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert self._process.stdout is not None
        said = b""
        with anyio.move_on_after(within):
            while b"\n" not in said:
                try:
                    said += await self._process.stdout.receive()
                except anyio.EndOfStream:
                    break
        if not said.startswith(b"ready"):
            await self.stop()
            raise ScraperError(f"the scraper process did not start within {within:g}s ({said[:200]!r})")

    async def stop(self, *, within: float = 10.0) -> None:
        """Idempotent; shielded from cancellation (a Ctrl-C still stops the child)."""
        process, self._process = self._process, None
        with anyio.CancelScope(shield=True):
            if process is not None:
                assert process.stdin is not None
                await process.stdin.aclose()
                with anyio.move_on_after(within):
                    await process.wait()
                if process.returncode is None:
                    process.kill()
                    await process.wait()
                await process.aclose()
        if self._dir is not None:
            path = self._dir / "rounds.jsonl"
            if path.exists():
                self.rounds = _read_rounds(path.read_text())
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    @property
    def failures(self) -> dict[str, str]:
        """Each target's last read error (by instance)."""
        out: dict[str, str] = {}
        for scraped in self.rounds:
            out.update(scraped.failures)
        return out

    def series(self) -> list[dict[str, Any]]:
        """The summary's ``series`` rows: ``t``, ``job``, ``instance``, ``name``, ``labels``, ``value``."""
        return [
            {"t": r.t, "job": job, "instance": instance, "name": name, "labels": labels, "value": value}
            for r in self.rounds
            for job, instance, name, labels, value in r.samples
        ]


if __name__ == "__main__":
    sys.exit(main())

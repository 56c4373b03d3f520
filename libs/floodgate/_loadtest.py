"""The ``floodgate loadtest`` command. What exists: ``--validate`` checks the scenario file
(floodgate/_load_scenario.py) and lists its scenarios; ``SCENARIO --dry-run`` prints each phase's
streams as the open-loop scheduler (floodgate/_load_schedule.py) would offer them. Running a scenario
against a deployment, scraping and the report are not built yet (docs/loadtest.md).
"""

from __future__ import annotations

import argparse
from typing import TextIO

from ._load_scenario import LoadTestFile, ScenarioError, load_scenarios, summarize

__all__ = ["add_parser", "command"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    load = sub.add_parser(
        "loadtest",
        help="check the load-test scenario file; --dry-run prints what a scenario would offer",
        description="Open-model load tests from a scenario file (docs/loadtest.md). Running a scenario "
        "against a deployment is not built yet: --validate checks the file, --dry-run prints a scenario's "
        "phases and streams.",
    )
    load.add_argument("scenario", nargs="?", help="the scenario to dry-run (see --validate for the list)")
    load.add_argument("--file", default="config/loadtest.toml", help="scenario file (default: %(default)s)")
    what = load.add_mutually_exclusive_group(required=True)
    what.add_argument("--validate", action="store_true", help="check the file and list its scenarios")
    what.add_argument(
        "--dry-run", action="store_true", help="print the scenario's phases and streams, send nothing"
    )


def command(args: argparse.Namespace, *, out: TextIO, err: TextIO) -> int:
    """Exit status: 0 fine, 2 an invalid file, an unknown scenario or a missing argument."""
    try:
        spec = load_scenarios(args.file)
    except ScenarioError as exc:
        print(f"floodgate loadtest: {exc}", file=err)
        return 2
    if args.validate:
        print(f"{args.file}: valid, {len(spec.scenarios)} scenarios", file=out)
        for name, scenario in spec.scenarios.items():
            kind = f"{len(scenario.phases)} phase(s)" if scenario.phases else scenario.schedule().describe()
            print(f"  {name}: {kind}; {scenario.description}".rstrip("; "), file=out)
        return 0
    if args.scenario is None:
        print("floodgate loadtest: --dry-run needs a SCENARIO", file=err)
        return 2
    if args.scenario not in spec.scenarios:
        print(
            f"floodgate loadtest: unknown scenario {args.scenario!r} (known: {', '.join(spec.scenarios)})",
            file=err,
        )
        return 2
    render_dry_run(spec, args.scenario, source=args.file, out=out)
    return 0


def _mix(weights: dict[str, float]) -> str:
    return ", ".join(f"{name} {weight:g}" for name, weight in weights.items())


def render_dry_run(spec: LoadTestFile, name: str, *, source: str, out: TextIO) -> None:
    from .cli import _table  # the command's table layout (cli imports this module)

    phases = summarize(spec, name)
    total = sum(max(s.duration for s in streams) for _, streams in phases)
    print(f"floodgate loadtest {name} (dry run, {source}): {len(phases)} phase(s), {total:g}s", file=out)
    for phase, streams in phases:
        print(file=out)
        print(f"phase {phase} ({max(s.duration for s in streams):g}s)", file=out)
        _table(
            ["stream", "schedule", "requests", "peak", "max_in_flight", "templates", "tenants"],
            [
                [
                    s.name,
                    s.schedule,
                    f"{s.expected_requests:.0f}",
                    f"{s.peak_rate:g}/s",
                    str(s.max_in_flight),
                    _mix(s.requests),
                    _mix(s.tenants),
                ]
                for s in streams
            ],
            out,
        )
    v = spec.validity
    late = f", every request <= {v.max_late_ms:g}ms late" if v.max_late_ms > 0 else ""
    print(file=out)
    print(
        f"valid when: p99 lateness <= {v.max_late_p99_ms:g}ms{late}, dropped <= {v.max_dropped_fraction:.1%}",
        file=out,
    )
    used = {t for _, streams in phases for s in streams for t in s.requests}
    for template, threshold in spec.thresholds.items():
        if template in used:
            limits = [f"{k.removesuffix('_ms')} <= {x:g}ms" for k, x in threshold if x is not None]
            print(f"threshold {template}: {', '.join(limits)}", file=out)

"""The ``floodgate loadtest`` command. ``--validate`` checks the scenario file
(floodgate/_load_scenario.py) and lists its scenarios; ``SCENARIO --dry-run`` prints each phase's
streams as the open-loop scheduler (floodgate/_load_schedule.py) would offer them; ``SCENARIO`` runs
it against a deployment (floodgate/_load_run.py), writes ``summary.json`` (and the HTML report when
floodgate/_load_report.py is there) and exits 0 (valid, every threshold met), 1 (a threshold failed)
or 3 (the run is not valid: the generator fell behind or dropped requests). With ``--plan`` (a
saved ``floodgate plan --format json``) the run's knees are compared with the plan's capacities:
the summary's ``budget`` section and the report's budget truth (floodgate/_load_verdict.py).
docs/loadtest.md.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from ._load_scenario import LoadTestFile, ScenarioError, load_scenarios, summarize

if TYPE_CHECKING:
    from ._load_verdict import Prediction

__all__ = ["PlanFileError", "add_parser", "command", "read_plan"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    load = sub.add_parser(
        "loadtest",
        help="run a load-test scenario against a deployment (--validate, --dry-run: check, print)",
        description="Open-model load tests from a scenario file (docs/loadtest.md): SCENARIO runs it "
        "against --target and writes summary.json under --out; --validate checks the file, --dry-run "
        "prints a scenario's phases and streams. Exit 0 valid and every threshold met, 1 a threshold "
        "failed, 2 a bad file or argument, 3 the run is not valid (lateness, drops).",
    )
    load.add_argument("scenario", nargs="?", help="the scenario to run (see --validate for the list)")
    load.add_argument("--file", default="config/loadtest.toml", help="scenario file (default: %(default)s)")
    load.add_argument(
        "--target", default="http://127.0.0.1:8080", help="the gateway's URL (default: %(default)s)"
    )
    load.add_argument(
        "--keys",
        default=None,
        help="API keys per tenant, in config/api_keys.sample.yaml's format (default: what `make up` "
        "reads: $FLOODGATE_API_KEYS_FILE, config/api_keys.yaml, else the sample)",
    )
    load.add_argument(
        "--out", default=None, help="output folder (default: .data/loadtest/SCENARIO-TIMESTAMP)"
    )
    load.add_argument(
        "--state",
        default=None,
        help="the cluster state file naming the services to scrape (default: $FLOODGATE_DATA_DIR/cluster.json)",
    )
    load.add_argument(
        "--seed", type=int, default=1, help="the requests' random choices (default: %(default)s)"
    )
    load.add_argument(
        "--plan",
        default=None,
        help="`floodgate plan --format json` output to compare the run's knees with (capacity "
        "scenarios): the report's budget truth, predicted vs measured",
    )
    what = load.add_mutually_exclusive_group()
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
        print("floodgate loadtest: a run or --dry-run needs a SCENARIO (or give --validate)", file=err)
        return 2
    if args.scenario not in spec.scenarios:
        print(
            f"floodgate loadtest: unknown scenario {args.scenario!r} (known: {', '.join(spec.scenarios)})",
            file=err,
        )
        return 2
    if args.dry_run:
        render_dry_run(spec, args.scenario, source=args.file, out=out)
        return 0
    return run_command(spec, args, out=out, err=err)


def run_command(spec: LoadTestFile, args: argparse.Namespace, *, out: TextIO, err: TextIO) -> int:
    """Run the scenario, write summary.json (and the report), print the summary; the exit status."""
    import json

    import anyio

    from ._load_run import (
        ApiKeysFileError,
        default_keys_file,
        default_out_dir,
        exit_status,
        load_api_keys,
        render_summary,
        run_scenario,
        write_summary,
    )
    from ._load_scrape import Scraper, ScraperError
    from ._top import default_state_path, targets_from_state

    keys_file = Path(args.keys) if args.keys else default_keys_file()
    try:
        keys = load_api_keys(keys_file)
    except ApiKeysFileError as exc:
        print(f"floodgate loadtest: {exc}", file=err)
        return 2
    predictions = None
    if args.plan:
        try:
            predictions = read_plan(Path(args.plan))
        except PlanFileError as exc:
            print(f"floodgate loadtest: {exc}", file=err)
            return 2
    state = Path(args.state) if args.state else default_state_path()
    notes: list[str] = []
    try:
        targets = targets_from_state(json.loads(state.read_text()))
    except (OSError, ValueError):
        targets = []
    if not targets:
        notes.append(f"no cluster state at {state}: no service scraped (series empty)")
    load_before = _load_average()
    backend = "asyncio"
    try:
        import trio  # noqa: F401

        backend = "trio"
    except ImportError:
        pass
    out_dir = Path(args.out) if args.out else default_out_dir(args.scenario)
    print(
        f"floodgate loadtest {args.scenario}: against {args.target}, keys {keys_file}, "
        f"{len(targets)} scrape target(s), writing {out_dir}",
        file=out,
        flush=True,
    )
    try:
        summary = anyio.run(
            lambda: run_scenario(
                spec,
                args.scenario,
                target=args.target,
                keys=keys,
                scraper=Scraper(targets) if targets else None,
                seed=args.seed,
                notes=notes,
                on_phase=lambda phase, seconds: print(f"  phase {phase}: {seconds:g}s", file=out, flush=True),
            ),
            backend=backend,
        )
    except ApiKeysFileError as exc:
        print(f"floodgate loadtest: {keys_file}: {exc}", file=err)
        return 2
    except ScraperError as exc:
        print(f"floodgate loadtest: {exc}", file=err)
        return 2
    except KeyboardInterrupt:
        print("floodgate loadtest: interrupted; no summary written", file=err)
        return 130
    if not summary["valid"] and (note := busy_machine_note(load_before, _load_average(), os.cpu_count())):
        summary["notes"].append(note)
    if predictions is not None:
        from ._load_verdict import SETTLE, budget_section, render_budget

        summary["budget"] = budget_section(
            summary, spec, predictions, inputs={"plan": str(args.plan)}, settle=SETTLE
        )
    path = write_summary(summary, out_dir)
    print(render_summary(summary), file=out)
    if predictions is not None:
        print(render_budget(summary["budget"]), file=out)
    print(f"summary: {path}", file=out)
    try:
        from ._load_report import write_report
    except ImportError:
        pass
    else:
        print(f"report: {write_report(summary, out_dir)}", file=out)
    return exit_status(summary)


class PlanFileError(ValueError):
    """The ``--plan`` file cannot be read or is not `floodgate plan --format json` output."""


def read_plan(path: Path) -> dict[str, Prediction]:
    """The predictions of a saved ``floodgate plan --format json`` (`predictions_from_json`)."""
    import json

    from ._load_verdict import predictions_from_json

    try:
        document = json.loads(path.read_text())
    except OSError as exc:
        raise PlanFileError(f"--plan {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise PlanFileError(f"--plan {path}: not JSON ({exc})") from None
    try:
        return predictions_from_json(document)
    except (KeyError, TypeError, AttributeError) as exc:
        raise PlanFileError(f"--plan {path}: not `floodgate plan --format json` output (no {exc})") from None


def _load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):  # not on every platform
        return None


def busy_machine_note(before: float | None, after: float | None, cores: int | None) -> str | None:
    """For a run that is not valid: when the machine had more runnable work than cores (its 1-minute
    load average at the start or the end above the core count), the generator waited for the CPU like
    every other process, and that, not its own work, is the likely cause."""
    if before is None or after is None or not cores or max(before, after) <= cores:
        return None
    return (
        f"the machine was busy: load average {before:.1f} at the start, {after:.1f} at the end, on "
        f"{cores} cores; the generator waited for the CPU (run it where it has a core to itself)"
    )


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

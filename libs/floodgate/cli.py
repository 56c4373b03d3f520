"""The ``floodgate`` command: ``floodgate plan`` prints what the budget file implies; ``floodgate top``
shows a running deployment live (floodgate/_top.py); ``floodgate dashboard`` writes the budget's
Grafana dashboard (floodgate/_dashboard.py); ``floodgate loadtest`` checks the load-test scenario file
and prints what a scenario would offer (floodgate/_load_scenario.py; running it is not built yet).

::

    floodgate plan                                  # config/budget.toml, typical latencies
    floodgate plan --budget prod.toml --latency llm=1.2s --latency search=150ms
    floodgate plan --json                           # the same, machine-readable
    floodgate plan --strict                         # exit 1 when there are warnings (for CI)
    floodgate plan --check                          # exit 1 when a target QPS exceeds the capacity
    floodgate plan --latency-from http://localhost:8081/metrics --doc-chunks 50
    floodgate plan --format markdown > design.md    # the design document
    floodgate top                                   # the running local cluster, refreshed each second
    floodgate top --once --target online=http://10.0.0.5:8081
    floodgate dashboard --route deal_brain=/v1/deal-brain/answers ... -o floodgate.json
    floodgate loadtest --validate                   # config/loadtest.toml: lists its scenarios
    floodgate loadtest capacity --dry-run           # each phase's streams: rate, duration, requests

Exit status: 0 fine, 1 warnings with ``--strict`` or a target out of reach with ``--check``, 2 invalid
budget or arguments.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from . import _loadtest
from ._budget import Budget, BudgetError, load_budget
from ._membership_live import LiveRow, live_division, read_live, render_live
from ._plan import Plan, make_plan

__all__ = ["main"]


def _seconds(text: str) -> float:
    text = text.strip().lower()
    if text.endswith("ms"):
        return float(text[:-2]) / 1000.0
    return float(text.removesuffix("s"))


def _latency(arg: str) -> tuple[str, float]:
    name, sep, value = arg.partition("=")
    try:
        if not sep or not name:
            raise ValueError
        seconds = _seconds(value)
        if seconds <= 0:
            raise ValueError
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected DEPENDENCY=LATENCY like llm=1.5s or search=150ms, got {arg!r}"
        ) from None
    return name, seconds


def _cpu_ms(arg: str) -> tuple[str, float]:
    name, sep, value = arg.partition("=")
    try:
        if not sep or not name:
            raise ValueError
        ms = float(value.strip().lower().removesuffix("ms"))
        if not ms > 0:
            raise ValueError
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected NAME=MS like deal_brain=7.5 or ingestion=1.2ms, got {arg!r}"
        ) from None
    return name, ms


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], out: TextIO) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    print(line.rstrip(), file=out)
    print("  ".join("-" * w for w in widths), file=out)
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip(), file=out)


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:g}ms" if seconds < 1 else f"{seconds:g}s"


def render_plan(plan: Plan, *, source: str, out: TextIO) -> None:
    print(f"floodgate plan for {source}", file=out)
    print(
        f"database: max_connections {plan.database_max_connections} - reserve {plan.database_reserve} "
        f"= {plan.database_available} usable",
        file=out,
    )
    print(file=out)
    print(
        "Per-process limits: limit = floor(global x share / processes); "
        "throughput by Little's law = limit / latency",
        file=out,
    )
    rows = []
    for r in plan.dependencies:
        rate = "-" if r.rate_limit_rps_total is None else f"{r.rate_limit_rps_total:.1f}/s"
        rows.append(
            [
                r.service,
                r.dependency,
                r.kind,
                str(r.global_limit),
                f"{r.share:g}",
                str(r.processes),
                f"{r.exact:.2f}",
                str(r.limit),
                str(r.max_waiters),
                _ms(r.max_wait),
                _ms(r.latency),
                f"{r.rps_per_process:.1f}/s",
                f"{r.rps_total:.1f}/s",
                rate,
                r.binding,
            ]
        )
    _table(
        [
            "service",
            "dependency",
            "kind",
            "global",
            "share",
            "procs",
            "exact",
            "limit",
            "waiters",
            "max_wait",
            "latency",
            "per proc",
            "total",
            "rpm cap",
            "binds",
        ],
        rows,
        out,
    )
    print(file=out)
    pools = " + ".join(f"{dep}.{svc} {n}" for dep, svc, n in plan.database_pools) or "none"
    print(
        f"Database pools (all processes): {pools} = {plan.database_used} of {plan.database_available} usable",
        file=out,
    )
    _render_capacity(plan, out)
    if plan.endpoints:
        print(file=out)
        print("Endpoints", file=out)
        _table(
            ["endpoint", "deadline", "fan_out", "slo p95/p99", "required", "degradable (fallback)"],
            [
                [
                    e.endpoint,
                    _ms(e.deadline),
                    str(e.fan_out),
                    f"{e.slo_p95_ms:g}/{e.slo_p99_ms:g}ms",
                    ", ".join(e.required) or "-",
                    ", ".join(f"{d}->{f}" for d, f in e.degradable) or "-",
                ]
                for e in plan.endpoints
            ],
            out,
        )
    print(file=out)
    if plan.warnings:
        print(f"Warnings ({len(plan.warnings)}):", file=out)
        for warning in plan.warnings:
            print(f"  - {warning}", file=out)
    else:
        print("No warnings.", file=out)


def _render_capacity(plan: Plan, out: TextIO) -> None:
    if plan.capacities:
        print(file=out)
        print(
            "Capacity per endpoint (all processes, the endpoint alone): min over its limits of "
            "limit x procs / (calls x latency), and CPU cores x 1000 / cpu_ms",
            file=out,
        )
        _table(
            ["endpoint", "capacity", "bottleneck", "latency", "target", "peak", "verdict", "limits"],
            [
                [
                    c.endpoint,
                    f"{c.rps:.1f}/s",
                    c.bottleneck,
                    _ms(round(c.latency, 6)),
                    "-" if c.target_qps is None else f"{c.target_qps:g}/s",
                    "-" if c.peak_qps is None else f"{c.peak_qps:g}/s",
                    "ok" if c.meets_target and c.meets_peak else ("peak shed" if c.meets_target else "SHORT"),
                    ", ".join(f"{lim.name} {lim.rate:.1f}" for lim in sorted(c.limits, key=lambda x: x.rate)),
                ]
                for c in plan.capacities
            ],
            out,
        )
    ing = plan.ingestion
    if ing is not None:
        print(file=out)
        target = ing.target_documents_per_second
        print(
            f"Ingestion ({ing.service}, {ing.doc_chunks} chunks a document, {ing.batches} embed batches): "
            f"{ing.documents_per_second:.1f} documents/s, {ing.chunks_per_second:.1f} chunks/s, "
            f"bottleneck {ing.bottleneck}, {_ms(round(ing.latency, 6))} a document"
            + ("" if target is None else f" (target {target:g}/s: {'ok' if ing.meets_target else 'SHORT'})"),
            file=out,
        )
        for lim in sorted(ing.limits, key=lambda x: x.rate):
            print(f"  {lim.name:<12} {lim.rate:8.1f} documents/s  {lim.detail}", file=out)


def _plan_json(plan: Plan) -> dict:
    data = dataclasses.asdict(plan)
    for row, raw in zip(data["dependencies"], plan.dependencies, strict=True):
        row["binding"] = raw.binding
    data["database_used"] = plan.database_used
    for row, cap in zip(data["capacities"], plan.capacities, strict=True):
        row.update(rps=cap.rps, bottleneck=cap.bottleneck, meets_target=cap.meets_target)
    if plan.ingestion is not None:
        ing = plan.ingestion
        data["ingestion"].update(
            documents_per_second=ing.documents_per_second,
            chunks_per_second=ing.chunks_per_second,
            bottleneck=ing.bottleneck,
            meets_target=ing.meets_target,
        )
    data["shortfalls"] = list(plan.shortfalls)
    return data


def _add_top(sub: argparse._SubParsersAction) -> None:
    top = sub.add_parser(
        "top",
        help="live view of a running cluster from its /metrics (Ctrl-C stops; --once prints one snapshot)",
        description="Reads every service's /metrics and Envoy's /stats/prometheus each --interval and shows "
        "endpoints, dependencies, pools, the queue and each process. Targets: the cluster's state file "
        "(--state), or --target URLs.",
    )
    top.add_argument(
        "--state",
        type=Path,
        default=None,
        help="the local cluster's state file (default: $FLOODGATE_DATA_DIR/cluster.json, else .data/cluster.json)",
    )
    top.add_argument(
        "--target",
        action="append",
        default=[],
        metavar="[JOB=]URL",
        help="a service's base URL or metrics URL, instead of the state file (repeatable)",
    )
    top.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes (default: 1)")
    top.add_argument(
        "--once",
        action="store_true",
        help="print one snapshot and exit: two scrapes --interval apart, so rates are real",
    )


def _cmd_top(args: argparse.Namespace, *, out: TextIO, err: TextIO) -> int:
    from . import _top

    try:
        if args.interval <= 0:
            raise _top.TopError("--interval must be above 0")
        targets = (
            _top.targets_from_urls(args.target)
            if args.target
            else _top.read_state_targets(args.state or _top.default_state_path())
        )
    except _top.TopError as exc:
        print(f"floodgate top: {exc}", file=err)
        return 2
    return _top.run_top(targets, once=args.once, interval=args.interval, out=out)


def _route(arg: str) -> tuple[str, str]:
    """``ENDPOINT=[METHOD ]ROUTE`` (``floodgate alerts`` and ``floodgate dashboard``)."""
    name, sep, route = arg.partition("=")
    if not sep or not name or not route.strip().rpartition(" ")[2].startswith("/"):
        raise argparse.ArgumentTypeError(
            f"expected ENDPOINT=[METHOD ]ROUTE like deal_brain=/v1/deal-brain/answers or "
            f"omnirag_submit='POST /v1/omnirag/jobs', got {arg!r}"
        )
    return name, route.strip()


def _add_alerts(sub: argparse._SubParsersAction) -> None:
    alerts = sub.add_parser(
        "alerts",
        help="Prometheus alerting rules (YAML) whose thresholds are the budget's",
        description="Prints the symptom alerts and the multi-window SLO burn-rate alerts for the budget "
        "file: SLO latencies, max_wait, pool sizes and [cost] limits are its numbers. Each endpoint "
        "needs the route its requests are counted under (--route).",
    )
    alerts.add_argument("--budget", default="config/budget.toml", help="budget file (default: %(default)s)")
    alerts.add_argument(
        "--route",
        action="append",
        type=_route,
        default=[],
        metavar="ENDPOINT=[METHOD ]ROUTE",
        help="the route label of an endpoint's requests, e.g. deal_brain=/v1/deal-brain/answers, with the "
        "method when the route serves others too: 'omnirag_submit=POST /v1/omnirag/jobs' (one per endpoint)",
    )
    alerts.add_argument(
        "--runbook-base",
        default="docs/runbooks",
        help="prefix of each runbook_url, e.g. a URL to the docs (default: %(default)s)",
    )
    alerts.add_argument(
        "--max-job-age",
        type=float,
        default=600.0,
        help="seconds the oldest runnable job may wait before FloodgateOldestJobTooOld (default: %(default)g)",
    )


def _alerts(args: argparse.Namespace, *, out: TextIO, err: TextIO) -> int:
    from ._alerts import alert_rules, rules_yaml

    try:
        budget = load_budget(args.budget)
        rules = alert_rules(
            budget, routes=dict(args.route), runbook_base=args.runbook_base, max_job_age=args.max_job_age
        )
    except (BudgetError, LookupError) as exc:
        print(f"floodgate alerts: {exc}", file=err)
        return 2
    out.write(rules_yaml(rules, header=[f"Generated by `floodgate alerts` from {args.budget}: do not edit."]))
    return 0


def _add_dashboard(sub: argparse._SubParsersAction) -> None:
    board = sub.add_parser(
        "dashboard",
        help="write the Grafana dashboard of the budget: a row per endpoint and per dependency",
    )
    board.add_argument("--budget", default="config/budget.toml", help="budget file (default: %(default)s)")
    board.add_argument(
        "--route",
        action="append",
        type=_route,
        default=[],
        metavar="ENDPOINT=[METHOD ]ROUTE",
        help="the route label of an endpoint's requests (one for every endpoint of the budget)",
    )
    board.add_argument("-o", "--output", type=Path, help="write to this file instead of standard output")
    what = board.add_mutually_exclusive_group()
    what.add_argument(
        "--exprs", action="store_true", help="print the dashboard's PromQL expressions, one a line"
    )
    what.add_argument(
        "--rules", action="store_true", help="print a recording-rule file of them (for promtool check rules)"
    )


def _cmd_dashboard(args: argparse.Namespace, *, out: TextIO, err: TextIO) -> int:
    from . import _dashboard

    try:
        board = _dashboard.build_dashboard(load_budget(args.budget), routes=dict(args.route))
    except (BudgetError, _dashboard.DashboardError) as exc:
        print(f"floodgate dashboard: {exc}", file=err)
        return 2
    if args.exprs:
        text = "".join(f"{expr}\n" for expr in _dashboard.dashboard_expressions(board))
    elif args.rules:
        text = _dashboard.recording_rules(board)
    else:
        text = _dashboard.render_dashboard(board)
    if args.output is None:
        out.write(text)
    else:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text)
    return 0


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    parser = argparse.ArgumentParser(
        prog="floodgate", description="Concurrency budgets: inspect the budget file."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    plan_cmd = sub.add_parser(
        "plan", help="print derived per-process limits, pool sizes, throughput, warnings"
    )
    plan_cmd.add_argument("--budget", default="config/budget.toml", help="budget file (default: %(default)s)")
    plan_cmd.add_argument(
        "--latency",
        action="append",
        type=_latency,
        default=[],
        metavar="DEP=LATENCY",
        help="assumed latency of one call, e.g. llm=1.2s or search=150ms (repeatable)",
    )
    plan_cmd.add_argument(
        "--latency-from",
        metavar="URL|FILE",
        action="append",
        default=[],
        help="take dependencies' latencies from a Prometheus-format source (a /metrics URL or a file): "
        "the mean of floodgate_downstream_latency_seconds per dependency; repeat it for each process "
        "of a service (their calls pooled); --latency still wins",
    )
    plan_cmd.add_argument(
        "--cpu-ms",
        action="append",
        type=_cpu_ms,
        default=[],
        metavar="NAME=MS",
        help="measured CPU: an endpoint's ms per request (deal_brain=7.5), or ingestion's ms per chunk "
        "(ingestion=1.2), in place of the budget's (repeatable)",
    )
    plan_cmd.add_argument(
        "--endpoint-latency",
        action="append",
        type=_latency,
        default=[],
        metavar="NAME=LATENCY",
        help="measured: an endpoint's mean latency at a low load (deal_brain=1.2s), in place of its critical "
        "path plus CPU, for its expected latency and its door (repeatable)",
    )
    size = plan_cmd.add_mutually_exclusive_group()
    size.add_argument("--doc-chunks", type=int, metavar="N", help="ingestion: chunks per document")
    size.add_argument(
        "--doc-bytes",
        type=int,
        metavar="N",
        help="ingestion: bytes per document ([ingestion] bytes_per_chunk)",
    )
    plan_cmd.add_argument(
        "--format",
        choices=["text", "json", "markdown"],
        default="text",
        help="text (default), json, or markdown: the design document",
    )
    plan_cmd.add_argument(
        "--live",
        metavar="DATABASE_URL",
        help="also show the division in force now: the live processes of each service in the membership "
        "tables there (dynamic shares); a database that does not answer is one line, not an error",
    )
    plan_cmd.add_argument("--json", action="store_true", help="print the plan as JSON (= --format json)")
    plan_cmd.add_argument("--strict", action="store_true", help="exit 1 when the plan has warnings")
    plan_cmd.add_argument(
        "--check", action="store_true", help="exit 1 when a target QPS exceeds the capacity (for CI)"
    )
    _add_top(sub)
    _add_dashboard(sub)
    _add_alerts(sub)
    _loadtest.add_parser(sub)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0) and 2
    if args.command == "top":
        return _cmd_top(args, out=out, err=err)
    if args.command == "dashboard":
        return _cmd_dashboard(args, out=out, err=err)
    if args.command == "alerts":
        return _alerts(args, out=out, err=err)
    if args.command == "loadtest":
        return _loadtest.command(args, out=out, err=err)
    return _cmd_plan(args, out=out, err=err)


def _cmd_plan(args: argparse.Namespace, *, out: TextIO, err: TextIO) -> int:
    from ._design import render_design
    from ._measured import MeasuredLatencyError, read_latencies

    try:
        budget = load_budget(args.budget)
        latencies: dict[str, float] = {}
        if args.latency_from:
            measured = read_latencies(*args.latency_from)
            latencies = {name: t for name, t in measured.items() if name in budget.dependencies}
        latencies.update(args.latency)
        doc_chunks = args.doc_chunks
        if args.doc_bytes is not None:
            if budget.ingestion is None:
                raise LookupError("--doc-bytes needs an [ingestion] table in the budget")
            doc_chunks = max(1, math.ceil(args.doc_bytes / budget.ingestion.bytes_per_chunk))
        if doc_chunks is not None and doc_chunks < 1:
            raise LookupError("--doc-chunks and --doc-bytes must be >= 1")
        plan = make_plan(
            budget,
            latencies,
            doc_chunks=doc_chunks,
            cpu_ms=dict(args.cpu_ms),
            endpoint_latencies=dict(args.endpoint_latency),
        )
    except (BudgetError, LookupError, MeasuredLatencyError) as exc:
        print(f"floodgate plan: {exc}", file=err)
        return 2
    fmt = "json" if args.json else args.format
    live_rows, live_error = _live_rows(budget, args.live)
    if fmt == "json":
        data = _plan_json(plan)
        if args.live:
            data["live"] = [dataclasses.asdict(r) for r in live_rows] if live_error is None else None
        json.dump(data, out, indent=2)
        print(file=out)
    elif fmt == "markdown":
        out.write(render_design(budget, plan, source=args.budget))
    else:
        if args.latency_from:
            measured_text = ", ".join(f"{name}={_ms(round(t, 6))}" for name, t in sorted(latencies.items()))
            sources = ", ".join(args.latency_from)
            print(f"latencies measured at {sources}: {measured_text or 'none'}", file=out)
        render_plan(plan, source=args.budget, out=out)
        if args.live:
            print(file=out)
            if live_error is None:
                render_live(live_rows, out=out)
            else:
                print(f"Live division: not available ({live_error})", file=out)
    if args.check and plan.shortfalls:
        for shortfall in plan.shortfalls:
            print(f"floodgate plan --check: {shortfall}", file=err)
        return 1
    return 1 if args.strict and plan.warnings else 0


def _live_rows(budget: Budget, dsn: str | None) -> tuple[list[LiveRow], str | None]:
    """The live division from the membership tables at ``dsn``, or why it could not be read."""
    if not dsn:
        return [], None
    try:
        return live_division(budget, read_live(dsn)), None
    except Exception as exc:  # unreachable, no tables yet, bad URL: the plan itself still stands
        return [], f"{type(exc).__name__}: {exc}"


if __name__ == "__main__":
    sys.exit(main())

"""floodgate plan's capacity: per endpoint and for ingestion, measured latencies, --check, the design document."""

from __future__ import annotations

import io
import json
import re
import tomllib
from pathlib import Path

import floodgate
import pytest
from floodgate._design import METRICS
from floodgate._measured import mean_latencies
from floodgate._path import PathError, evaluate_path, path_names
from floodgate._plan import DOOR_LOSS, door_ceiling, door_loss, erlang_b, make_plan
from floodgate.cli import main

from .conftest import REPO_BUDGET

METRICS_FILE = Path(__file__).parent / "data" / "downstream_latency.prom"
REPO = REPO_BUDGET.parents[1]


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def repo_data() -> dict:
    return tomllib.loads(REPO_BUDGET.read_text())


def write(tmp_path: Path, *edits: tuple[str, str]) -> str:
    """The repository's budget with each ``(old, new)`` text replaced, as a file."""
    text = REPO_BUDGET.read_text()
    for old, new in edits:
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    path = tmp_path / "budget.toml"
    path.write_text(text)
    return str(path)


def test_endpoint_capacity_is_the_smallest_limit(repo_budget):
    plan = make_plan(repo_budget)
    caps = {c.endpoint: c for c in plan.capacities}
    deal = caps["deal_brain"]
    # llm: 16 slots x 1 process / (1 call x 0.4 s) = 40/s; CPU: 1 core x 1000 / 6 ms
    assert (deal.bottleneck, deal.rps) == ("llm", 40.0)
    rates = {lim.name: lim.rate for lim in deal.limits}
    assert rates["cpu"] == pytest.approx(1000 / 6)
    assert rates["llm (rpm)"] == pytest.approx(100.0)
    # max(embed 20 + db 5, search 150) + rerank 50 + llm 400, + 6 ms of CPU
    assert deal.latency == pytest.approx(0.606)
    hunt = caps["shadow_hunter"]
    assert (hunt.bottleneck, hunt.rps) == ("llm", pytest.approx(16 / (5 * 0.4)))
    submit = caps["omnirag_submit"]
    assert (submit.service, submit.bottleneck, submit.rps) == (
        "ingest_api",
        "cpu",
        pytest.approx(0.5 * 1000 / 2),
    )
    assert submit.peak_qps == 20 * 10  # target x burst_factor when peak_qps is not stated


def test_cpu_becomes_the_bottleneck_when_requests_cost_more():
    data = repo_data()
    data["endpoints"]["deal_brain"]["cpu_ms_per_request"] = 50.0
    plan = make_plan(floodgate.parse_budget(data))
    deal = next(c for c in plan.capacities if c.endpoint == "deal_brain")
    assert (deal.bottleneck, deal.rps) == ("cpu", pytest.approx(20.0))


def test_measured_cpu_replaces_the_budgets(repo_budget):
    plan = make_plan(repo_budget, cpu_ms={"deal_brain": 50.0, "ingestion": 4.0}, doc_chunks=16)
    deal = next(c for c in plan.capacities if c.endpoint == "deal_brain")
    assert (deal.bottleneck, deal.rps) == ("cpu", pytest.approx(20.0))
    assert deal.latency == pytest.approx(0.6 + 0.05)
    assert plan.ingestion is not None
    assert {lim.name: lim.rate for lim in plan.ingestion.limits}["cpu"] == pytest.approx(1000 / 64)
    code, out, _ = run("plan", "--budget", str(REPO_BUDGET), "--cpu-ms", "nexus_assess=200ms", "--json")
    assert code == 0
    nexus = next(c for c in json.loads(out)["capacities"] if c["endpoint"] == "nexus_assess")
    assert nexus["bottleneck"] == "cpu"
    code, _, err = run("plan", "--budget", str(REPO_BUDGET), "--cpu-ms", "nope=3")
    assert code == 2 and "CPU given for unknown endpoints: ['nope']" in err
    assert run("plan", "--budget", str(REPO_BUDGET), "--cpu-ms", "deal_brain=-1")[0] == 2


def test_a_slower_provider_moves_the_capacity(repo_budget):
    deal = next(c for c in make_plan(repo_budget, {"llm": 0.8}).capacities if c.endpoint == "deal_brain")
    assert (deal.bottleneck, deal.rps) == ("llm", 20.0)


def test_ingestion_documents_and_chunks_per_second(repo_budget):
    small = make_plan(repo_budget, doc_chunks=16).ingestion
    assert small is not None and small.batches == 1
    rates = {lim.name: lim.rate for lim in small.limits}
    # fetch: 8 x 2 processes / (1 x 0.3 s); embed: 12 x 2 / (1 batch x 0.02 s); db_write: 10 x 2 / (4 x 0.01 s)
    assert rates["fetch"] == pytest.approx(160 / 3)
    assert rates["embed"] == pytest.approx(1200.0)
    assert rates["db_write"] == pytest.approx(500.0)
    assert rates["cpu"] == pytest.approx(1000 / 16)  # 2 x 0.5 cores, 1 ms per chunk
    # a document: fetch 300 + 3 x db_write 10 + one round of (embed 20 + db_write 10) + 16 ms of CPU
    assert small.latency == pytest.approx(0.376)
    assert rates["jobs"] == pytest.approx(8 * 2 / 0.376)  # 8 jobs per worker process, Little's law
    assert (small.bottleneck, small.documents_per_second) == ("jobs", pytest.approx(16 / 0.376))
    assert small.chunks_per_second == pytest.approx(16 * 16 / 0.376)
    big = make_plan(repo_budget, doc_chunks=400).ingestion
    assert big is not None and big.batches == 25 and big.bottleneck == "cpu"
    # 25 batches, 4 at a time: 7 rounds
    assert big.latency == pytest.approx(0.3 + 0.03 + 7 * 0.03 + 0.4)
    assert big.chunks_per_second == pytest.approx(1000.0)


def test_cli_doc_bytes_sizes_the_document():
    code, out, _ = run("plan", "--budget", str(REPO_BUDGET), "--doc-bytes", "16001")
    assert code == 0
    assert "Ingestion (ingest_worker, 17 chunks a document, 2 embed batches)" in out
    code, _, err = run("plan", "--budget", str(REPO_BUDGET), "--doc-chunks", "0")
    assert code == 2 and "must be >= 1" in err


def test_mean_latencies_from_prometheus_text():
    latencies = mean_latencies(METRICS_FILE.read_text())
    # llm: (70 + 90) / (100 + 100) over both statuses; a dependency with no calls is left out
    assert latencies == {"llm": 0.8, "not_in_budget": 1.0, "search": 0.3}
    # two processes of one service: their calls pooled (search: 10 calls of 0.3 s + 30 of 0.1 s)
    other = "# TYPE floodgate_downstream_latency_seconds histogram\n" + "".join(
        f'floodgate_downstream_latency_seconds_{kind}{{dependency="search",status="ok"}} {value}\n'
        for kind, value in (("count", 30.0), ("sum", 3.0))
    )
    assert mean_latencies(METRICS_FILE.read_text(), other)["search"] == pytest.approx(6.0 / 40)


def test_latency_from_a_metrics_file():
    code, out, _ = run("plan", "--budget", str(REPO_BUDGET), "--latency-from", str(METRICS_FILE), "--json")
    assert code == 0
    data = json.loads(out)
    deal = next(c for c in data["capacities"] if c["endpoint"] == "deal_brain")
    assert (deal["bottleneck"], deal["rps"]) == ("llm", 20.0)
    # --latency wins over the measured value
    code, out, _ = run(
        "plan", "--budget", str(REPO_BUDGET), "--latency-from", str(METRICS_FILE), "--latency", "llm=200ms"
    )
    assert code == 0
    assert "latencies measured at" in out and "llm=200ms" in out and "search=300ms" in out
    code, out, _ = run(
        "plan",
        "--budget",
        str(REPO_BUDGET),
        "--latency-from",
        str(METRICS_FILE),
        "--latency-from",
        str(METRICS_FILE),
    )
    assert code == 0 and f"latencies measured at {METRICS_FILE}, {METRICS_FILE}: llm=800ms" in out


def test_latency_from_a_bad_source(tmp_path):
    empty = tmp_path / "empty.prom"
    empty.write_text("# nothing\n")
    for source in (str(empty), str(tmp_path / "missing.prom")):
        code, _, err = run("plan", "--budget", str(REPO_BUDGET), "--latency-from", source)
        assert code == 2 and "floodgate plan:" in err


def test_check_fails_when_a_target_is_out_of_reach(tmp_path):
    assert run("plan", "--budget", str(REPO_BUDGET), "--check")[0] == 0
    path = write(
        tmp_path,
        ("target_qps = 5\npeak_qps = 10\n", "target_qps = 15\npeak_qps = 30\n"),
        ("target_documents_per_second = 10\n", "target_documents_per_second = 500\n"),
    )
    code, out, err = run("plan", "--budget", path, "--check")
    assert code == 1
    assert "nexus_assess: target 15 requests/s exceeds the capacity 10.0/s (bottleneck: llm)" in err
    assert "ingestion: target 500 documents/s exceeds" in err
    assert "SHORT" in out
    # without --check the same plan is only printed
    assert run("plan", "--budget", path)[0] == 0


def test_markdown_design_document(tmp_path):
    code, out, _ = run("plan", "--budget", str(REPO_BUDGET), "--format", "markdown")
    assert code == 0
    for heading in (
        "## Inputs",
        "## Budget table",
        "## Timeouts and retries",
        "## Degradation policy",
        "## Capacity against the targets",
        "### What must change",
        "## Metrics",
    ):
        assert f"\n{heading}\n" in out
    assert "Burst factor: 10" in out and "| online | 1 | 1 | 1 cores | 512 MiB |" in out
    assert "| `deal_brain` | 40.0/s | llm | 606 ms | 20 | 40 | ok |" in out
    assert "| `deal_brain` | 8 s | embed, db, search | rerank -> fused_score, llm -> passages_only |" in out
    path = write(tmp_path, ("target_qps = 20\npeak_qps = 40\n", "target_qps = 200\npeak_qps = 200\n"))
    code, out, _ = run("plan", "--budget", path, "--format", "markdown")
    assert code == 0
    changes = out.split("### What must change")[1].split("## Metrics")[0]
    # every limit under 200/s, each with what would lift it
    assert "llm: a provider concurrency of 80 (global_concurrency, now 16)" in changes
    assert "llm: the provider's rate limit to 12000 rpm (now 6000)" in changes
    assert "CPU: 2 processes of online (now 1)" in changes
    assert "db:" not in changes


def test_the_design_metrics_are_the_observability_page_names():
    page = (REPO / "docs" / "observability.md").read_text()
    for metric, _ in METRICS:
        assert f"`{metric.split('{')[0]}" in page, metric


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        (lambda d: d["services"]["online"].update(cpu_cores=0), "services.online.cpu_cores: must be > 0"),
        (lambda d: d["services"]["online"].update(memory_mib=0), "services.online.memory_mib: must be >= 1"),
        (lambda d: d["deployment"].update(burst_factor=0.5), "deployment.burst_factor: must be >= 1"),
        (
            lambda d: d["endpoints"]["deal_brain"].update(target_qps=50, peak_qps=10),
            "endpoints.deal_brain: peak_qps must be >= target_qps",
        ),
        (
            lambda d: d["endpoints"]["deal_brain"].update(cpu_ms_per_request=-1),
            "endpoints.deal_brain.cpu_ms_per_request: must be > 0",
        ),
        (
            lambda d: d["endpoints"]["nexus_assess"]["calls"].update(gpu=1),
            "endpoints.nexus_assess.calls.gpu: unknown dependency",
        ),
        (
            lambda d: d["endpoints"]["nexus_assess"]["calls"].update(fetch=1),
            "endpoints.nexus_assess.calls.fetch: online has no share of it",
        ),
        (
            lambda d: d["endpoints"]["nexus_assess"].update(critical_path="__import__('os')"),
            "endpoints.nexus_assess: critical_path: only dependency names",
        ),
        (
            lambda d: d["endpoints"]["nexus_assess"].update(critical_path="llm + search"),
            "endpoints.nexus_assess.critical_path: search is not one of its calls",
        ),
        (
            lambda d: d["ingestion"]["calls_per_batch"].update(llm=1),
            "ingestion.calls_per_batch.llm: ingest_worker has no share of it",
        ),
        (lambda d: d["ingestion"].update(embed_batch_size=0), "ingestion.embed_batch_size: must be >= 1"),
        (lambda d: d["ingestion"].update(job_concurrency=0), "ingestion.job_concurrency: must be >= 1"),
    ],
)
def test_capacity_inputs_are_validated(edit, problem):
    data = repo_data()
    edit(data)
    with pytest.raises(floodgate.BudgetError) as info:
        floodgate.parse_budget(data)
    assert any(p.startswith(problem) for p in info.value.problems), info.value.problems


def test_critical_path_expressions():
    expr = "max(embed + db, search) + rerank + 2 * llm"
    assert path_names(expr) == {"embed", "db", "search", "rerank", "llm"}
    t = {"embed": 0.02, "db": 0.005, "search": 0.15, "rerank": 0.05, "llm": 0.4}
    assert evaluate_path(expr, t) == pytest.approx(1.0)
    for bad in ("llm - search", "llm(", "min(llm)", "llm.x", "True"):
        with pytest.raises(PathError):
            path_names(bad)


def test_a_budget_without_capacity_inputs_still_plans():
    data = repo_data()
    for ep in data["endpoints"].values():
        for key in ("calls", "critical_path", "cpu_ms_per_request", "target_qps", "peak_qps", "service"):
            ep.pop(key, None)
    del data["ingestion"]
    plan = make_plan(floodgate.parse_budget(data))
    assert plan.capacities == () and plan.ingestion is None and plan.shortfalls == ()
    assert re.search(r"online\s+llm\s+http", _render(plan))


def _render(plan) -> str:
    from floodgate.cli import render_plan

    out = io.StringIO()
    render_plan(plan, source="x", out=out)
    return out.getvalue()


def test_latency_from_a_metrics_url():
    import http.server
    import threading

    body = METRICS_FILE.read_bytes()

    class Metrics(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Metrics)
    thread = threading.Thread(target=server.handle_request, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/metrics"
        code, out, _ = run("plan", "--budget", str(REPO_BUDGET), "--latency-from", url)
    finally:
        thread.join(timeout=5)
        server.server_close()
    assert code == 0
    assert f"latencies measured at {url}: llm=800ms, search=300ms" in out


def test_erlang_b_is_the_loss_of_random_arrivals():
    # one place at 1 Erlang refuses half; two refuse 1/5 (B(2, A) = A^2/2 / (1 + A + A^2/2))
    assert erlang_b(1, 1.0) == pytest.approx(0.5)
    assert erlang_b(2, 1.0) == pytest.approx(0.2)
    assert erlang_b(0, 3.0) == 1.0


def test_a_door_is_the_fewest_places_that_refuse_one_percent():
    # dealBrain: 40/s x 0.6 s x 1.05 = 25.2 Erlangs; Little's law alone (26) would refuse about 13 %
    load = 40 * 0.6 * 1.05
    places = door_ceiling(40, 0.6)
    assert erlang_b(places, load) <= DOOR_LOSS < erlang_b(places - 1, load)
    assert erlang_b(26, load) > 0.1
    # a small door needs relatively more room: nexusAssess 4.62/s at 1 s is 5 by Little's law
    assert door_ceiling(4.62, 1.0) >= 2 * 5
    assert (door_ceiling(0, 1.0), door_ceiling(0.001, 0.001)) == (0, 1)


def test_the_door_binds_when_the_work_is_slower_than_the_budget_says(repo_budget):
    # The door's ceiling comes from the typical latencies (shadowHunter: 8/s x 0.95 s x 1.05 Erlangs
    # -> 15 in flight for 1 % loss). Its limit is the ceiling full all the time, each request held
    # its latency (Little's law): 15 / 0.958 s, far above the LLM's 8/s.
    typical = {c.endpoint: c for c in make_plan(repo_budget).capacities}
    door = {lim.name: lim.rate for lim in typical["shadow_hunter"].limits}["door"]
    assert door == pytest.approx(15 / 0.958)
    assert typical["shadow_hunter"].bottleneck == "llm"
    assert door_loss(repo_budget, typical["shadow_hunter"]) <= DOOR_LOSS
    # A slower search leaves the LLM's limit where it was but holds each request longer:
    # llm + search + llm + 8 ms of CPU = 1.408 s. The door still passes more than the LLM carries,
    # so the LLM is the bottleneck, but random arrivals at 8/s find its 15 places full often
    # enough to refuse more than 1 %: a warning, not the capacity.
    plan = make_plan(repo_budget, {"search": 0.6})
    hunt = next(c for c in plan.capacities if c.endpoint == "shadow_hunter")
    assert (hunt.bottleneck, hunt.rps) == ("llm", pytest.approx(8.0))
    assert {lim.name: lim.rate for lim in hunt.limits}["door"] == pytest.approx(15 / 1.408)
    assert door_loss(repo_budget, hunt) == pytest.approx(erlang_b(15, 8 * 1.408))
    assert any(w.startswith("endpoints.shadow_hunter: its door refuses 7% ") for w in plan.warnings)
    # a hunt that takes 3 s (its fan-outs wait for their slowest calls): the door binds first
    slow = make_plan(repo_budget, endpoint_latencies={"shadow_hunter": 3.0}).capacities
    assert [(c.bottleneck, c.rps) for c in slow if c.endpoint == "shadow_hunter"] == [("door", 5.0)]
    # the ingest API's submission has no door
    caps = {c.endpoint: c for c in plan.capacities}
    assert "door" not in {lim.name for lim in caps["omnirag_submit"].limits}
    assert door_loss(repo_budget, caps["omnirag_submit"]) is None


def test_the_design_names_the_door_and_its_remedy():
    code, out, _ = run(
        "plan", "--budget", str(REPO_BUDGET), "--endpoint-latency", "shadow_hunter=3s", "--format", "markdown"
    )
    assert code == 0, out
    assert "| `shadow_hunter` | 5.0/s | door | 3 s | 4 | 8 | peak shed |" in out
    assert "`shadow_hunter` peak 8/s: door: the dependencies' typical_latency as measured" in out


def test_a_measured_endpoint_latency_sizes_the_door(repo_budget):
    # nexusAssess's 4 LLM calls run at once: the request waits for the slowest, longer than the mean
    # the critical path adds up; its measured latency replaces the path for the door (10 in flight)
    caps = {
        c.endpoint: c
        for c in make_plan(repo_budget, {"llm": 0.8}, endpoint_latencies={"nexus_assess": 1.25}).capacities
    }
    nexus = caps["nexus_assess"]
    assert nexus.latency == 1.25
    assert {lim.name: lim.rate for lim in nexus.limits}["door"] == pytest.approx(10 / 1.25)
    assert (nexus.bottleneck, nexus.rps) == ("llm", pytest.approx(16 / (4 * 0.8)))
    assert caps["deal_brain"].latency == pytest.approx(0.206 + 0.8)  # the others keep their path
    code, out, _ = run(
        "plan", "--budget", str(REPO_BUDGET), "--endpoint-latency", "nexus_assess=1250ms", "--json"
    )
    assert code == 0
    nexus = next(c for c in json.loads(out)["capacities"] if c["endpoint"] == "nexus_assess")
    assert nexus["latency"] == 1.25
    assert {lim["name"]: lim["rate"] for lim in nexus["limits"]}["door"] == pytest.approx(10 / 1.25)
    code, _, err = run("plan", "--budget", str(REPO_BUDGET), "--endpoint-latency", "nope=1s")
    assert code == 2 and "latency given for unknown endpoints: ['nope']" in err

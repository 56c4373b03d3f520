"""floodgate top's pure parts on canned /metrics text: targets, rates, percentiles, 429 %, the render."""

from __future__ import annotations

import io
import json

import pytest
from floodgate import _top
from floodgate._top import Scrape, Target, histogram_quantile, parse_samples, render, snapshot
from floodgate.cli import main

ONLINE = Target("online", "online", "http://127.0.0.1:8081/metrics")
WORKER = Target("ingest_worker", "ingest-worker-1", "http://127.0.0.1:8083/metrics")
ENVOY = Target("envoy", "envoy", "http://127.0.0.1:9901/stats/prometheus")

_BOUNDS = ("0.1", "0.25", "0.5", "1.0", "+Inf")


def _histogram(name: str, labels: str, counts: tuple[int, ...]) -> str:
    """Cumulative bucket lines for ``counts`` (per bucket, not cumulative) over ``_BOUNDS``."""
    lines, total = [f"# TYPE {name} histogram"], 0
    for le, n in zip(_BOUNDS, counts, strict=True):
        total += n
        lines.append(f'{name}_bucket{{{labels},le="{le}"}} {total}')
    lines += [f"{name}_count{{{labels}}} {total}", f"{name}_sum{{{labels}}} 0"]
    return "\n".join(lines)


def online_text(
    *, ok: int, refused: int, fast: tuple[int, ...], cpu: float, attempts_429: int, degraded: int = 0
) -> str:
    route = 'route="/v1/deal-brain/answers",method="POST"'
    return "\n".join(
        [
            "# TYPE online_degraded_responses_total counter",
            f'online_degraded_responses_total{{route="/v1/deal-brain/answers"}} {degraded}',
            "# TYPE http_requests_total counter",
            f'http_requests_total{{{route},status="200",status_class="2xx"}} {ok}',
            f'http_requests_total{{{route},status="429",status_class="4xx"}} {refused}',
            'http_requests_total{route="/healthz",method="GET",status="200",status_class="2xx"} 50',
            _histogram("http_request_duration_seconds", f'{route},status_class="2xx"', fast),
            # the refusals are fast: they must not pull the served requests' percentiles down
            _histogram("http_request_duration_seconds", f'{route},status_class="4xx"', (refused, 0, 0, 0, 0)),
            "# TYPE process_cpu_seconds_total counter",
            f"process_cpu_seconds_total {cpu}",
            "# TYPE process_resident_memory_bytes gauge",
            "process_resident_memory_bytes 104857600",
            "# TYPE floodgate_gate_in_use gauge",
            'floodgate_gate_in_use{gate="llm"} 3',
            "# TYPE floodgate_gate_capacity gauge",
            'floodgate_gate_capacity{gate="llm"} 16',
            "# TYPE floodgate_gate_waiting gauge",
            'floodgate_gate_waiting{gate="llm"} 2',
            "# TYPE floodgate_breaker_state gauge",
            'floodgate_breaker_state{dependency="llm"} 2',
            "# TYPE floodgate_attempts_total counter",
            f'floodgate_attempts_total{{dependency="llm",outcome="429"}} {attempts_429}',
            _histogram("floodgate_downstream_latency_seconds", 'dependency="llm",status="ok"', fast),
            "# TYPE floodgate_pool_in_use gauge",
            'floodgate_pool_in_use{pool="db"} 4',
            "# TYPE floodgate_pool_size gauge",
            'floodgate_pool_size{pool="db"} 24',
            "# TYPE floodgate_loop_lag_max_seconds gauge",
            "floodgate_loop_lag_max_seconds 0.012",
            "",
        ]
    )


def worker_text(*, succeeded: int) -> str:
    return "\n".join(
        [
            "# TYPE ingest_queue_depth gauge",
            'ingest_queue_depth{tenant="acme",state="queued"} 7',
            'ingest_queue_depth{tenant="acme",state="running"} 2',
            "# TYPE ingest_oldest_runnable_job_age_seconds gauge",
            'ingest_oldest_runnable_job_age_seconds{tenant="acme"} 42',
            "# TYPE ingest_job_outcomes_total counter",
            f'ingest_job_outcomes_total{{outcome="succeeded"}} {succeeded}',
            "",
        ]
    )


def scrape(target: Target, at: float, text: str, endpoints=()) -> Scrape:
    return Scrape(target, at, parse_samples(text), endpoints=tuple(endpoints))


def two_scrapes():
    before = [
        scrape(ONLINE, 10.0, online_text(ok=100, refused=0, fast=(100, 0, 0, 0, 0), cpu=1.0, attempts_429=1)),
        scrape(WORKER, 10.0, worker_text(succeeded=5)),
    ]
    # in 2 s: 100 served (90 under 100 ms, 10 between 0.5 and 1 s) and 100 refused
    after = [
        scrape(
            ONLINE,
            12.0,
            online_text(ok=200, refused=100, fast=(190, 0, 0, 10, 0), cpu=1.5, attempts_429=4, degraded=20),
        ),
        scrape(WORKER, 12.0, worker_text(succeeded=9)),
    ]
    return before, after


# -- arithmetic ----------------------------------------------------------------------------------------


def test_histogram_quantile_interpolates_like_prometheus():
    buckets = [(0.1, 90.0), (0.25, 90.0), (0.5, 90.0), (1.0, 100.0), (float("inf"), 100.0)]
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.1 * 50 / 90)
    assert histogram_quantile(0.95, buckets) == pytest.approx(0.75)  # half way into (0.5, 1.0]
    assert histogram_quantile(0.99, buckets) == pytest.approx(0.95)
    # in the +Inf bucket: the highest finite bound
    assert histogram_quantile(0.99, [(0.1, 1.0), (float("inf"), 100.0)]) == 0.1
    assert histogram_quantile(0.99, [(0.1, 0.0), (float("inf"), 0.0)]) is None
    assert histogram_quantile(0.5, []) is None


def test_rates_percentiles_and_429_share_over_the_interval():
    before, after = two_scrapes()
    snap = snapshot(before, after)
    assert snap.seconds == 2.0
    (endpoint,) = snap.endpoints  # /healthz is a probe, not an endpoint
    assert (endpoint.job, endpoint.method, endpoint.route) == ("online", "POST", "/v1/deal-brain/answers")
    assert endpoint.qps == pytest.approx(100.0)  # 200 requests in 2 s
    assert endpoint.pct_429 == pytest.approx(50.0)
    assert endpoint.pct_5xx == 0.0
    assert endpoint.pct_degraded == pytest.approx(10.0)  # 20 of the 200 requests answered degraded
    # the served requests' deltas only (status_class="2xx"): 90 fast, 10 slow -> p95 in (0.5, 1.0]
    assert endpoint.p95 == pytest.approx(0.75)
    assert endpoint.p99 == pytest.approx(0.95)

    (llm,) = snap.dependencies
    assert (llm.in_use, llm.capacity, llm.waiting, llm.breaker) == (3, 16, 2, "open")
    assert llm.n_429 == 3
    assert llm.p99 == pytest.approx(0.95)
    (pool,) = snap.pools
    assert (pool.pool, pool.in_use, pool.size) == ("db", 4, 24)

    online = next(p for p in snap.processes if p.instance == "online")
    assert online.cpu_pct == pytest.approx(25.0)  # 0.5 CPU seconds in 2 s
    assert online.rss_bytes == 104857600 and online.lag_max == 0.012

    assert snap.queue is not None
    assert snap.queue.tenants == {"acme": (7, 2, 42)}
    assert snap.queue.jobs_per_s == pytest.approx(2.0)


def test_one_scrape_has_gauges_but_no_rates():
    _, after = two_scrapes()
    snap = snapshot(None, after)
    assert snap.seconds is None
    (endpoint,) = snap.endpoints
    assert endpoint.qps is None and endpoint.p99 is None and endpoint.pct_429 is None
    assert snap.dependencies[0].in_use == 3
    assert "rates over —" in render(snap)


def test_a_restarted_process_counts_from_zero():
    before, after = two_scrapes()
    restarted = scrape(
        ONLINE, 12.0, online_text(ok=30, refused=0, fast=(30, 0, 0, 0, 0), cpu=0.2, attempts_429=0)
    )
    (endpoint,) = snapshot(before, [restarted, after[1]]).endpoints
    assert endpoint.qps == pytest.approx(15.0)  # the counter went down: its value is the increase


def test_endpoints_declared_without_traffic_still_have_a_row():
    before, after = two_scrapes()
    declared = [("POST", "/v1/nexus-assess/assessments"), ("POST", "/v1/deal-brain/answers")]
    after[0] = Scrape(after[0].target, after[0].at, after[0].samples, endpoints=tuple(declared))
    rows = {e.route: e for e in snapshot(before, after).endpoints}
    assert set(rows) == {"/v1/nexus-assess/assessments", "/v1/deal-brain/answers"}
    assert rows["/v1/nexus-assess/assessments"].qps == 0.0


def test_route_parameters_match_the_openapi_form():
    assert _top._route_template("/v1/omnirag/jobs/<uuid:job_id>") == "/v1/omnirag/jobs/{job_id}"
    assert _top._route_template("/v1/omnirag/jobs/<job_id>") == "/v1/omnirag/jobs/{job_id}"


def test_gateway_traffic_leaves_out_the_admin_listener():
    def envoy(ok: int, limited: int, admin: int) -> str:
        return "\n".join(
            [
                "# TYPE envoy_http_downstream_rq_xx counter",
                f'envoy_http_downstream_rq_xx{{envoy_response_code_class="2",envoy_http_conn_manager_prefix="ingress"}} {ok}',
                f'envoy_http_downstream_rq_xx{{envoy_response_code_class="4",envoy_http_conn_manager_prefix="ingress"}} {limited}',
                f'envoy_http_downstream_rq_xx{{envoy_response_code_class="2",envoy_http_conn_manager_prefix="admin"}} {admin}',
                "",
            ]
        )

    snap = snapshot([scrape(ENVOY, 0.0, envoy(0, 0, 0))], [scrape(ENVOY, 1.0, envoy(30, 10, 500))])
    assert snap.gateway is not None
    assert snap.gateway.rps == pytest.approx(40.0)
    assert snap.gateway.pct_by_class == {"2": pytest.approx(75.0), "4": pytest.approx(25.0)}


def test_render_shows_every_section_and_a_process_that_is_down():
    before, after = two_scrapes()
    down = Scrape(
        Target("ratelimit", "ratelimit", "http://127.0.0.1:8092/metrics"), 12.0, error="ConnectError"
    )
    text = render(snapshot(before, [*after, down]))
    for heading in ("Endpoints", "Dependencies", "Pools", "Queue", "Processes"):
        assert heading in text
    assert "online POST /v1/deal-brain/answers" in text
    line = next(x for x in text.splitlines() if "/v1/deal-brain/answers" in x)
    assert line.split()[3:] == ["100.0", "750ms", "950ms", "50.0", "0.0", "10.0"]
    assert "online llm" in text and "3/16" in text and "open" in text
    assert "online db" in text and "4/24" in text
    assert "depth 7 queued, 2 running   oldest runnable 42s   jobs/s 2.00" in text
    assert "100.0MiB" in text and "25.0" in text
    assert "ratelimit (ratelimit) is down: ConnectError" in text


# -- targets ---------------------------------------------------------------------------------------------


STATE = {
    "supervisor_pid": 1,
    "status": "ready",
    "children": [
        {
            "name": "postgres",
            "url": "postgresql://postgres@127.0.0.1:5433/floodgate",
            "probe": {"command": ["x"]},
        },
        {"name": "migrate", "url": None, "state": "done", "probe": None},
        {
            "name": "online",
            "url": "http://127.0.0.1:8081",
            "probe": {"http": "http://127.0.0.1:8081/healthz"},
        },
        {
            "name": "ingest-worker-2",
            "url": "http://127.0.0.1:8084",
            "probe": {"http": "http://127.0.0.1:8084/healthz"},
        },
        {
            "name": "ratelimit",
            "url": "grpc://127.0.0.1:8091",
            "probe": {"http": "http://127.0.0.1:8092/healthz"},
        },
        {"name": "envoy", "url": "http://127.0.0.1:8080", "probe": {"http": "http://127.0.0.1:9901/ready"}},
    ],
}


def test_targets_from_the_cluster_state():
    assert _top.targets_from_state(STATE) == [
        Target("online", "online", "http://127.0.0.1:8081/metrics"),
        Target("ingest_worker", "ingest-worker-2", "http://127.0.0.1:8084/metrics"),
        Target("ratelimit", "ratelimit", "http://127.0.0.1:8092/metrics"),
        Target("envoy", "envoy", "http://127.0.0.1:9901/stats/prometheus"),
    ]


def test_targets_from_urls():
    assert _top.targets_from_urls(
        ["online=http://10.0.0.5:8081", "http://10.0.0.6:9901/stats/prometheus", "http://h:1/custom"]
    ) == [
        Target("online", "10.0.0.5:8081", "http://10.0.0.5:8081/metrics"),
        Target("envoy", "10.0.0.6:9901", "http://10.0.0.6:9901/stats/prometheus"),
        Target("h:1", "h:1", "http://h:1/custom"),
    ]
    with pytest.raises(_top.TopError, match="expected"):
        _top.targets_from_urls(["online=localhost:8081"])


def test_default_state_path_follows_the_data_dir():
    assert str(_top.default_state_path({})) == ".data/cluster.json"
    assert str(_top.default_state_path({"FLOODGATE_DATA_DIR": "/srv/fg"})) == "/srv/fg/cluster.json"


def test_cli_without_a_cluster_says_how_to_start_one(tmp_path):
    out, err = io.StringIO(), io.StringIO()
    assert main(["top", "--once", "--state", str(tmp_path / "cluster.json")], out=out, err=err) == 2
    assert "no cluster state" in err.getvalue() and "make start" in err.getvalue()
    (tmp_path / "empty.json").write_text(json.dumps({"children": []}))
    assert main(["top", "--once", "--state", str(tmp_path / "empty.json")], out=out, err=err) == 2
    assert "names no service" in err.getvalue()


def test_samples_keep_the_names_the_text_gave_them():
    text = "\n".join(
        [
            "# TYPE envoy_cluster_upstream_rq_xx counter",  # Envoy: a counter without _total
            'envoy_cluster_upstream_rq_xx{envoy_response_code_class="2"} 7',
            "# TYPE http_requests_total counter",
            'http_requests_total{route="/x"} 3',
            "",
        ]
    )
    assert parse_samples(text) == {
        "envoy_cluster_upstream_rq_xx": [({"envoy_response_code_class": "2"}, 7.0)],
        "http_requests_total": [({"route": "/x"}, 3.0)],
    }


def test_an_empty_queue_is_still_a_queue():
    text = "# TYPE ingest_jobs_dead_total counter\ningest_jobs_dead_total 0\n"
    snap = snapshot([scrape(WORKER, 0.0, text)], [scrape(WORKER, 1.0, text)])
    assert snap.queue is not None and snap.queue.tenants == {}
    assert "depth 0 queued, 0 running   oldest runnable 0s" in render(snap)


def test_envoy_counters_keep_the_names_their_lines_give():
    """Envoy exposes ``upstream_rq_total`` and ``upstream_rq{code}``: two series, never one merged."""
    text = "\n".join(
        [
            "# TYPE envoy_cluster_upstream_rq_total counter",
            'envoy_cluster_upstream_rq_total{envoy_cluster_name="online"} 10',
            "# TYPE envoy_cluster_upstream_rq counter",
            'envoy_cluster_upstream_rq{envoy_response_code="200",envoy_cluster_name="online"} 7',
            'envoy_cluster_upstream_rq{envoy_response_code="503",envoy_cluster_name="online"} 3',
            "# TYPE online_requests_total counter",
            "online_requests_total 4",
        ]
    )
    samples = parse_samples(text)
    assert samples["envoy_cluster_upstream_rq_total"] == [({"envoy_cluster_name": "online"}, 10.0)]
    assert sorted(value for _, value in samples["envoy_cluster_upstream_rq"]) == [3.0, 7.0]
    assert samples["online_requests_total"] == [({}, 4.0)]

"""The committed gateway config: valid for Envoy 1.40, and in agreement with the budget file and the
rate-limit config (one source of truth: config/budget.toml; envoy.yaml carries the numbers and this
test fails the moment they disagree)."""

from __future__ import annotations

import floodgate
import pytest
import yaml

from harness import REPO_ROOT
from harness.envoy import ENVOY_YAML, find_filter, hcm_of, load_committed, route, validate
from services.ratelimit import load_config

BUDGET = floodgate.load_budget(REPO_ROOT / "config" / "budget.toml")
CONFIG = load_committed()

#: gateway route -> (budget endpoint policy, Envoy cluster, budget service)
ROUTES = {
    "deal_brain": ("deal_brain", "online_deal_brain", "online"),
    "shadow_hunter": ("shadow_hunter", "online_shadow_hunter", "online"),
    "nexus_assess": ("nexus_assess", "online_nexus_assess", "online"),
    "omnirag_submit": ("omnirag_submit", "ingest_api", "ingest_api"),
    # status/list/cancel have no policy of their own: the ingest API's deadline is the submit one
    "omnirag_read": ("omnirag_submit", "ingest_api", "ingest_api"),
}


def process_capacity(cluster_name: str) -> int:
    """Requests one process behind ``cluster_name`` holds (in flight or waiting at its own door),
    as the service itself derives it from the budget; see gateway/envoy.yaml's clusters comment."""
    if cluster_name.startswith("online_"):
        # the endpoint's admission door, sized from the budget: beyond it the service refuses at once
        from services.online import endpoint_capacity

        return endpoint_capacity(BUDGET, cluster_name.removeprefix("online_")).in_flight
    if cluster_name == "ingest_api":
        # every API request holds one database connection; the db gate queues up to max_waiters more
        return BUDGET.process_limit("ingest_api", "db") + BUDGET.dependency("db").max_waiters
    raise LookupError(cluster_name)


def rate_limits(name: str) -> list[dict]:
    """The route's global rate limits (the rate-limit filter's per-route config: Envoy 1.40 honours
    hits_addend and apply_on_stream_done only there)."""
    r = route(CONFIG, name)
    assert "rate_limits" not in r["route"], "ignored next to the filter's per-route rate_limits"
    return r["typed_per_filter_config"]["envoy.filters.http.ratelimit"]["rate_limits"]


def cluster(name: str) -> dict:
    return next(c for c in CONFIG["static_resources"]["clusters"] if c["name"] == name)


def seconds(value: str) -> float:
    assert value.endswith("s"), value
    return float(value[:-1])


@pytest.mark.realtime  # envoy --mode validate runs the binary
def test_envoy_validates_the_committed_file():
    result = validate(ENVOY_YAML)
    assert result.returncode == 0, result.stderr or result.stdout


@pytest.mark.realtime  # envoy --mode validate runs the binary
def test_envoy_validates_a_rendered_file(tmp_path):
    from harness.envoy import render_gateway

    path = tmp_path / "envoy.yaml"
    path.write_text(
        yaml.safe_dump(render_gateway(gateway_port=18080, admin_port=19901, endpoints={"online": [1, 2]}))
    )
    result = validate(path)
    assert result.returncode == 0, result.stderr or result.stdout


@pytest.mark.parametrize("name", list(ROUTES))
def test_route_deadline_and_body_limit_follow_the_budget(name):
    policy_name, cluster_name, _ = ROUTES[name]
    policy = BUDGET.endpoint(policy_name)
    r = route(CONFIG, name)
    assert r["route"]["cluster"] == cluster_name
    assert seconds(r["route"]["timeout"]) == policy.deadline
    limit = r["typed_per_filter_config"]["envoy.filters.http.buffer"]["buffer"]["max_request_bytes"]
    expected = policy.max_body_bytes if name != "omnirag_read" else 65536
    assert limit == expected


@pytest.mark.parametrize("name", list(ROUTES))
def test_route_retries_only_requests_never_processed(name):
    policy = route(CONFIG, name)["route"]["retry_policy"]
    conditions = set(policy["retry_on"].split(","))
    assert conditions <= {"connect-failure", "refused-stream", "reset-before-request"}
    assert "retriable_status_codes" not in policy


@pytest.mark.parametrize("name", list(ROUTES))
def test_route_sends_tenant_and_route_descriptors_the_limits_know(name):
    actions = rate_limits(name)[0]["actions"]
    assert actions[0] == {
        "request_headers": {"header_name": "x-floodgate-tenant", "descriptor_key": "tenant"}
    }
    generic = actions[1]["generic_key"]
    assert generic == {"descriptor_key": "route", "descriptor_value": name}
    domain = find_filter(CONFIG, "envoy.filters.http.ratelimit")["typed_config"]["domain"]
    limits = load_config(REPO_ROOT / "config" / "ratelimit.yaml").domain(domain)
    matched = limits.find_limit((("tenant", "any-tenant"), ("route", name)))
    assert matched is not None and not matched.shadow_mode
    # the local bucket is a flood guard above the per-tenant limit, never below it
    bucket = route(CONFIG, name)["typed_per_filter_config"]["envoy.filters.http.local_ratelimit"][
        "token_bucket"
    ]
    assert bucket["max_tokens"] >= matched.rate_limit.requests_per_unit


def test_issue_limits():
    limits = load_config(REPO_ROOT / "config" / "ratelimit.yaml").domain("floodgate")
    assert limits.find_limit((("tenant", "t"), ("route", "deal_brain"))).rate_limit.requests_per_unit == 20
    assert limits.find_limit((("tenant", "t"), ("route", "omnirag_submit"))).rate_limit.requests_per_unit == 5


@pytest.mark.parametrize(
    ("cluster_name", "service"),
    [
        ("online_deal_brain", "online"),
        ("online_shadow_hunter", "online"),
        ("online_nexus_assess", "online"),
        ("ingest_api", "ingest_api"),
    ],
)
def test_circuit_breakers_follow_the_budget(cluster_name, service):
    expected = BUDGET.service(service).processes * process_capacity(cluster_name)
    thresholds = cluster(cluster_name)["circuit_breakers"]["thresholds"][0]
    assert thresholds["max_connections"] == expected
    assert thresholds["max_requests"] == expected
    assert thresholds["max_pending_requests"] == expected
    assert thresholds["retry_budget"]["budget_percent"]["value"] <= 20.0


def test_every_online_endpoint_route_has_a_cluster_of_its_own():
    # Envoy's breakers are per cluster: a shared one would let one endpoint's flood shed the others
    from services.online import ENDPOINTS

    names = [endpoint.name for endpoint in ENDPOINTS]
    clusters = [route(CONFIG, name)["route"]["cluster"] for name in names]
    assert clusters == [f"online_{name}" for name in names]
    addresses = {str(cluster(name)["load_assignment"]["endpoints"]) for name in ("online", *clusters)}
    assert len(addresses) == 1  # all of them lead to the same online instances


@pytest.mark.parametrize(
    "cluster_name",
    ["online", "online_deal_brain", "online_shadow_hunter", "online_nexus_assess", "ingest_api"],
)
def test_service_clusters_have_outlier_detection_and_health_checks(cluster_name):
    c = cluster(cluster_name)
    assert c["outlier_detection"]["consecutive_5xx"] >= 1
    assert c["outlier_detection"]["successful_active_health_check_uneject_host"] is False
    assert c["health_checks"][0]["http_health_check"]["path"] == "/healthz"
    # pooled upstream connections close before the services' keep-alive (chassis: 75 s) does
    options = c["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
    assert seconds(options["common_http_protocol_options"]["idle_timeout"]) < 75


def test_filter_order_and_identity():
    names = [f["name"] for f in hcm_of(CONFIG)["http_filters"]]
    assert names == [
        "envoy.filters.http.header_mutation",
        "envoy.filters.http.api_key_auth",
        "envoy.filters.http.buffer",
        "envoy.filters.http.local_ratelimit",
        "envoy.filters.http.header_to_metadata",
        "envoy.filters.http.ratelimit",
        "envoy.filters.http.router",
    ]
    strip = find_filter(CONFIG, "envoy.filters.http.header_mutation")["typed_config"]
    assert strip["mutations"]["request_mutations"] == [{"remove": "x-floodgate-tenant"}]
    auth = find_filter(CONFIG, "envoy.filters.http.api_key_auth")["typed_config"]
    assert auth["forwarding"] == {"header": "x-floodgate-tenant", "hide_credentials": True}
    assert {s["header"] for s in auth["key_sources"]} == {"x-api-key", "authorization"}
    # no route-level removal of the tenant header: it would run after the filters and drop the
    # tenant api_key_auth just set
    assert "x-floodgate-tenant" not in hcm_of(CONFIG)["route_config"].get("request_headers_to_remove", [])


def test_admin_is_on_loopback_and_limits_are_set():
    assert CONFIG["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"
    hcm = hcm_of(CONFIG)
    assert hcm["max_request_headers_kb"] <= 60
    for key in ("request_headers_timeout", "request_timeout", "stream_idle_timeout"):
        assert seconds(hcm[key]) > 0
    longest = max(BUDGET.endpoint(p).deadline for p, _, _ in ROUTES.values())
    assert seconds(hcm["stream_idle_timeout"]) > longest  # only dead streams hit it


# -- token and cost budgets (services/ratelimit/_budgets.py, config/ratelimit.yaml's key "budget") ----


def _entries(limit: dict) -> tuple[tuple[str, str], ...]:
    """The descriptor a rate_limits entry makes, the tenant's header read as "<tenant>"."""
    out = []
    for action in limit["actions"]:
        if "generic_key" in action:
            out.append((action["generic_key"]["descriptor_key"], action["generic_key"]["descriptor_value"]))
        else:
            assert action == {
                "request_headers": {"header_name": "x-floodgate-tenant", "descriptor_key": "tenant"}
            }
            out.append(("tenant", "<tenant>"))
    return tuple(out)


def test_llm_routes_ask_each_budget_before_and_report_its_usage_after():
    from cluster.ratelimit_config import llm_routes
    from services.ratelimit import BUDGET_WINDOWS, budget_descriptor_entries, in_flight_descriptor_entries

    metadata = {"tokens": "floodgate.usage:tokens", "cost": "floodgate.usage:cost_micros"}
    for name in llm_routes(BUDGET):
        limits = rate_limits(name)
        asked = {_entries(x) for x in limits if x.get("hits_addend") == {"number": 0}}
        reported = {
            _entries(x): x["hits_addend"]["format"]
            for x in limits
            if x.get("apply_on_stream_done") and "format" in x["hits_addend"]
        }
        # one start with the ask, one end when the stream is done: the requests in flight
        counted = {
            (_entries(x), bool(x.get("apply_on_stream_done")))
            for x in limits
            if x.get("hits_addend") == {"number": 1}
        }
        assert counted == {
            (in_flight_descriptor_entries("<tenant>"), False),
            (in_flight_descriptor_entries("<tenant>", finished=True), True),
        }, name
        for window in BUDGET_WINDOWS:
            tenant = budget_descriptor_entries(window.name, "<tenant>")
            assert tenant in asked, (name, window.name)
            source = f"%DYNAMIC_METADATA({metadata[window.measure]})%"
            assert reported[tenant] == source
            assert reported[budget_descriptor_entries(window.name, "<tenant>", name)] == source
        assert len(asked) == len(BUDGET_WINDOWS) and len(reported) == 2 * len(BUDGET_WINDOWS)


def test_the_usage_headers_become_the_reported_metadata_and_never_reach_the_client():
    from providers import USAGE_COST_HEADER, USAGE_TOKENS_HEADER

    rules = find_filter(CONFIG, "envoy.filters.http.header_to_metadata")["typed_config"]["response_rules"]
    assert {
        r["header"]: (r["on_header_present"]["metadata_namespace"], r["on_header_present"]["key"])
        for r in rules
    } == {
        USAGE_TOKENS_HEADER: ("floodgate.usage", "tokens"),
        USAGE_COST_HEADER: ("floodgate.usage", "cost_micros"),
    }
    assert all(r["remove"] for r in rules)


def test_usage_route_reaches_only_the_usage_path_of_the_rate_limit_service():
    r = route(CONFIG, "usage")
    assert r["match"]["path"] == "/v1/usage"
    assert r["route"]["cluster"] == "ratelimit_usage" and "prefix_rewrite" not in r["route"]
    limits = load_config(REPO_ROOT / "config" / "ratelimit.yaml").domain("floodgate")
    assert limits.find_limit((("tenant", "t"), ("route", "usage"))) is not None

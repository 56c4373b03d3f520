"""Token budgets and GET /v1/usage through real gateways, with the memory and the Redis backend.

The online service is the stand-in upstream, told per request how many tokens its answer "used"
(``x-test-usage-tokens``: it answers with the online service's ``x-floodgate-usage-*`` headers). The
rate-limit service runs the committed request limits plus the budgets `cluster.ratelimit_config`
writes for a small tenant table. The budget that refuses is a day's (the windows are the service's
wall clock, and a day's window does not end during a test); the minute's windows are tested on a
fake clock in test_ratelimit_budgets.py.

The usage is reported when a response is complete, after the client has it: each test waits for the
count to show in ``GET /v1/usage`` (bounded) before the next decision depends on it.

Topology per backend:
  memory: two Envoys -> ONE rate-limit service (counters in its memory) -> the upstream
  redis:  two Envoys -> one rate-limit service EACH, sharing Redis     -> the upstream
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import tomllib

import floodgate
import httpx
import pytest

from cluster.ratelimit_config import MARKER, RATELIMIT_CONFIG, budget_section
from harness import REPO_ROOT
from harness.envoy import start_gateway
from harness.ready import wait_until
from harness.services import start_ratelimit, start_upstream

from .conftest import redis_prefix

DAY_TOKENS = 1000
COST_PER_DAY = 0.05  # dollars
ACME, GLOBEX = {"x-api-key": "key-acme-1"}, {"x-api-key": "key-globex-1"}
DEAL = "/v1/deal-brain/answers"
ASSESS = "/v1/nexus-assess/assessments"


def budget_config(path) -> None:
    """The committed request limits, with the budgets of a small tenant table."""
    data = tomllib.loads((REPO_ROOT / "config" / "budget.toml").read_text())
    data["tenants"] = {
        "default": {
            "tokens_per_minute": 1_000_000,
            "tokens_per_day": DAY_TOKENS,
            "cost_per_day": COST_PER_DAY,
        }
    }
    requests_part = RATELIMIT_CONFIG.read_text().partition(MARKER)[0]
    path.write_text(requests_part + budget_section(floodgate.parse_budget(data)))


@pytest.fixture(scope="module", params=["memory", "redis"])
def deployment(request, tmp_path_factory, realtime):
    """Two gateways in front of the upstream; yields the gateways."""
    log_dir = tmp_path_factory.mktemp(f"budgets-{request.param}")
    config = log_dir / "ratelimit.yaml"
    budget_config(config)
    with contextlib.ExitStack() as stack:
        upstream = stack.enter_context(start_upstream(log_dir, name="online"))
        if request.param == "memory":
            rls = stack.enter_context(start_ratelimit(log_dir, config=config))
            services = [rls, rls]
        else:
            redis_url = request.getfixturevalue("redis_url")
            prefix = redis_prefix()
            services = [
                stack.enter_context(
                    start_ratelimit(
                        log_dir,
                        config=config,
                        name=f"ratelimit{i}",
                        redis_url=redis_url,
                        extra_env={"RATELIMIT_KEY_PREFIX": prefix},
                    )
                )
                for i in (1, 2)
            ]
        yield [
            stack.enter_context(
                start_gateway(
                    log_dir,
                    name=f"envoy{i}",
                    endpoints={
                        "online": [upstream.ports["http"]],
                        "ratelimit": [rls.ports["grpc"]],
                        "ratelimit_usage": [rls.ports["http"]],
                    },
                )
            )
            for i, rls in enumerate(services)
        ]


def counts(report: dict) -> dict:
    """A usage report without its clock-dependent part (seconds until each window resets)."""
    windows = {
        name: {k: v for k, v in w.items() if k != "resets_in_seconds"}
        for name, w in report["windows"].items()
    }
    return {**report, "windows": windows}


def used(client: httpx.Client, key: dict, window: str = "tokens_per_day") -> float:
    response = client.get("/v1/usage", headers=key)
    assert response.status_code == 200, response.text
    return response.json()["windows"][window]["used"]


def wait_used(client: httpx.Client, key: dict, expected: float, window: str = "tokens_per_day") -> None:
    """Until the reports of the answers already received show in the usage (they follow the response)."""
    wait_until(lambda: used(client, key, window) == expected, within=5, what=f"{window} used = {expected}")


def ask(client: httpx.Client, path: str, key: dict, tokens: int = 0, cost_micros: int = 0) -> httpx.Response:
    headers = {**key}
    if tokens:
        headers["x-test-usage-tokens"] = str(tokens)
    if cost_micros:
        headers["x-test-usage-cost-micros"] = str(cost_micros)
    return client.post(path, headers=headers, json={"question": "q"})


def in_flight(client: httpx.Client, key: dict) -> int:
    return client.get("/v1/usage", headers=key).json()["requests_in_flight"]


def test_a_tenant_over_its_token_budget_gets_429_until_the_window_frees_and_others_pass(deployment):
    first, second = deployment
    with (
        httpx.Client(base_url=first.url, timeout=10) as one,
        httpx.Client(base_url=second.url, timeout=10) as two,
    ):
        # answers that used nothing (a cached answer, the service's own 429) end too: every stream's
        # end is reported, so they hold no place in flight (else the reservation below would refuse)
        for client in (one, two):
            assert ask(client, DEAL, ACME).status_code == 200
        wait_until(lambda: in_flight(one, ACME) == 0, within=5, what="the ends reported")
        # a request counts in flight from its ask to the end of its stream
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            headers = {**ACME, "x-test-sleep-ms": "1500"}
            slow = pool.submit(one.post, DEAL, headers=headers, json={"question": "q"})
            wait_until(lambda: in_flight(two, ACME) == 1, within=1.4, what="the slow request in flight")
            assert slow.result().status_code == 200
        wait_until(lambda: in_flight(one, ACME) == 0, within=5, what="its end reported")

        response = ask(one, DEAL, ACME, tokens=300)
        assert response.status_code == 200
        # the budget before this request, in OpenAI's headers; the upstream's usage header removed
        assert response.headers["x-ratelimit-limit-tokens"] == str(DAY_TOKENS)
        assert response.headers["x-ratelimit-remaining-tokens"] == str(DAY_TOKENS)
        assert "x-floodgate-usage-tokens" not in response.headers
        assert "x-floodgate-usage-tokens" not in response.json()["headers"]  # nor sent upstream
        wait_used(one, ACME, 300)

        # through the other gateway (the counters are global): 300 used + this one at the mean 300
        response = ask(two, ASSESS, ACME, tokens=400)
        assert response.status_code == 200
        assert response.headers["x-ratelimit-remaining-tokens"] == "700"
        wait_used(two, ACME, 700)

        # 300 left, but a request uses 350 on average: refused before it can overshoot, told 0 left
        for client in (one, two):
            refused = ask(client, DEAL, ACME, tokens=1)
            assert refused.status_code == 429
            error = refused.json()["error"]
            assert error["code"] == "rate_limited"
            assert error["details"]["remaining_tokens"] == "0"
            assert refused.headers["x-ratelimit-remaining-tokens"] == "0"
            # until the day's window ends: Retry-After says when, in whole seconds
            retry_after = int(refused.headers["retry-after"])
            assert 1 <= retry_after <= 86400
        usage = one.get("/v1/usage", headers=ACME).json()
        assert usage["windows"]["tokens_per_day"]["used"] == 700  # refused requests used nothing
        assert usage["windows"]["tokens_per_day"]["remaining"] == 300
        wait_until(lambda: in_flight(one, ACME) == 0, within=5, what="the refused ends reported")

        # another tenant is untouched
        assert ask(one, DEAL, GLOBEX, tokens=10).status_code == 200


def test_usage_is_the_callers_own_per_endpoint(deployment):
    first, _ = deployment
    with httpx.Client(base_url=first.url, timeout=10) as client:
        before = client.get("/v1/usage", headers=GLOBEX).json()["windows"]
        assert ask(client, DEAL, GLOBEX, tokens=30, cost_micros=1500).status_code == 200
        assert ask(client, ASSESS, GLOBEX, tokens=20, cost_micros=500).status_code == 200
        wait_used(client, GLOBEX, before["tokens_per_day"]["used"] + 50)
        usage = client.get("/v1/usage", headers=GLOBEX)
        assert usage.status_code == 200
        body = usage.json()
        assert body["tenant"] == "globex"
        day = body["windows"]["tokens_per_day"]
        endpoints = before["tokens_per_day"]["endpoints"]
        assert day["endpoints"]["deal_brain"] == endpoints["deal_brain"] + 30
        assert day["endpoints"]["nexus_assess"] == endpoints["nexus_assess"] + 20
        assert day["limit"] == DAY_TOKENS and day["remaining"] == DAY_TOKENS - day["used"]
        cost = body["windows"]["cost_per_day"]
        assert cost["unit"] == "usd" and cost["limit"] == COST_PER_DAY
        assert cost["used"] == pytest.approx(before["cost_per_day"]["used"] + 0.002)

        # nothing the caller sends names another tenant: not the tenant header, not a parameter
        for params, headers in (({"tenant": "acme"}, GLOBEX), ({}, {**GLOBEX, "x-floodgate-tenant": "acme"})):
            other = client.get("/v1/usage", params=params, headers=headers)
            assert other.status_code == 200
            assert counts(other.json()) == counts(body)
        # initech used nothing: its own, empty report
        initech = client.get("/v1/usage", headers={"x-api-key": "key-initech-1"}).json()
        assert initech["tenant"] == "initech"
        assert initech["windows"]["tokens_per_day"]["used"] == 0


def test_usage_needs_a_key_and_answers_get_only(deployment):
    first, _ = deployment
    with httpx.Client(base_url=first.url, timeout=10) as client:
        assert client.get("/v1/usage").status_code == 401
        assert client.get("/v1/usage", headers={"x-floodgate-tenant": "acme"}).status_code == 401
        wrong = client.post("/v1/usage", headers=GLOBEX)
        assert wrong.status_code == 405 and wrong.headers["allow"] == "GET"

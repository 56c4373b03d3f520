"""The gateway protecting the services: circuit breakers, outlier detection, and the rate-limit
service's failure mode — real Envoy on the committed config, stand-in upstreams made slow or failing."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import httpx
import pytest
import trio

from harness.envoy import KEYS, Gateway, hcm_of, load_committed, start_gateway
from harness.services import start_ratelimit, start_upstream

pytestmark = pytest.mark.realtime  # every test runs Envoy and its upstreams


def thresholds(cluster_name: str) -> dict:
    config = load_committed()
    cluster = next(c for c in config["static_resources"]["clusters"] if c["name"] == cluster_name)
    return cluster["circuit_breakers"]["thresholds"][0]


@contextlib.contextmanager
def slow_online_behind_gateway(tmp_path, tenants: dict[str, str]) -> Iterator[Gateway]:
    """Envoy on the committed config, the rate-limit service, and an online stand-in that takes
    1.5 s per request."""
    with (
        start_upstream(tmp_path, name="online", env={"UPSTREAM_SLEEP_MS": "1500"}) as online,
        start_ratelimit(tmp_path) as rls,
        start_gateway(
            tmp_path,
            keys=tenants,
            endpoints={"online": [online.ports["http"]], "ratelimit": [rls.ports["grpc"]]},
        ) as gw,
    ):
        yield gw


async def test_slow_service_excess_gets_fast_503_not_a_queue(tmp_path):
    limits = thresholds("online_deal_brain")
    capacity = limits["max_connections"] + limits["max_pending_requests"]
    excess = 24
    # enough tenants that no tenant reaches its 20/s global limit: the breaker is what answers
    tenants = {f"key-t{i}": f"t{i}" for i in range((capacity + excess) // 10 + 1)}
    with slow_online_behind_gateway(tmp_path, tenants) as gw:
        results: list[tuple[int, float, httpx.Response]] = []
        keys = list(tenants)
        async with httpx.AsyncClient(
            timeout=10, limits=httpx.Limits(max_connections=capacity + excess)
        ) as client:

            async def one(i: int) -> None:
                started = time.monotonic()
                response = await client.post(
                    f"{gw.url}/v1/deal-brain/answers", json={}, headers={"x-api-key": keys[i % len(keys)]}
                )
                results.append((response.status_code, time.monotonic() - started, response))

            async with trio.open_nursery() as nursery:
                for i in range(capacity + excess):
                    nursery.start_soon(one, i)
        shed = [(elapsed, r) for status, elapsed, r in results if status == 503]
        served = [elapsed for status, elapsed, _ in results if status == 200]
        assert len(shed) >= excess, sorted({s for s, _, _ in results})
        assert len(served) >= limits["max_connections"]
        # the excess is answered at once (the service takes 1.5 s), with JSON and Retry-After
        assert max(elapsed for elapsed, _ in shed) < 0.75
        body = shed[0][1].json()
        assert body["error"]["code"] == "overloaded"
        assert shed[0][1].headers["retry-after"] == "1"
        assert gw.stat("cluster.online_deal_brain.upstream_rq_pending_overflow") == len(shed)


async def test_a_flood_of_one_endpoint_does_not_shed_the_others(tmp_path):
    # One cluster (and breaker) per online endpoint: dealBrain's excess is shed at its own limit,
    # while shadowHunter's requests, to the same instance at the same moment, all go through.
    limits = thresholds("online_deal_brain")
    flood = limits["max_connections"] + limits["max_pending_requests"] + 12
    hunts = thresholds("online_shadow_hunter")["max_connections"]
    tenants = {f"key-t{i}": f"t{i}" for i in range((flood + hunts) // 5 + 1)}
    keys = list(tenants)
    with slow_online_behind_gateway(tmp_path, tenants) as gw:
        statuses: dict[str, list[int]] = {"deal": [], "hunt": []}
        async with httpx.AsyncClient(
            timeout=10, limits=httpx.Limits(max_connections=flood + hunts)
        ) as client:

            async def one(kind: str, path: str, i: int) -> None:
                response = await client.post(
                    f"{gw.url}{path}", json={}, headers={"x-api-key": keys[i % len(keys)]}
                )
                statuses[kind].append(response.status_code)

            async with trio.open_nursery() as nursery:
                for i in range(flood):
                    nursery.start_soon(one, "deal", "/v1/deal-brain/answers", i)
                await trio.sleep(0.2)  # the flood is in: dealBrain's breaker is full
                for i in range(hunts):
                    nursery.start_soon(one, "hunt", "/v1/shadow-hunter/hunts", flood + i)
        assert (
            statuses["deal"].count(503) >= flood - limits["max_connections"] - limits["max_pending_requests"]
        )
        assert statuses["hunt"] == [200] * hunts
        assert gw.stat("cluster.online_shadow_hunter.upstream_rq_pending_overflow") == 0


def test_outlier_detection_ejects_a_failing_instance(tmp_path):
    with (
        start_upstream(tmp_path, name="good") as good,
        start_upstream(tmp_path, name="bad", env={"UPSTREAM_STATUS": "500"}) as bad,
        start_gateway(tmp_path, endpoints={"online": [good.ports["http"], bad.ports["http"]]}) as gw,
        httpx.Client(base_url=gw.url, timeout=5) as client,
    ):
        # tenants rotate so the global limit never answers (no rate-limit service here anyway)
        keys = list(KEYS)
        statuses = [
            client.post(
                "/v1/shadow-hunter/hunts", json={}, headers={"x-api-key": keys[i % len(keys)]}
            ).status_code
            for i in range(60)
        ]
        # consecutive_5xx = 5: the bad instance fails at most 5 requests, then is ejected
        assert statuses.count(500) == 5, statuses
        assert statuses[-30:] == [200] * 30
        assert (
            gw.stat("cluster.online_shadow_hunter.outlier_detection.ejections_enforced_consecutive_5xx") == 1
        )
        assert gw.stat("cluster.online_shadow_hunter.outlier_detection.ejections_active") == 1
        # active health checks still pass for it (its /healthz is fine): ejection is outlier detection's
        assert gw.stat("cluster.online_shadow_hunter.health_check.healthy") >= 2


def test_rate_limit_service_down_lets_requests_pass_and_counts_it(tmp_path):
    with (
        start_upstream(tmp_path, name="online") as online,
        # the ratelimit cluster points at a port where nothing listens
        start_gateway(tmp_path, endpoints={"online": [online.ports["http"]]}) as gw,
        httpx.Client(base_url=gw.url, timeout=5) as client,
    ):
        statuses = [
            client.post("/v1/deal-brain/answers", json={}, headers={"x-api-key": "key-acme-1"}).status_code
            for _ in range(30)
        ]
        # 30 > 20/s: with the service up, some would be 429
        assert statuses == [200] * 30
        assert gw.stat("cluster.online_deal_brain.ratelimit.error") == 30
        assert gw.stat("cluster.online_deal_brain.ratelimit.failure_mode_allowed") == 30


def test_rate_limit_service_restart_is_survived(tmp_path):
    """Up -> down -> up again on the same port: limited, then passing (counted), then limited again."""
    with (
        start_upstream(tmp_path, name="ingest") as ingest,
        start_ratelimit(tmp_path) as rls,
        start_gateway(
            tmp_path, endpoints={"ingest_api": [ingest.ports["http"]], "ratelimit": [rls.ports["grpc"]]}
        ) as gw,
        httpx.Client(base_url=gw.url, timeout=5) as client,
    ):

        def flood() -> list[int]:
            # omniRAG submissions: 5/s per tenant; 12 quick ones touch at most 2 windows -> >= 2 over
            return [
                client.post("/v1/omnirag/jobs", json={}, headers={"x-api-key": "key-globex-1"}).status_code
                for _ in range(12)
            ]

        assert 429 in flood()
        rls.stop()
        assert flood() == [200] * 12
        assert gw.stat("cluster.ingest_api.ratelimit.failure_mode_allowed") == 12
        with start_ratelimit(tmp_path, name="ratelimit-again", ports=rls.ports):
            assert 429 in flood()


def test_committed_failure_mode_is_allow(tmp_path):
    ratelimit = next(
        f for f in hcm_of(load_committed())["http_filters"] if f["name"] == "envoy.filters.http.ratelimit"
    )
    assert ratelimit["typed_config"]["failure_mode_deny"] is False

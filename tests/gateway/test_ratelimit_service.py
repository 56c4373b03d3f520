"""``python -m services.ratelimit`` as a real process: gRPC decisions, probes, metrics, start-up errors."""

from __future__ import annotations

import re
import subprocess
import sys
import threading

import grpc
import httpx
import pytest
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc

from harness import REPO_ROOT
from harness.ports import free_port
from harness.services import start_ratelimit
from services import ratelimit

from .conftest import redis_prefix


def call(port: int, tenant: str, route: str, *, domain: str = "floodgate", timeout: float = 2.0):
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        return call_on(channel, tenant, route, domain=domain, timeout=timeout)


def call_on(
    channel: grpc.Channel, tenant: str, route: str, *, domain: str = "floodgate", timeout: float = 2.0
):
    request = rls_pb2.RateLimitRequest(
        domain=domain,
        descriptors=[
            ratelimit_pb2.RateLimitDescriptor(
                entries=[
                    ratelimit_pb2.RateLimitDescriptor.Entry(key="tenant", value=tenant),
                    ratelimit_pb2.RateLimitDescriptor.Entry(key="route", value=route),
                ]
            )
        ],
    )
    return rls_pb2_grpc.RateLimitServiceStub(channel).ShouldRateLimit(request, timeout=timeout)


def test_public_api_is_exported():
    for name in ratelimit.__all__:
        assert hasattr(ratelimit, name), name
    assert sorted(ratelimit.__all__) == sorted(set(ratelimit.__all__))


@pytest.mark.realtime
@pytest.mark.parametrize("server", ["single_thread", "h2", "grpcio"])
@pytest.mark.parametrize("backend", ["memory", "redis"])
def test_grpc_decisions_probes_and_metrics(tmp_path, request, backend, server):
    redis_url = request.getfixturevalue("redis_url") if backend == "redis" else None
    # a per-test prefix keeps Redis counters of concurrent runs apart
    env = {"RATELIMIT_KEY_PREFIX": redis_prefix(), "RATELIMIT_GRPC_SERVER": server}
    with start_ratelimit(tmp_path, redis_url=redis_url, extra_env=env) as rls:
        port = rls.ports["grpc"]
        # omnirag_submit: 5 per second per tenant. 12 calls on one channel take milliseconds, so they
        # land in at most 2 one-second windows, and one window gets >= 6 of them: >= 1 is over. (A
        # channel per call took long enough on a loaded machine to spread 7 calls over 3 windows.)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            codes = [call_on(channel, "acme", "omnirag_submit").overall_code for _ in range(12)]
        assert rls_pb2.RateLimitResponse.OVER_LIMIT in codes
        assert call(port, "globex", "omnirag_submit").overall_code == rls_pb2.RateLimitResponse.OK
        ok = call(port, "initech", "deal_brain")
        assert ok.statuses[0].current_limit.requests_per_unit == 20
        assert ok.statuses[0].limit_remaining == 19
        assert 0 < ok.statuses[0].duration_until_reset.ToNanoseconds() <= 1_000_000_000

        http = f"http://127.0.0.1:{rls.ports['http']}"
        assert httpx.get(f"{http}/healthz").json() == {"status": "ok"}
        assert httpx.get(f"{http}/readyz").status_code == 200
        metrics = httpx.get(f"{http}/metrics").text
        assert 'ratelimit_requests_total{code="over_limit",domain="floodgate"}' in metrics
        assert (
            'ratelimit_over_limit_total{limit="floodgate.tenant.route_omnirag_submit",shadow="false"}'
            in metrics
        )
        for family in ("process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds"):
            assert f"\n{family} " in metrics
        assert 'floodgate_gc_pause_seconds_count{generation="2"}' in metrics
        rounds = re.search(r"^ratelimit_loop_round_seconds_count (\S+)$", metrics, flags=re.MULTILINE)
        assert rounds is not None
        # our own loops time each round (at least one per call read); grpcio has no loop of ours
        assert (float(rounds.group(1)) >= 14) == (server != "grpcio")
        assert httpx.get(f"{http}/nope").status_code == 404


@pytest.mark.realtime
@pytest.mark.parametrize("server", ["single_thread", "h2", "grpcio"])
def test_redis_down_answers_unavailable_and_counts_it(tmp_path, server):
    env = {"RATELIMIT_GRPC_SERVER": server}
    with start_ratelimit(tmp_path, redis_url="redis://127.0.0.1:1/0", extra_env=env) as rls:
        with pytest.raises(grpc.RpcError) as info:
            call(rls.ports["grpc"], "acme", "deal_brain")
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        http = f"http://127.0.0.1:{rls.ports['http']}"
        assert httpx.get(f"{http}/healthz").status_code == 200  # alive...
        ready = httpx.get(f"{http}/readyz")
        assert ready.status_code == 503  # ...but not ready, and says why
        assert "counter store" in ready.json()["error"]["message"]
        assert "ratelimit_store_errors_total 1.0" in httpx.get(f"{http}/metrics").text


@pytest.mark.realtime
@pytest.mark.parametrize("server", ["single_thread", "h2"])
def test_concurrent_clients_count_exactly_and_unknown_methods_are_refused(tmp_path, server):
    """The single-threaded server (either framing) under several grpcio clients at once (each its
    own connection, many streams each): every call answered, counts exact, then SIGTERM stops it
    cleanly."""
    config = tmp_path / "rl.yaml"
    config.write_text(
        "domain: floodgate\ndescriptors:\n  - key: tenant\n    descriptors:\n      - key: route\n"
        "        rate_limit: {unit: day, requests_per_unit: 150}\n"
    )
    with start_ratelimit(tmp_path, config=config, extra_env={"RATELIMIT_GRPC_SERVER": server}) as rls:
        port = rls.ports["grpc"]
        request = rls_pb2.RateLimitRequest(
            domain="floodgate",
            descriptors=[
                ratelimit_pb2.RateLimitDescriptor(
                    entries=[
                        ratelimit_pb2.RateLimitDescriptor.Entry(key="tenant", value="acme"),
                        ratelimit_pb2.RateLimitDescriptor.Entry(key="route", value="any"),
                    ]
                )
            ],
        )
        codes: list[int] = []

        def client() -> None:
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = rls_pb2_grpc.RateLimitServiceStub(channel)
                futures = [stub.ShouldRateLimit.future(request, timeout=10) for _ in range(50)]
                codes.extend(f.result().overall_code for f in futures)

        threads = [threading.Thread(target=client) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert codes.count(rls_pb2.RateLimitResponse.OK) == 150
        assert codes.count(rls_pb2.RateLimitResponse.OVER_LIMIT) == 50

        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            unknown = channel.unary_unary("/envoy.service.ratelimit.v3.RateLimitService/Nope")
            with pytest.raises(grpc.RpcError) as info:
                unknown(b"", timeout=2)
        assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert rls.process.returncode == 0, rls.log_text()[-2000:]


def run_main(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "services.ratelimit"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=20,
        env={"PATH": "/usr/bin:/bin", **env},
    )


@pytest.mark.realtime
def test_bad_config_stops_start_up_with_one_line(tmp_path):
    bad = tmp_path / "rl.yaml"
    bad.write_text(
        "domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unit: weekly, requests_per_unit: 1}\n"
    )
    result = run_main(
        {
            "RATELIMIT_CONFIG": str(bad),
            "RATELIMIT_PORT": str(free_port()),
            "RATELIMIT_HTTP_PORT": str(free_port()),
        }
    )
    assert result.returncode == 2
    assert "ratelimit: invalid rate-limit config:" in result.stderr
    assert "rate_limit.unit: 'weekly' is not one of" in result.stderr


@pytest.mark.realtime
def test_bad_setting_and_port_in_use_are_named(tmp_path):
    result = run_main({"RATELIMIT_PORT": "notaport"})
    assert result.returncode == 2
    assert "RATELIMIT_PORT" in result.stderr
    with start_ratelimit(tmp_path) as rls:
        taken = rls.ports["grpc"]
        result = run_main({"RATELIMIT_PORT": str(taken), "RATELIMIT_HTTP_PORT": str(free_port())})
    assert result.returncode == 2
    assert f"cannot listen on 127.0.0.1:{taken}" in result.stderr

"""The real local cluster with two online and two ingest API processes (`make up ONLINE_REPLICAS=2
INGEST_API_REPLICAS=2`) on the committed budget, which plans one of each (membership divides the
shares): requests through the gateway are answered by both processes of each service, as each
process's own request counter shows, and both online processes are members that hold half of each
provider, their doors sized on that half."""

from __future__ import annotations

import signal
import socket
import subprocess
from pathlib import Path

import floodgate
import httpx
import pytest

from cluster.settings import REPLICA_PORT_STEP
from harness import REPO_ROOT
from harness.ports import free_port
from harness.services import wait_cluster_ready
from services.online import endpoint_capacity

pytestmark = [pytest.mark.realtime, pytest.mark.timeout(120)]

SAMPLE_KEY = "fg_dev_acme_8c1f2a7d4e6b"  # config/api_keys.sample.yaml: tenant acme
REQUESTS = 16  # under the tenant's global rate limits per second (config/ratelimit.yaml)


def _port_with_replica_free(taken: set[int]) -> int:
    """A free port whose replica neighbour (``+ REPLICA_PORT_STEP``) is free as well."""
    while True:
        port = free_port()
        if port + REPLICA_PORT_STEP <= 65535 and not {port, port + REPLICA_PORT_STEP} & taken:
            try:
                with socket.create_server(("127.0.0.1", port + REPLICA_PORT_STEP)):
                    return port
            except OSError:
                continue


def _requests_counted(url: str, route: str) -> float:
    """This process's ``http_requests_total`` for ``route`` (from its own /metrics)."""
    text = httpx.get(url + "/metrics", timeout=5).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("http_requests_total{") and f'route="{route}"' in line
    )


def _gauge(url: str, series: str) -> float:
    """One series of this process's /metrics, by its name and labels as exported."""
    text = httpx.get(url + "/metrics", timeout=5).text
    return next(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(series + " "))


def test_two_processes_of_each_service_both_answer_through_the_gateway(
    cluster_env: dict[str, str], cluster_command, tmp_path: Path
) -> None:
    taken = {int(v) for k, v in cluster_env.items() if k.endswith("_PORT")}
    online_port = _port_with_replica_free(taken)
    ingest_port = _port_with_replica_free(taken | {online_port, online_port + REPLICA_PORT_STEP})
    env = {
        **cluster_env,
        "FLOODGATE_ONLINE_PORT": str(online_port),
        "FLOODGATE_ONLINE_REPLICAS": "2",
        "FLOODGATE_INGEST_API_PORT": str(ingest_port),
        "FLOODGATE_INGEST_API_REPLICAS": "2",
        "FLOODGATE_INGEST_WORKERS": "0",
    }
    data = Path(env["FLOODGATE_DATA_DIR"])
    log = tmp_path / "cluster.out"
    gateway = f"http://127.0.0.1:{env['FLOODGATE_GATEWAY_PORT']}"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [*cluster_command, "up"], env=env, cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        state = wait_cluster_ready(proc, data, log, within=60)
        urls = {c["name"]: c["url"] for c in state["children"]}
        assert urls["online"] == f"http://127.0.0.1:{online_port}"
        assert urls["online-2"] == f"http://127.0.0.1:{online_port + REPLICA_PORT_STEP}"
        assert urls["ingest-api-2"] == f"http://127.0.0.1:{ingest_port + REPLICA_PORT_STEP}"

        headers = {"x-api-key": SAMPLE_KEY}
        with httpx.Client(base_url=gateway, timeout=5, headers=headers) as http:
            for _ in range(REQUESTS):
                # A question missing: each process answers 422 itself, cheaply, and counts it.
                answer = http.post("/v1/deal-brain/answers", json={})
                assert answer.status_code == 422, answer.text
                listing = http.get("/v1/omnirag/jobs")
                assert listing.status_code == 200, listing.text

        online = [_requests_counted(urls[n], "/v1/deal-brain/answers") for n in ("online", "online-2")]
        ingest = [_requests_counted(urls[n], "/v1/omnirag/jobs") for n in ("ingest-api", "ingest-api-2")]
        # Envoy balanced every request to one of the processes, and each process got some.
        assert sum(online) == REQUESTS and min(online) > 0, online
        assert sum(ingest) == REQUESTS and min(ingest) > 0, ingest

        # Both online processes are live members: each holds half of every provider's share, and
        # its dealBrain door is sized on that half, not on the planned whole.
        budget = floodgate.load_budget(REPO_ROOT / "config" / "budget.toml")
        providers = [d for d in budget.dependencies_of("online") if budget.dependency(d).kind != "postgres"]
        halves = {d: budget.process_limit("online", d) // 2 for d in providers}  # plans 1 process
        door = endpoint_capacity(budget, "deal_brain", limits=halves).in_flight
        assert door < endpoint_capacity(budget, "deal_brain").in_flight
        for name in ("online", "online-2"):
            assert _gauge(urls[name], 'floodgate_membership_live_members{service="online"}') == 2
            assert _gauge(urls[name], 'floodgate_gate_capacity{gate="llm"}') == halves["llm"]
            assert _gauge(urls[name], 'floodgate_gate_capacity{gate="admission_deal_brain"}') == door

        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

"""The ingest API's and worker's /metrics: what the process costs, status classes, and the loop lag
`chassis.serve` measures while ``python -m services.ingest api|worker`` serves (the pools' metrics:
test_budget_wiring.py, with the real database)."""

from __future__ import annotations

from typing import Any

import chassis
import trio
from prometheus_client import CollectorRegistry

from services.ingest import IngestApiSettings
from services.ingest._bootstrap import build_api_app

JOBS = "/v1/omnirag/jobs"


class NoDb:
    """A job store the requests here never reach."""

    async def run(self, fn: Any, *args: Any) -> Any:
        raise AssertionError("no database call expected")


async def test_api_metrics_have_process_costs_status_classes_and_loop_lag(autojump_clock) -> None:
    registry = CollectorRegistry()
    app = build_api_app(IngestApiSettings(), NoDb(), registry)
    client = app.test_client()
    assert (await client.get("/healthz")).status_code == 200
    assert (await client.post(JOBS, json={"doc_id": "d", "text": "x"})).status_code == 401  # no tenant
    monitor = chassis.loop_lag_monitor(app)
    assert monitor is not None
    with trio.move_on_after(0.6):
        await monitor.run()
    text = (await (await client.get("/metrics")).get_data()).decode()
    for family in ("process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds"):
        assert f"\n{family} " in text
    assert registry.get_sample_value("floodgate_loop_lag_seconds_count") == 2
    healthz = {"route": "/healthz", "method": "GET", "status_class": "2xx"}
    assert registry.get_sample_value("http_request_duration_seconds_count", healthz) == 1
    refused = {"route": JOBS, "method": "POST", "status": "401", "status_class": "4xx"}
    assert registry.get_sample_value("http_requests_total", refused) == 1

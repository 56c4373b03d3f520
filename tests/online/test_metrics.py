"""The online service's /metrics: what the process costs, a refusal and an answer in different
status classes (so 429s never pull the served p95/p99 down), and the loop lag `chassis.serve`
measures while ``python -m services.online`` serves (test_postgres.py checks it served for real)."""

from __future__ import annotations

import chassis
import trio
from prometheus_client.parser import text_string_to_metric_families

from .conftest import close_door, online_harness

DEAL = "/v1/deal-brain/answers"
QUESTION = "How much did Aldercrest Robotics pay to acquire Norfield Analytics?"


async def test_metrics_have_process_costs_status_classes_and_loop_lag(autojump_clock, memory_chunks) -> None:
    async with online_harness(chunks=memory_chunks) as h:
        assert (await h.post(DEAL, {"question": QUESTION, "web": False})).status_code == 200
        close_door(h.app.extensions["online"].doors["deal_brain"])
        assert (await h.post(DEAL, {"question": QUESTION})).status_code == 429
        monitor = chassis.loop_lag_monitor(h.app)
        assert monitor is not None
        with trio.move_on_after(0.6):
            await monitor.run()
        text = (await (await h.client.get("/metrics")).get_data()).decode()
    samples = {s.name for f in text_string_to_metric_families(text) for s in f.samples}
    assert {
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "python_gc_collections_total",
        "floodgate_gc_pause_seconds_bucket",
        "floodgate_loop_lag_max_seconds",
    } <= samples
    assert h.registry.get_sample_value("floodgate_loop_lag_seconds_count") == 2
    route = {"route": DEAL, "method": "POST"}
    served = h.registry.get_sample_value(
        "http_request_duration_seconds_count", {**route, "status_class": "2xx"}
    )
    refused = h.registry.get_sample_value(
        "http_request_duration_seconds_count", {**route, "status_class": "4xx"}
    )
    assert (served, refused) == (1, 1)
    assert (
        h.registry.get_sample_value("http_requests_total", {**route, "status": "429", "status_class": "4xx"})
        == 1
    )

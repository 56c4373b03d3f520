"""The simulator's /metrics: what the process costs, requests by status class, and the loop lag
`chassis.serve` measures while it serves (``python -m services.simulator`` serves through it)."""

from __future__ import annotations

import chassis
import trio

from .conftest import make_app

EMBED = "/v1/embeddings"
BODY = {"model": "m", "input": "text"}


async def test_metrics_have_process_costs_status_classes_and_loop_lag(autojump_clock) -> None:
    app = make_app({"embeddings": {"rate_limit": {"rps": 1}}})
    client = app.test_client()
    assert (await client.post(EMBED, json=BODY)).status_code == 200
    assert (await client.post(EMBED, json=BODY)).status_code == 429
    monitor = chassis.loop_lag_monitor(app)  # what chassis.serve runs beside the app
    assert monitor is not None
    with trio.move_on_after(0.6):
        await monitor.run()
    text = (await (await client.get("/metrics")).get_data()).decode()
    for family in ("process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds"):
        assert f"\n{family} " in text
    assert 'floodgate_gc_pause_seconds_count{generation="0"}' in text
    assert "floodgate_loop_lag_seconds_count 2.0" in text
    route = f'method="POST",route="{EMBED}"'
    assert f'http_requests_total{{{route},status="200",status_class="2xx"}} 1.0' in text
    assert f'http_requests_total{{{route},status="429",status_class="4xx"}} 1.0' in text
    assert f'http_request_duration_seconds_count{{{route},status_class="2xx"}} 1.0' in text

"""The chassis' metrics: one registry per process with requests by status class, what the process
costs (CPU, memory, file descriptors, GC pauses) and, while served, the event loop's lag."""

from __future__ import annotations

import gc
from functools import partial

import chassis
import pytest
import trio
from chassis import ApiError
from chassis._process import GcPauses, gc_pauses
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

PROCESS_FAMILIES = (
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_open_fds",
    "python_gc_collections_total",
    "python_info",
    "floodgate_gc_pause_seconds_count",
)


def sample_names(text: str) -> set[str]:
    return {s.name for family in text_string_to_metric_families(text) for s in family.samples}


async def scrape(app) -> str:
    response = await app.test_client().get("/metrics")
    assert response.status_code == 200
    return (await response.get_data()).decode()


async def test_metrics_have_what_the_process_costs() -> None:
    app = chassis.create_app("t")
    names = sample_names(await scrape(app))
    assert set(PROCESS_FAMILIES) <= names
    registry = chassis.chassis_state(app).registry
    assert registry.get_sample_value("process_resident_memory_bytes") > 0
    assert registry.get_sample_value("process_open_fds") >= 3  # stdin, stdout, stderr at least


def test_process_metrics_go_on_the_given_registry_once() -> None:
    registry = CollectorRegistry()
    chassis.register_process_metrics(registry)
    assert registry.get_sample_value("process_cpu_seconds_total") >= 0
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        chassis.register_process_metrics(registry)


async def test_a_refusal_and_a_served_request_land_in_different_status_classes() -> None:
    app = chassis.create_app("t")

    @app.get("/maybe/<int:refuse>")
    async def maybe(refuse: int):
        if refuse:
            raise ApiError(429, "overloaded", "busy", headers={"Retry-After": "1"})
        return {"ok": True}

    client = app.test_client()
    assert (await client.get("/maybe/1")).status_code == 429
    assert (await client.get("/maybe/1")).status_code == 429
    assert (await client.get("/maybe/0")).status_code == 200
    registry = chassis.chassis_state(app).registry
    route = {"route": "/maybe/<int:refuse>", "method": "GET"}
    assert (
        registry.get_sample_value("http_requests_total", {**route, "status": "429", "status_class": "4xx"})
        == 2
    )
    assert (
        registry.get_sample_value("http_requests_total", {**route, "status": "200", "status_class": "2xx"})
        == 1
    )
    # Served requests' latency is read without the refusals in it.
    assert (
        registry.get_sample_value("http_request_duration_seconds_count", {**route, "status_class": "2xx"})
        == 1
    )
    assert (
        registry.get_sample_value("http_request_duration_seconds_count", {**route, "status_class": "4xx"})
        == 2
    )


def test_gc_pauses_are_counted_per_generation_in_buckets() -> None:
    pauses = GcPauses(buckets=(0.001, 0.01))
    pauses("start", {"generation": 0})
    pauses("stop", {"generation": 0, "collected": 0, "uncollectable": 0})
    pauses.record(2, 0.005)
    pauses.record(2, 0.5)
    registry = CollectorRegistry()
    registry.register(pauses)

    def bucket(generation: str, le: str) -> float | None:
        return registry.get_sample_value(
            "floodgate_gc_pause_seconds_bucket", {"generation": generation, "le": le}
        )

    assert registry.get_sample_value("floodgate_gc_pause_seconds_count", {"generation": "0"}) == 1
    assert registry.get_sample_value("floodgate_gc_pause_seconds_count", {"generation": "1"}) == 0
    assert (bucket("2", "0.001"), bucket("2", "0.01"), bucket("2", "+Inf")) == (0, 1, 2)
    assert registry.get_sample_value("floodgate_gc_pause_seconds_sum", {"generation": "2"}) == 0.505


def test_a_full_collection_is_timed_by_the_process_hook() -> None:
    hook = gc_pauses()
    assert gc_pauses() is hook and gc.callbacks.count(hook) == 1  # one hook per process
    registry = CollectorRegistry()
    chassis.register_process_metrics(registry)
    before = registry.get_sample_value("floodgate_gc_pause_seconds_count", {"generation": "2"})
    gc.collect()
    after = registry.get_sample_value("floodgate_gc_pause_seconds_count", {"generation": "2"})
    assert after >= before + 1  # (an automatic full collection may land in between too)


async def test_serving_a_chassis_app_runs_its_loop_lag_monitor(autojump_clock) -> None:
    app = chassis.create_app("t")
    registry = chassis.chassis_state(app).registry
    async with trio.open_nursery() as nursery:
        await nursery.start(
            partial(
                chassis.serve,
                app,
                host="127.0.0.1",
                port=0,
                grace_period=1.0,
                shutdown_trigger=partial(trio.sleep, 1.1),
            )
        )
    # One sample each 0.25 s of the 1.1 s served, on the app's registry, in its /metrics.
    assert registry.get_sample_value("floodgate_loop_lag_seconds_count") == 4
    assert registry.get_sample_value("floodgate_loop_lag_max_seconds") == 0
    assert "floodgate_loop_lag_seconds_count 4.0" in await scrape(app)


async def test_the_loop_lag_monitor_reports_on_the_apps_registry(autojump_clock) -> None:
    app = chassis.create_app("t")
    monitor = chassis.loop_lag_monitor(app)
    assert monitor is not None
    with trio.move_on_after(1.1):
        await monitor.run()
    assert monitor.statistics().samples == 4
    assert chassis.chassis_state(app).registry.get_sample_value("floodgate_loop_lag_seconds_count") == 4


def test_an_app_the_chassis_did_not_make_gets_no_monitor() -> None:
    async def asgi(scope, receive, send) -> None:
        pass

    assert chassis.loop_lag_monitor(asgi) is None  # type: ignore[arg-type]

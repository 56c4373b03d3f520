"""The budget file's keys take effect in the ingest processes: the pools' timeouts (``db`` for the API,
``db_write`` for workers) and the submission's deadline and body limit (``endpoints.omnirag_submit``)."""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path
from typing import Any

import chassis
import floodgate
import pytest
import trio
import trio_asyncio
from prometheus_client import CollectorRegistry
from providers import ProviderSettings

from services.ingest import IngestApiSettings, IngestWorkerSettings
from services.ingest._bootstrap import build_api_app, open_api, open_worker

REPO_BUDGET = Path(__file__).resolve().parents[2] / "config" / "budget.toml"
JOBS = "/v1/omnirag/jobs"
T1 = {"x-floodgate-tenant": "acme"}
SUBMISSION = {"doc_id": "d", "text": "hello"}


def make_budget(**submit: Any) -> floodgate.Budget:
    """The repository's budget with ``endpoints.omnirag_submit`` keys replaced."""
    data = copy.deepcopy(tomllib.loads(REPO_BUDGET.read_text()))
    data["endpoints"]["omnirag_submit"].update(submit)
    return floodgate.parse_budget(data)


class SlowDb:
    """A job store that never answers in time (only the deadline ends the wait)."""

    def __init__(self) -> None:
        self.calls = 0

    async def run(self, fn: Any, *args: Any) -> Any:
        self.calls += 1
        await trio.sleep(3600)


# -- the pools --------------------------------------------------------------------------------


async def scrape(app: Any) -> str:
    return (await (await app.test_client().get("/metrics")).get_data()).decode()


def assert_process_and_pool_metrics(text: str, pool: str) -> None:
    """The process's one registry has what the process costs and its pool's metrics."""
    for family in ("process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds"):
        assert f"\n{family} " in text
    for family in (
        "floodgate_pool_in_use",
        "floodgate_pool_size",
        "floodgate_pool_acquire_wait_seconds_count",
    ):
        assert f'\n{family}{{pool="{pool}"}} ' in text


async def test_the_api_pool_has_the_budgets_db_timeouts(database_url: str) -> None:
    budget = floodgate.load_budget(REPO_BUDGET)
    settings = IngestApiSettings(database_url=database_url, budget_file=REPO_BUDGET)
    async with trio_asyncio.open_loop(), open_api(settings) as app:
        pool = app.extensions["ingest"].db
        timeouts = budget.dependency("db").timeouts
        assert await pool.fetchval("SHOW statement_timeout") == f"{timeouts.attempt:g}s"
        assert pool.raw._connect_kwargs["command_timeout"] == timeouts.attempt
        assert pool.raw._connect_kwargs["timeout"] == timeouts.connect
        assert_process_and_pool_metrics(await scrape(app), "db")


async def test_the_worker_pool_has_the_budgets_db_write_timeouts(database_url: str) -> None:
    budget = floodgate.load_budget(REPO_BUDGET)
    settings = IngestWorkerSettings(database_url=database_url, budget_file=REPO_BUDGET)
    providers = {"embed": ProviderSettings(base_url="http://127.0.0.1:9")}  # never called here
    async with trio_asyncio.open_loop(), open_worker(settings, providers) as process:
        timeouts = budget.dependency("db_write").timeouts
        assert await process.db.fetchval("SHOW statement_timeout") == f"{timeouts.attempt:g}s"
        assert process.db.raw._connect_kwargs["command_timeout"] == timeouts.attempt
        assert process.db.raw._connect_kwargs["timeout"] == timeouts.connect
        assert_process_and_pool_metrics(await scrape(process.app), "db_write")


# -- the submission's deadline and body limit -------------------------------------------------


async def test_a_submission_past_the_budget_deadline_is_a_504(autojump_clock: Any) -> None:
    budget = make_budget(deadline=1.5)
    db = SlowDb()
    client = build_api_app(IngestApiSettings(), db, CollectorRegistry(), budget=budget).test_client()
    started = trio.current_time()
    response = await client.post(JOBS, json=SUBMISSION, headers=T1)
    assert trio.current_time() - started == pytest.approx(1.5)
    assert response.status_code == 504 and db.calls == 1
    error = (await response.get_json())["error"]
    assert error["code"] == "deadline_exceeded"
    assert error["details"]["dependency"] == "db"
    assert "omnirag_submit deadline of 1.5s" in error["message"]


@pytest.mark.parametrize(
    ("header", "millis", "expected"),
    [
        ("x-floodgate-deadline-ms", "400", 0.4),
        ("x-envoy-expected-rq-timeout-ms", "700", 0.7),
        ("x-floodgate-deadline-ms", "60000", 1.5),  # a caller may ask for less time, never for more
    ],
)
async def test_a_callers_deadline_header_shortens_the_submission_deadline(
    autojump_clock: Any, header: str, millis: str, expected: float
) -> None:
    client = build_api_app(
        IngestApiSettings(), SlowDb(), CollectorRegistry(), budget=make_budget(deadline=1.5)
    ).test_client()
    started = trio.current_time()
    response = await client.post(JOBS, json=SUBMISSION, headers={**T1, header: millis})
    assert response.status_code == 504
    assert trio.current_time() - started == pytest.approx(expected)


async def test_the_submission_body_limit_is_the_budgets_max_body_bytes(autojump_clock: Any) -> None:
    db = SlowDb()
    client = build_api_app(
        IngestApiSettings(), db, CollectorRegistry(), budget=make_budget(max_body_bytes=1000)
    ).test_client()
    response = await client.post(JOBS, json={"doc_id": "d", "text": "x" * 2000}, headers=T1)
    assert response.status_code == 413 and db.calls == 0
    error = (await response.get_json())["error"]
    assert error["code"] == "body_too_large" and error["details"]["limit_bytes"] == 1000


@pytest.mark.parametrize(
    ("policy", "problem"),
    [
        ({"required": []}, "endpoints.omnirag_submit: calls db but names it neither required nor degradable"),
        ({"required": ["db", "embed"]}, "endpoints.omnirag_submit: names embed, which it does not call"),
        (
            {"required": [], "degradable": {"db": "later"}},
            "omnirag_submit.degradable: a submission has no fallback",
        ),
    ],
)
def test_a_submission_failure_policy_other_than_required_db_stops_start_up(policy: Any, problem: str) -> None:
    with pytest.raises(chassis.StartupError) as caught:
        build_api_app(IngestApiSettings(), SlowDb(), CollectorRegistry(), budget=make_budget(**policy))
    assert problem in str(caught.value)

"""The FastAPI example (examples/fastapi_app) does what its README says, under asyncio and under trio.

The app runs in process behind httpx's ASGI transport, its lifespan entered as uvicorn would, and the two
APIs it calls are an `httpx.MockTransport`. The overload case fills the LLM gate for real (two calls held
at the LLM, two waiting) and checks the next request is refused at once with 429 and ``Retry-After``.
No timing is asserted: the test waits on conditions, each bounded. Realtime: the app runs on each
backend's own clock (``anyio.run``), as under uvicorn.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import ModuleType

import anyio
import httpx
import pytest

APP_PY = Path(__file__).resolve().parents[2] / "examples" / "fastapi_app" / "app.py"
BACKENDS = ["asyncio", "trio"]

pytestmark = pytest.mark.realtime


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fastapi_example_app", APP_PY)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Downstreams:
    """The search and LLM APIs: answers, the requests they saw, and an event that, when set here, holds
    every LLM call until it fires."""

    def __init__(self) -> None:
        self.search_status = 200
        self.seen: list[httpx.Request] = []
        self.llm_held: anyio.Event | None = None

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        if request.url.host == "search.test":
            hits = [{"text": f"about {request.url.params['q']}"}]
            return httpx.Response(self.search_status, json={"hits": hits})
        if self.llm_held is not None:
            await self.llm_held.wait()
        body = json.loads(request.content)
        return httpx.Response(200, json={"text": f"{body['prompt']} with {len(body['context'])}"})


def run_with_app(backend: str, scenario: Callable[[httpx.AsyncClient, Downstreams, object], Awaitable[None]]):
    example = load_example()

    async def main() -> None:
        downstreams = Downstreams()
        app = example.create_app(
            base_urls={"search": "http://search.test", "llm": "http://llm.test"},
            transport=httpx.MockTransport(downstreams),
        )
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://app.test") as client:
                with anyio.fail_after(10):
                    await scenario(client, downstreams, app)

    anyio.run(main, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_guarded_call_answers(backend: str):
    async def scenario(client: httpx.AsyncClient, downstreams: Downstreams, app: object) -> None:
        response = await client.get("/answer", params={"q": "gates"}, headers={"x-tenant": "t1"})
        assert response.status_code == 200, response.text
        assert response.json() == {"answer": "gates with 1", "context": ["about gates"], "degraded": []}
        assert [r.url.host for r in downstreams.seen] == ["search.test", "llm.test"]
        # the endpoint's deadline travels with each call
        assert all(0 < int(r.headers["x-floodgate-deadline-ms"]) <= 6000 for r in downstreams.seen)
        metrics = (await client.get("/metrics")).text
        assert 'floodgate_gate_capacity{gate="llm"} 2.0' in metrics

    run_with_app(backend, scenario)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_failing_search_degrades_the_answer(backend: str):
    async def scenario(client: httpx.AsyncClient, downstreams: Downstreams, app: object) -> None:
        downstreams.search_status = 500  # not a status the budget retries
        response = await client.get("/answer", params={"q": "gates"})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["answer"] == "gates with 0" and body["context"] == []
        assert body["degraded"] == [
            {"step": "search", "dependency": "search", "reason": "dependency_error", "fallback": "no_context"}
        ]

    run_with_app(backend, scenario)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_full_gate_answers_429_with_retry_after(backend: str):
    async def scenario(client: httpx.AsyncClient, downstreams: Downstreams, app) -> None:
        llm = app.state.deps["llm"]
        downstreams.llm_held = anyio.Event()
        statuses: list[int] = []

        async def ask() -> None:
            statuses.append((await client.get("/answer", params={"q": "held"})).status_code)

        async with anyio.create_task_group() as tg:
            for _ in range(4):  # the budget's llm: 2 at once, 2 waiting
                tg.start_soon(ask)
            await anyio.wait_all_tasks_blocked()
            assert (llm.gate.statistics().in_use, llm.gate.waiting) == (2, 2)

            refused = await client.get("/answer", params={"q": "one too many"})
            assert refused.status_code == 429
            assert refused.headers["retry-after"] == "1"
            error = refused.json()["error"]
            assert error["code"] == "overloaded" and error["details"]["dependency"] == "llm"

            downstreams.llm_held.set()
        assert statuses == [200, 200, 200, 200]
        assert llm.gate.statistics().rejected_total == 1

    run_with_app(backend, scenario)

"""A FastAPI app on uvicorn with two dependencies behind floodgate gates, sized from ``budget.toml``.

``GET /answer?q=...`` asks a search API for context, then an LLM API for the answer, each call through
its own `floodgate.Dependency` (gate, retries, breaker, timeouts) under the endpoint's deadline. Search
may fail without failing the request (the answer then says ``"degraded"``); the LLM may not. When a gate
is full the app answers at once: 429 with ``Retry-After``, never a growing queue. ``GET /metrics``
shows the gates. Run it (see README.md)::

    SEARCH_URL=http://127.0.0.1:8001 LLM_URL=http://127.0.0.1:8001 \\
        uvicorn app:create_app_from_env --factory --port 8000
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import floodgate
import httpx
import prometheus_client
from fastapi import FastAPI, Header, Request, Response
from fastapi.responses import JSONResponse

BUDGET = Path(__file__).with_name("budget.toml")
SERVICE = "app"  # this app's name in the budget file's [services] and shares


def create_app(
    *,
    base_urls: Mapping[str, str],
    budget_path: str | Path = BUDGET,
    transport: httpx.AsyncBaseTransport | Mapping[str, httpx.AsyncBaseTransport] | None = None,
) -> FastAPI:
    """The app, with the dependencies at ``base_urls`` (``{"search": ..., "llm": ...}``).

    The budget is loaded and checked here, at start-up: a bad key stops the app with a message naming
    it. ``transport`` replaces the network (tests pass an ``httpx.MockTransport``).
    """
    budget = floodgate.load_budget(budget_path)
    deadline = budget.endpoint("answer").deadline
    registry = prometheus_client.CollectorRegistry()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # App-lifetime resources: one HTTP client and one gate per dependency, closed at shutdown.
        deps = floodgate.Dependencies.from_budget(
            budget, service=SERVICE, registry=registry, http_base_urls=base_urls, transport=transport
        )
        async with deps:
            app.state.deps = deps
            yield

    app = FastAPI(title="floodgate example", lifespan=lifespan)

    @app.exception_handler(floodgate.FloodgateError)
    async def floodgate_error(request: Request, exc: floodgate.FloodgateError) -> JSONResponse:
        # The toolkit's one HTTP mapping: 429 overloaded, 503 circuit open, 504 deadline, 502 downstream.
        retry_after = floodgate.retry_after_header(exc)
        return JSONResponse(
            {"error": floodgate.error_body(exc)},
            status_code=exc.http_status,
            headers={"Retry-After": retry_after} if retry_after is not None else None,
        )

    @app.get("/answer")
    async def answer(
        q: str, request: Request, x_tenant: str = Header(default=floodgate.DEFAULT_TENANT)
    ) -> dict[str, Any]:
        deps: floodgate.Dependencies = request.app.state.deps
        degraded = floodgate.Degradations(registry=registry)
        with floodgate.deadline_after(deadline):  # expiry is DeadlineExceeded: a 504
            context = await floodgate.optional(
                "search",
                search,
                deps["search"],
                q,
                x_tenant,
                fallback=[],
                degradations=degraded,
                fallback_name="no_context",
            )
            response = await deps["llm"].request(
                "POST",
                "/v1/complete",
                json={"prompt": q, "context": context},
                tenant=x_tenant,
                idempotent=True,  # a completion can be asked again
            )
        return {"answer": response.json()["text"], "context": context, "degraded": degraded.as_list()}

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(
            prometheus_client.generate_latest(registry), media_type=prometheus_client.CONTENT_TYPE_LATEST
        )

    return app


async def search(dep: floodgate.Dependency, q: str, tenant: str) -> list[str]:
    response = await dep.request("GET", "/search", params={"q": q}, tenant=tenant)
    return [hit["text"] for hit in response.json()["hits"]]


def create_app_from_env() -> FastAPI:
    """For ``uvicorn app:create_app_from_env --factory``: the dependencies' URLs from SEARCH_URL and
    LLM_URL, read once here."""
    return create_app(base_urls={"search": os.environ["SEARCH_URL"], "llm": os.environ["LLM_URL"]})

"""The toolkit's smoke test, run by `test_wheel.py` inside a fresh virtual environment that holds only the
floodgate-toolkit wheel, its dependencies and trio: never imported by the project's own suite.

``python -I _smoke.py asyncio|trio`` checks that ``floodgate`` comes from the wheel and brought nothing of
the project with it (no asyncpg, no services), then makes guarded calls on that anyio backend: an HTTP
request through a dependency built from a small budget, a retried 503, a plain function behind a second
dependency, and a full gate refusing at once with ``Overloaded`` (429, ``Retry-After``). Prints
``smoke ok <backend>`` last.
"""

from __future__ import annotations

import importlib.util
import sys
import tomllib

import anyio
import anyio.lowlevel
import floodgate
import httpx
import prometheus_client

BUDGET = """
[deployment]
database_max_connections = 100    # required by the schema; this budget has no database

[services.app]
replicas = 1
workers = 1

[dependencies.search]
kind = "http"
global_concurrency = 4
shares = { app = 1.0 }
max_waiters = 4
max_wait = 0.5

[dependencies.search.retry]
backoff_base = 0.01
backoff_cap = 0.02

[dependencies.llm]
kind = "http"
global_concurrency = 1
shares = { app = 1.0 }
max_waiters = 0
max_wait = 0.5
"""

NOT_IN_THE_WHEEL = ("asyncpg", "trio_asyncio", "services", "chassis", "cluster", "tests")


def check_installed_alone() -> None:
    assert "site-packages" in (floodgate.__file__ or ""), floodgate.__file__
    present = [name for name in NOT_IN_THE_WHEEL if importlib.util.find_spec(name) is not None]
    assert not present, f"importable next to the wheel: {present}"
    assert "asyncpg" not in sys.modules


async def guarded_calls(backend: str) -> None:
    seen: list[httpx.Request] = []
    answers = [503, 200]

    def search(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(answers.pop(0), json={"q": request.url.params["q"]})

    budget = floodgate.parse_budget(tomllib.loads(BUDGET), source="smoke")
    registry = prometheus_client.CollectorRegistry()
    deps = floodgate.Dependencies.from_budget(
        budget,
        service="app",
        registry=registry,
        http_base_urls={"search": "http://search.test"},
        transport=httpx.MockTransport(search),
    )
    async with deps:
        with floodgate.deadline_after(5.0):
            response = await deps["search"].request("GET", "/q", params={"q": "gates"}, tenant="t1")
        assert response.json() == {"q": "gates"}
        assert len(seen) == 2, "the 503 is retried once"
        assert "x-floodgate-deadline-ms" in seen[-1].headers

        async def answer(question: str) -> str:
            await anyio.lowlevel.checkpoint()
            return question.upper()

        llm = deps["llm"]
        assert await llm.call(answer, "hi", tenant="t1") == "HI"

        # The llm gate holds one call and lets none wait: with its slot taken, the next call is
        # refused at once, before the function runs.
        async with llm.gate.slot(tenant="t2"):
            with anyio.fail_after(1.0):
                try:
                    await llm.call(answer, "too many", tenant="t1")
                except floodgate.Overloaded as exc:
                    refused = exc
                else:
                    raise AssertionError("a full gate let a call through")
        assert refused.http_status == 429 and refused.dependency == "llm"
        assert refused.retry_after is not None and refused.retry_after > 0
        assert floodgate.error_body(refused)["code"] == "overloaded"

        stats = deps.statistics()
        assert stats["search"].calls_total == 1 and stats["search"].failures_total == 0
        assert stats["llm"].gate.rejected_total == 1 and stats["llm"].gate.in_use == 0

    exposition = prometheus_client.generate_latest(registry).decode()
    assert 'floodgate_rejections_total{dependency="llm",reason="queue_full"} 1.0' in exposition, exposition
    print(f"smoke ok {backend}")


def main() -> None:
    backend = sys.argv[1]
    check_installed_alone()
    anyio.run(guarded_calls, backend, backend=backend)


if __name__ == "__main__":
    main()

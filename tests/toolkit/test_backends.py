"""The toolkit is written against anyio: the same primitives work under asyncio too."""

from __future__ import annotations

import anyio
import floodgate
import pytest

from .conftest import make_dependency


@pytest.mark.realtime
def test_guarded_call_gate_and_deadline_under_asyncio():
    async def main():
        dep = make_dependency(rng=lambda: 0.0)  # zero backoff: no real waiting
        outcomes = [floodgate.DependencyError("HTTP 503", status=503), "ok"]

        async def flaky():
            outcome = outcomes.pop(0)
            if isinstance(outcome, Exception):
                raise outcome
            return outcome

        assert await dep.call(flaky, idempotent=True) == "ok"
        gate = floodgate.Gate("g", 1, max_waiters=0, max_wait=0)
        async with gate.slot("a"):
            with pytest.raises(floodgate.Overloaded):
                await gate.acquire("b")
        with pytest.raises(floodgate.DeadlineExceeded):
            with floodgate.deadline_after(0.01):
                await anyio.sleep_forever()
        return dep.statistics()

    stats = anyio.run(main, backend="asyncio")
    assert stats.calls_total == 1 and stats.gate.in_use == 0

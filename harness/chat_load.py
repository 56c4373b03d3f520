"""Closed-loop chat callers against one LLM dependency, and its attempts as its metrics count them:
the load the adaptive-dependency test and `make bench-pushback` both put on the simulator."""

from __future__ import annotations

import floodgate
import trio
from prometheus_client import CollectorRegistry

__all__ = ["CHAT", "attempts", "closed_loop"]

CHAT = {"model": "sim-chat", "messages": [{"role": "user", "content": "Question: who acquired Norfield?"}]}


def attempts(registry: CollectorRegistry, dependency: str = "llm") -> tuple[float, float]:
    """The dependency's attempts so far: answered 200, answered 429."""
    value = registry.get_sample_value
    ok = value("floodgate_attempts_total", {"dependency": dependency, "outcome": "200"}) or 0.0
    refused = value("floodgate_attempts_total", {"dependency": dependency, "outcome": "429"}) or 0.0
    return ok, refused


async def closed_loop(llm: floodgate.Dependency, *, clients: int, until: float) -> None:
    """``clients`` callers, each calling again as soon as it has an answer (after Retry-After
    when refused), until ``until`` on the current clock."""

    async def client() -> None:
        while trio.current_time() < until:
            try:
                await llm.request("POST", "/v1/chat/completions", json=CHAT, idempotent=True)
            except floodgate.FloodgateError as exc:
                await trio.sleep(exc.retry_after or 0.1)

    async with trio.open_nursery() as nursery:
        for _ in range(clients):
            nursery.start_soon(client)

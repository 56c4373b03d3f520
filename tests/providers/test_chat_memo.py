"""The LLM client's memo: identical calls of one tenant within their TTL are paid once, each other
tenant pays its own, and what a reused answer did not spend is reported as saved. Time is trio's
virtual clock (the memo's expiry reads it)."""

from __future__ import annotations

import json
from typing import Any

import floodgate
import httpx
import pytest
import trio
from prometheus_client import CollectorRegistry
from providers import ChatModel, MalformedAnswer, TokenUsage, UsageMetrics

USAGE = {"prompt_tokens": 120, "completion_tokens": 30, "total_tokens": 150}


class CountingLLM:
    """A dependency that answers each chat request after ``latency`` seconds with ``content``
    and counts the requests, by tenant."""

    name = "llm"

    def __init__(self, content: str = "Norfield was acquired [1].", latency: float = 0.4) -> None:
        self.content = content
        self.latency = latency
        self.requests: list[str] = []

    async def request(self, method: str, url: str, *, tenant: str, **kwargs: Any) -> httpx.Response:
        self.requests.append(tenant)
        await trio.sleep(self.latency)
        return httpx.Response(200, json={"choices": [{"message": {"content": self.content}}], "usage": USAGE})


class Recorder:
    def __init__(self) -> None:
        self.spent: list[TokenUsage] = []
        self.saved: list[TokenUsage] = []

    def record(self, usage: TokenUsage) -> None:
        self.spent.append(usage)

    def record_saved(self, usage: TokenUsage) -> None:
        self.saved.append(usage)


def model(llm: CountingLLM, sink: Recorder | UsageMetrics) -> ChatModel:
    return ChatModel(llm, model="chat", usage=sink, memo=floodgate.TTLCache(300.0, 100, name="llm"))


async def test_the_same_question_twice_is_one_call_and_the_second_saves_its_tokens(autojump_clock) -> None:
    llm, sink = CountingLLM(), Recorder()
    chat = model(llm, sink)
    ask = {"instructions": "answer", "prompt": "[1] memo\n\nQuestion: who?", "endpoint": "deal_brain"}
    first = await chat.text(**ask, tenant="acme", cache_ttl=60.0)
    t0 = trio.current_time()
    second = await chat.text(**ask, tenant="acme", cache_ttl=60.0)
    assert first == second == llm.content
    assert trio.current_time() == t0  # no request: no latency
    assert llm.requests == ["acme"]
    assert sink.spent == [TokenUsage("llm", "chat", "deal_brain", "acme", 120, 30)]
    assert sink.saved == [TokenUsage("llm", "chat", "deal_brain", "acme", 120, 30)]


async def test_another_tenant_pays_its_own_call(autojump_clock) -> None:
    llm, sink = CountingLLM(), Recorder()
    chat = model(llm, sink)
    for tenant in ("acme", "rival", "acme", "rival"):
        await chat.text(instructions="answer", prompt="same words", tenant=tenant, cache_ttl=60.0)
    assert llm.requests == ["acme", "rival"]
    assert [u.tenant for u in sink.saved] == ["acme", "rival"]


async def test_a_different_prompt_or_no_ttl_is_a_new_call(autojump_clock) -> None:
    llm, sink = CountingLLM(), Recorder()
    chat = model(llm, sink)
    await chat.text(instructions="answer", prompt="one", tenant="acme", cache_ttl=60.0)
    await chat.text(instructions="answer", prompt="two", tenant="acme", cache_ttl=60.0)
    await chat.text(instructions="answer", prompt="one", tenant="acme", max_tokens=64, cache_ttl=60.0)
    await chat.text(instructions="answer", prompt="one", tenant="acme")  # the caller keeps nothing
    assert len(llm.requests) == 4 and sink.saved == []


async def test_the_answer_expires_after_its_ttl_on_the_virtual_clock(autojump_clock) -> None:
    llm, sink = CountingLLM(latency=0.0), Recorder()
    chat = model(llm, sink)
    ask = {"instructions": "answer", "prompt": "p", "tenant": "acme", "cache_ttl": 60.0}
    t0 = trio.current_time()
    await chat.text(**ask)
    await trio.sleep_until(t0 + 59.999)
    await chat.text(**ask)
    assert len(llm.requests) == 1
    await trio.sleep_until(t0 + 60.0)
    await chat.text(**ask)
    assert len(llm.requests) == 2
    assert len(sink.saved) == 1


async def test_identical_calls_in_flight_share_one_request_and_the_others_count_as_saved(
    autojump_clock,
) -> None:
    llm, sink = CountingLLM(), Recorder()
    chat = model(llm, sink)
    answers: list[str] = []

    async def ask() -> None:
        answers.append(await chat.text(instructions="answer", prompt="p", tenant="acme", cache_ttl=60.0))

    async with trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(ask)
    assert trio.current_time() == pytest.approx(0.4)
    assert llm.requests == ["acme"] and answers == [llm.content] * 5
    assert (len(sink.spent), len(sink.saved)) == (1, 4)


async def test_json_tasks_are_kept_and_each_caller_gets_its_own_object(autojump_clock) -> None:
    llm = CountingLLM(content=json.dumps({"queries": ["a", "b"]}))
    chat = model(llm, Recorder())
    ask = {"instructions": "expand", "prompt": "Subject: x", "tenant": "acme", "cache_ttl": 60.0}
    first = await chat.json_task("expand_queries", **ask)
    first["queries"].append("changed by the first caller")
    second = await chat.json_task("expand_queries", **ask)
    assert second == {"queries": ["a", "b"]}
    assert len(llm.requests) == 1


async def test_an_answer_that_does_not_parse_is_not_kept(autojump_clock) -> None:
    llm = CountingLLM(content="not json")
    chat = model(llm, Recorder())
    ask = {"instructions": "expand", "prompt": "Subject: x", "tenant": "acme", "cache_ttl": 60.0}
    for _ in range(2):
        with pytest.raises(MalformedAnswer, match="did not return JSON"):
            await chat.json_task("expand_queries", **ask)
    assert len(llm.requests) == 2


async def test_usage_metrics_count_the_saved_tokens_apart_from_the_spent(autojump_clock) -> None:
    registry = CollectorRegistry()
    llm = CountingLLM()
    chat = model(llm, UsageMetrics(registry=registry, prices={}))
    for _ in range(3):
        await chat.text(instructions="i", prompt="p", tenant="acme", endpoint="deal_brain", cache_ttl=60.0)
    labels = {"dependency": "llm", "endpoint": "deal_brain", "tenant": "acme"}

    def value(name: str, kind: str) -> float | None:
        return registry.get_sample_value(name, {**labels, "kind": kind})

    assert (value("floodgate_tokens_total", "prompt"), value("floodgate_tokens_total", "completion")) == (
        120,
        30,
    )
    assert value("floodgate_tokens_saved_total", "prompt") == 240
    assert value("floodgate_tokens_saved_total", "completion") == 60

"""The tokens a provider says a call used, and where the clients report them.

A chat completion answers with ``usage.prompt_tokens`` and ``usage.completion_tokens``, an
embeddings request with ``usage.prompt_tokens`` (and ``total_tokens``). `ChatModel` and `Embedder`
read them and report one `TokenUsage` per answered call to the `UsageSink` they were built with,
labelled with the endpoint their caller names. `UsageMetrics` is the sink the services use: token
counters and a cost estimate from the budget file's prices. A `ChatModel` call answered from its
cache spends nothing and reports what it saved instead (`UsageSink.record_saved`). This package
knows no service; a service hands its sink in.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import floodgate
from prometheus_client import CollectorRegistry, Counter

__all__ = [
    "UNKNOWN_ENDPOINT",
    "USAGE_COST_HEADER",
    "USAGE_TOKENS_HEADER",
    "RequestUsage",
    "TokenUsage",
    "UsageMetrics",
    "UsageSink",
    "metering_request",
    "read_usage",
]

#: The endpoint label of a call whose caller named none.
UNKNOWN_ENDPOINT = "unknown"


@dataclass(frozen=True, slots=True)
class TokenUsage:
    """What one answered call used: ``model`` as the client asked for it, ``endpoint`` the
    caller's (an online endpoint, or ``omnirag_ingest`` for the ingest worker)."""

    dependency: str
    model: str
    endpoint: str
    tenant: str
    prompt_tokens: int
    completion_tokens: int


class UsageSink(Protocol):
    """Where a client reports usage. Called on the event loop after each answer: it must not block."""

    def record(self, usage: TokenUsage) -> None: ...

    def record_saved(self, usage: TokenUsage) -> None:
        """A call answered from a cache: ``usage`` is what its answer cost when it was made."""
        ...


def _count(value: object) -> int | None:
    # bool is an int in Python; a provider's `true` is not a token count.
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def read_usage(data: Any, *, completion: bool) -> tuple[int, int] | None:
    """``(prompt_tokens, completion_tokens)`` from an answer's ``usage`` object (``completion``
    False: an embeddings answer, which has no completion tokens), or None when the answer has no
    usable ``usage``: the answer is still good, only its tokens go uncounted."""
    usage = data.get("usage") if isinstance(data, dict) else None
    if not isinstance(usage, dict):
        return None
    prompt = _count(usage.get("prompt_tokens"))
    if prompt is None:
        return None
    if not completion:
        return prompt, 0
    produced = _count(usage.get("completion_tokens"))
    return None if produced is None else (prompt, produced)


#: Response headers that carry what a request used to the gateway, which counts them against the
#: tenant's token and cost budgets and removes them (gateway/envoy.yaml: header_to_metadata).
USAGE_TOKENS_HEADER = "x-floodgate-usage-tokens"
USAGE_COST_HEADER = "x-floodgate-usage-cost-micros"


class RequestUsage:
    """What one request's calls used: LLM tokens (prompt + completion: what the token budgets count)
    and the estimated cost of every priced call, in US dollars."""

    __slots__ = ("cost_usd", "llm_tokens")

    def __init__(self) -> None:
        self.llm_tokens = 0
        self.cost_usd = 0.0

    def headers(self) -> dict[str, str]:
        """`USAGE_TOKENS_HEADER` and `USAGE_COST_HEADER` (micro-dollars, rounded up so a priced call
        never counts as free), each only when not zero: the gateway reports nothing for a request
        that used nothing."""
        headers = {}
        if self.llm_tokens:
            headers[USAGE_TOKENS_HEADER] = str(self.llm_tokens)
        if self.cost_usd > 0:
            headers[USAGE_COST_HEADER] = str(math.ceil(round(self.cost_usd * 1_000_000, 6)))
        return headers

    def __repr__(self) -> str:
        return f"<RequestUsage llm_tokens={self.llm_tokens} cost_usd={self.cost_usd:.6f}>"


# The request being served, where `UsageMetrics.record` adds each answer's usage. A context variable:
# the calls of one request run in its own task and in the tasks its nurseries start (which inherit
# the context), and concurrent requests never see each other's.
_current_request: contextvars.ContextVar[RequestUsage | None] = contextvars.ContextVar(
    "floodgate_request_usage", default=None
)


@contextlib.contextmanager
def metering_request() -> Iterator[RequestUsage]:
    """Count the usage that `UsageMetrics` records in this block (and the tasks it starts) into one
    `RequestUsage`, which stays readable after the block."""
    usage = RequestUsage()
    token = _current_request.set(usage)
    try:
        yield usage
    finally:
        _current_request.reset(token)


class UsageMetrics:
    """The services' `UsageSink`: ``floodgate_tokens_total{dependency,endpoint,tenant,kind}`` (kind
    ``prompt`` or ``completion``) and ``floodgate_cost_usd_total{dependency,endpoint,tenant}``, the
    tokens priced by ``prices`` (the budget file's ``[prices."<model>"]``). A model without a price
    adds no cost series: an estimate of 0 would read as "free". Within `metering_request`, each
    usage is also added to that request's `RequestUsage`. What cached answers saved goes to
    ``floodgate_tokens_saved_total{dependency,endpoint,tenant,kind}``."""

    def __init__(self, *, registry: CollectorRegistry, prices: Mapping[str, floodgate.ModelPrice]) -> None:
        self._prices = dict(prices)
        self.tokens = Counter(
            "floodgate_tokens",
            "Tokens the providers reported using, by dependency, endpoint, tenant and kind",
            ["dependency", "endpoint", "tenant", "kind"],
            registry=registry,
        )
        self.cost = Counter(
            "floodgate_cost_usd",
            "Estimated cost of those tokens in US dollars, from the budget file's prices",
            ["dependency", "endpoint", "tenant"],
            registry=registry,
        )
        self.tokens_saved = Counter(
            "floodgate_tokens_saved",
            "Tokens not spent because a cached answer was reused, by dependency, endpoint, tenant and kind",
            ["dependency", "endpoint", "tenant", "kind"],
            registry=registry,
        )

    def record(self, usage: TokenUsage) -> None:
        labels = (usage.dependency, usage.endpoint, usage.tenant)
        self.tokens.labels(*labels, "prompt").inc(usage.prompt_tokens)
        if usage.completion_tokens:
            self.tokens.labels(*labels, "completion").inc(usage.completion_tokens)
        price = self._prices.get(usage.model)
        cost = 0.0
        if price is not None:
            cost = price.cost(prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens)
            self.cost.labels(*labels).inc(cost)
        metered = _current_request.get()
        if metered is not None:
            if usage.dependency == "llm":
                metered.llm_tokens += usage.prompt_tokens + usage.completion_tokens
            metered.cost_usd += cost

    def record_saved(self, usage: TokenUsage) -> None:
        """Count what a cached answer saved (``floodgate_tokens_saved_total``); it spent nothing, so
        neither the token counters nor the request's usage change."""
        labels = (usage.dependency, usage.endpoint, usage.tenant)
        self.tokens_saved.labels(*labels, "prompt").inc(usage.prompt_tokens)
        if usage.completion_tokens:
            self.tokens_saved.labels(*labels, "completion").inc(usage.completion_tokens)

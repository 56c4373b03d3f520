"""The tokens a provider says a call used, and where the clients report them.

A chat completion answers with ``usage.prompt_tokens`` and ``usage.completion_tokens``, an
embeddings request with ``usage.prompt_tokens`` (and ``total_tokens``). `ChatModel` and `Embedder`
read them and report one `TokenUsage` per answered call to the `UsageSink` they were built with,
labelled with the endpoint their caller names. `UsageMetrics` is the sink the services use: token
counters and a cost estimate from the budget file's prices. This package knows no service; a
service hands its sink in.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import floodgate
from prometheus_client import CollectorRegistry, Counter

__all__ = ["UNKNOWN_ENDPOINT", "TokenUsage", "UsageMetrics", "UsageSink", "read_usage"]

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


class UsageMetrics:
    """The services' `UsageSink`: ``floodgate_tokens_total{dependency,endpoint,tenant,kind}`` (kind
    ``prompt`` or ``completion``) and ``floodgate_cost_usd_total{dependency,endpoint,tenant}``, the
    tokens priced by ``prices`` (the budget file's ``[prices."<model>"]``). A model without a price
    adds no cost series: an estimate of 0 would read as "free"."""

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

    def record(self, usage: TokenUsage) -> None:
        labels = (usage.dependency, usage.endpoint, usage.tenant)
        self.tokens.labels(*labels, "prompt").inc(usage.prompt_tokens)
        if usage.completion_tokens:
            self.tokens.labels(*labels, "completion").inc(usage.completion_tokens)
        price = self._prices.get(usage.model)
        if price is not None:
            self.cost.labels(*labels).inc(
                price.cost(prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens)
            )

"""An OpenAI-compatible chat completions endpoint (``POST /v1/chat/completions``)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

from ._client import DependencyClient, MalformedAnswer, Memo, json_body
from ._usage import UNKNOWN_ENDPOINT, TokenUsage, UsageSink, read_usage

__all__ = ["ChatModel", "task_prompt"]


def task_prompt(task: str, instructions: str) -> str:
    """The system message of a structured task. The ``floodgate-task:`` line tells the simulator
    which JSON shape to answer with; a real model reads the instructions that follow it."""
    return f"floodgate-task: {task}\n{instructions}"


class ChatModel:
    """Chat completions with ``model``: a structured task's JSON object, or plain text.

    Each answer's ``usage`` goes to ``usage`` (a `UsageSink`), labelled with the ``endpoint`` the
    caller names in the call (`UNKNOWN_ENDPOINT` when it names none).

    Identical work is not paid twice: a call given ``cache_ttl`` is answered from ``memo`` (a
    `floodgate.TTLCache`) when the same tenant asked the same model the same messages within that
    many seconds, and identical calls in flight share one (singleflight). The key holds the tenant:
    no tenant is served another's answer. The answer is deterministic enough to reuse (temperature
    0); a call that made no request reports the tokens it did not spend to ``usage.record_saved``.
    Only good answers are kept: a failure or an answer that does not parse is not cached.
    """

    def __init__(
        self,
        client: DependencyClient,
        *,
        model: str,
        usage: UsageSink | None = None,
        memo: Memo | None = None,
    ) -> None:
        self._client = client
        self.model = model
        self._usage = usage
        self._memo = memo

    async def _complete(
        self,
        messages: list[dict[str, str]],
        *,
        tenant: str,
        endpoint: str | None,
        json_mode: bool,
        max_tokens: int | None,
        cache_ttl: float | None,
        check: Callable[[str], object] | None = None,
    ) -> str:
        """The answer's content; through ``memo`` for ``cache_ttl`` seconds when both are given
        (``check`` validates an answer before it is kept: it raises on one that must not be)."""
        body: dict[str, Any] = {"model": self.model, "messages": messages, "temperature": 0}
        if json_mode:
            body["response_format"] = {"type": "json_object"}
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        endpoint = endpoint or UNKNOWN_ENDPOINT
        memo = self._memo
        if memo is None or cache_ttl is None:
            content, _ = await self._request(body, tenant, endpoint, check)
            return content
        # the body is everything the answer depends on (model, messages, format, length)
        digest = hashlib.blake2b(json.dumps(body, separators=(",", ":")).encode(), digest_size=20).hexdigest()
        requested = False

        async def request() -> tuple[str, tuple[int, int] | None]:
            nonlocal requested
            requested = True
            return await self._request(body, tenant, endpoint, check)

        content, tokens = await memo.get_or_load(("chat", tenant, digest), request, ttl=cache_ttl)
        if not requested and tokens is not None and self._usage is not None:
            self._usage.record_saved(TokenUsage(self._client.name, self.model, endpoint, tenant, *tokens))
        return content

    async def _request(
        self, body: dict[str, Any], tenant: str, endpoint: str, check: Callable[[str], object] | None
    ) -> tuple[str, tuple[int, int] | None]:
        # temperature 0 and no side effects: repeating a completion is safe.
        response = await self._client.request(
            "POST", "/v1/chat/completions", json=body, tenant=tenant, idempotent=True
        )
        data = json_body(response, self._client.name)
        tokens = read_usage(data, completion=True)
        if self._usage is not None and tokens is not None:
            self._usage.record(TokenUsage(self._client.name, self.model, endpoint, tenant, *tokens))
        try:
            content = data["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise MalformedAnswer("no choices[0].message.content", dependency=self._client.name) from None
        if not isinstance(content, str):
            raise MalformedAnswer("message content is not text", dependency=self._client.name)
        if check is not None:
            check(content)
        return content, tokens

    def _json_object(self, task: str, content: str) -> dict[str, Any]:
        try:
            value = json.loads(content)
        except ValueError:
            raise MalformedAnswer(f"{task} did not return JSON", dependency=self._client.name) from None
        if not isinstance(value, dict):
            raise MalformedAnswer(f"{task} did not return a JSON object", dependency=self._client.name)
        return value

    async def json_task(
        self,
        task: str,
        *,
        instructions: str,
        prompt: str,
        tenant: str,
        endpoint: str | None = None,
        cache_ttl: float | None = None,
    ) -> dict[str, Any]:
        """Run a structured task and return its JSON object (a fresh one, also from the cache)."""
        messages = [
            {"role": "system", "content": task_prompt(task, instructions)},
            {"role": "user", "content": prompt},
        ]

        def check(content: str) -> None:
            self._json_object(task, content)

        content = await self._complete(
            messages,
            tenant=tenant,
            endpoint=endpoint,
            json_mode=True,
            max_tokens=None,
            cache_ttl=cache_ttl,
            check=check if cache_ttl is not None else None,  # parsed once when nothing is kept
        )
        return self._json_object(task, content)

    async def text(
        self,
        *,
        instructions: str,
        prompt: str,
        tenant: str,
        endpoint: str | None = None,
        max_tokens: int = 512,
        cache_ttl: float | None = None,
    ) -> str:
        """A plain answer of at most ``max_tokens``."""
        messages = [
            {"role": "system", "content": task_prompt("answer", instructions)},
            {"role": "user", "content": prompt},
        ]
        return await self._complete(
            messages,
            tenant=tenant,
            endpoint=endpoint,
            json_mode=False,
            max_tokens=max_tokens,
            cache_ttl=cache_ttl,
        )

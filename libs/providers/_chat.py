"""An OpenAI-compatible chat completions endpoint (``POST /v1/chat/completions``)."""

from __future__ import annotations

import json
from typing import Any

from ._client import DependencyClient, MalformedAnswer, json_body
from ._usage import UNKNOWN_ENDPOINT, TokenUsage, UsageSink, read_usage

__all__ = ["ChatModel", "task_prompt"]


def task_prompt(task: str, instructions: str) -> str:
    """The system message of a structured task. The ``floodgate-task:`` line tells the simulator
    which JSON shape to answer with; a real model reads the instructions that follow it."""
    return f"floodgate-task: {task}\n{instructions}"


class ChatModel:
    """Chat completions with ``model``: a structured task's JSON object, or plain text.

    Each answer's ``usage`` goes to ``usage`` (a `UsageSink`), labelled with the ``endpoint`` the
    caller names in the call (`UNKNOWN_ENDPOINT` when it names none)."""

    def __init__(self, client: DependencyClient, *, model: str, usage: UsageSink | None = None) -> None:
        self._client = client
        self.model = model
        self._usage = usage

    async def _complete(
        self,
        messages: list[dict[str, str]],
        *,
        tenant: str,
        endpoint: str | None,
        json_mode: bool,
        max_tokens: int | None,
    ) -> str:
        body: dict[str, Any] = {"model": self.model, "messages": messages, "temperature": 0}
        if json_mode:
            body["response_format"] = {"type": "json_object"}
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        # temperature 0 and no side effects: repeating a completion is safe.
        response = await self._client.request(
            "POST", "/v1/chat/completions", json=body, tenant=tenant, idempotent=True
        )
        data = json_body(response, self._client.name)
        if self._usage is not None and (tokens := read_usage(data, completion=True)) is not None:
            self._usage.record(
                TokenUsage(self._client.name, self.model, endpoint or UNKNOWN_ENDPOINT, tenant, *tokens)
            )
        try:
            content = data["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise MalformedAnswer("no choices[0].message.content", dependency=self._client.name) from None
        if not isinstance(content, str):
            raise MalformedAnswer("message content is not text", dependency=self._client.name)
        return content

    async def json_task(
        self, task: str, *, instructions: str, prompt: str, tenant: str, endpoint: str | None = None
    ) -> dict[str, Any]:
        """Run a structured task and return its JSON object."""
        messages = [
            {"role": "system", "content": task_prompt(task, instructions)},
            {"role": "user", "content": prompt},
        ]
        content = await self._complete(
            messages, tenant=tenant, endpoint=endpoint, json_mode=True, max_tokens=None
        )
        try:
            value = json.loads(content)
        except ValueError:
            raise MalformedAnswer(f"{task} did not return JSON", dependency=self._client.name) from None
        if not isinstance(value, dict):
            raise MalformedAnswer(f"{task} did not return a JSON object", dependency=self._client.name)
        return value

    async def text(
        self,
        *,
        instructions: str,
        prompt: str,
        tenant: str,
        endpoint: str | None = None,
        max_tokens: int = 512,
    ) -> str:
        """A plain answer of at most ``max_tokens``."""
        messages = [
            {"role": "system", "content": task_prompt("answer", instructions)},
            {"role": "user", "content": prompt},
        ]
        return await self._complete(
            messages, tenant=tenant, endpoint=endpoint, json_mode=False, max_tokens=max_tokens
        )

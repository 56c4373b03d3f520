"""The simulated provider APIs, in their real wire formats (blueprint ``simulator_api``).

=====================================  ==========  ==================================================
route                                  behaviour   format
=====================================  ==========  ==================================================
``POST /v1/chat/completions``          chat        OpenAI chat completions, ``stream: true`` as SSE
``POST /v1/embeddings``                embeddings  OpenAI embeddings (float or base64)
``POST /v1/rerank``                    rerank      Cohere v2 / Jina rerank
``GET  /v1/search?q=&count=&offset=``  search      Brave-style query parameters, flat results
``GET  /v1/fetch?url=``                fetch       ``{url, title, text}`` of a corpus document
``GET  /v1/models``                    (none)      OpenAI model list
=====================================  ==========  ==================================================

Bad input gets a 400 in the OpenAI error shape naming the offending ``param``.
"""

from __future__ import annotations

import json
import time
from typing import Any

from quart import Blueprint, Response, jsonify, request

from ._chat import complete, message_text, read_prompt
from ._embedding import DEFAULT_DIMENSIONS, embed, encode_base64
from ._exchange import SimulatedError, SseStream, simulate, simulator_state
from ._rerank import rerank
from ._text import count_tokens

__all__ = ["SEARCH_MAX_COUNT", "simulator_api"]

simulator_api = Blueprint("simulator_api", __name__)

SEARCH_MAX_COUNT = 20
SEARCH_MAX_QUERY_CHARS = 400
EMBEDDINGS_MAX_INPUTS = 2048
RERANK_MAX_DOCUMENTS = 1000
_ROLES = {"system", "developer", "user", "assistant", "tool"}
_STREAM_WORDS_PER_CHUNK = 3


def _bad(param: str, message: str) -> SimulatedError:
    return SimulatedError(400, "invalid_request", message, param=param)


async def _json_body() -> dict[str, Any]:
    raw = await request.get_data(cache=True)
    try:
        body = json.loads(raw or b"null")
    except (ValueError, UnicodeDecodeError) as exc:
        raise SimulatedError(400, "invalid_json", f"request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise SimulatedError(400, "invalid_json", "request body must be a JSON object")
    return body


def _model(body: dict[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise _bad("model", "'model' is required and must be a non-empty string")
    return model


def _optional_int(body: dict[str, Any], name: str, low: int, high: int) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _bad(name, f"'{name}' must be an integer from {low} to {high}")
    return value


# -- chat --------------------------------------------------------------------------------------------


@simulator_api.post("/v1/chat/completions")
async def chat_completions() -> Response:
    return await simulate("chat", _chat)


async def _chat() -> Response | SseStream:
    body = await _json_body()
    model = _model(body)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _bad("messages", "'messages' must be a non-empty array")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in _ROLES:
            raise _bad(f"messages[{i}].role", f"messages[{i}] needs a role, one of {sorted(_ROLES)}")
        if not isinstance(m.get("content"), str | list | None):
            raise _bad(
                f"messages[{i}].content", f"messages[{i}].content must be a string or an array of parts"
            )
    response_format = body.get("response_format")
    if response_format is not None and (
        not isinstance(response_format, dict)
        or response_format.get("type") not in ("text", "json_object", "json_schema")
    ):
        raise _bad("response_format", "'response_format.type' must be text, json_object or json_schema")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise _bad("stream", "'stream' must be a boolean")
    n = _optional_int(body, "n", 1, 8) or 1
    max_tokens = _optional_int(body, "max_completion_tokens", 1, 1_000_000) or _optional_int(
        body, "max_tokens", 1, 1_000_000
    )

    prompt = read_prompt(messages, response_format)
    prompt_tokens = sum(count_tokens(message_text(m.get("content"))) for m in messages)
    completion = complete(prompt, max_tokens=max_tokens, prompt_tokens=prompt_tokens)
    usage = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion.completion_tokens * n,
        "total_tokens": prompt_tokens + completion.completion_tokens * n,
    }
    ident = simulator_state().next_id("chatcmpl")
    created = int(time.time())
    base = {"id": ident, "created": created, "model": model, "system_fingerprint": "fp_floodgate_sim"}

    if not stream:
        choices = [
            {
                "index": i,
                "message": {"role": "assistant", "content": completion.content, "refusal": None},
                "logprobs": None,
                "finish_reason": completion.finish_reason,
            }
            for i in range(n)
        ]
        return jsonify({**base, "object": "chat.completion", "choices": choices, "usage": usage})

    chunk = {**base, "object": "chat.completion.chunk"}
    events: list[dict[str, Any]] = []
    words = completion.content.split(" ")
    pieces = [
        " ".join(words[i : i + _STREAM_WORDS_PER_CHUNK])
        + (" " if i + _STREAM_WORDS_PER_CHUNK < len(words) else "")
        for i in range(0, len(words), _STREAM_WORDS_PER_CHUNK)
    ]
    for i in range(n):
        events.append(
            {
                **chunk,
                "choices": [
                    {"index": i, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
                ],
            }
        )
        for piece in pieces:
            events.append(
                {**chunk, "choices": [{"index": i, "delta": {"content": piece}, "finish_reason": None}]}
            )
        events.append(
            {**chunk, "choices": [{"index": i, "delta": {}, "finish_reason": completion.finish_reason}]}
        )
    options = body.get("stream_options") or {}
    if isinstance(options, dict) and options.get("include_usage"):
        events.append({**chunk, "choices": [], "usage": usage})
    return SseStream(events)


# -- embeddings --------------------------------------------------------------------------------------


@simulator_api.post("/v1/embeddings")
async def embeddings() -> Response:
    return await simulate("embeddings", _embeddings)


async def _embeddings() -> Response:
    body = await _json_body()
    model = _model(body)
    raw = body.get("input")
    inputs = [raw] if isinstance(raw, str) else raw
    if not isinstance(inputs, list) or not inputs or len(inputs) > EMBEDDINGS_MAX_INPUTS:
        raise _bad("input", f"'input' must be a string or an array of 1 to {EMBEDDINGS_MAX_INPUTS} strings")
    for i, text in enumerate(inputs):
        if not isinstance(text, str) or not text.strip():
            raise _bad("input", f"input[{i}] must be a non-empty string (token arrays are not supported)")
    dimensions = _optional_int(body, "dimensions", 1, 4096) or DEFAULT_DIMENSIONS
    encoding = body.get("encoding_format", "float")
    if encoding not in ("float", "base64"):
        raise _bad("encoding_format", "'encoding_format' must be 'float' or 'base64'")
    data = []
    for i, text in enumerate(inputs):
        vector = embed(text, dimensions)
        data.append(
            {
                "object": "embedding",
                "index": i,
                "embedding": encode_base64(vector) if encoding == "base64" else vector,
            }
        )
    tokens = sum(count_tokens(t) for t in inputs)
    return jsonify(
        {
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
    )


# -- rerank ------------------------------------------------------------------------------------------


@simulator_api.post("/v1/rerank")
async def rerank_route() -> Response:
    return await simulate("rerank", _rerank)


async def _rerank() -> Response:
    body = await _json_body()
    model = _model(body)
    query = body.get("query")
    if not isinstance(query, str) or not query.strip():
        raise _bad("query", "'query' must be a non-empty string")
    documents = body.get("documents")
    if not isinstance(documents, list) or not documents or len(documents) > RERANK_MAX_DOCUMENTS:
        raise _bad("documents", f"'documents' must be an array of 1 to {RERANK_MAX_DOCUMENTS} documents")
    texts = []
    for i, doc in enumerate(documents):
        text = doc.get("text") if isinstance(doc, dict) else doc
        if not isinstance(text, str):
            raise _bad(
                f"documents[{i}]", f"documents[{i}] must be a string or an object with a 'text' string"
            )
        texts.append(text)
    top_n = _optional_int(body, "top_n", 1, RERANK_MAX_DOCUMENTS)
    return_documents = body.get("return_documents", True)
    if not isinstance(return_documents, bool):
        raise _bad("return_documents", "'return_documents' must be a boolean")
    results = []
    for ranked in rerank(query, texts, top_n):
        item: dict[str, Any] = {"index": ranked.index, "relevance_score": ranked.relevance_score}
        if return_documents:
            item["document"] = {"text": texts[ranked.index]}
        results.append(item)
    tokens = count_tokens(query) * len(texts) + sum(count_tokens(t) for t in texts)
    return jsonify(
        {
            "id": simulator_state().next_id("rerank"),
            "model": model,
            "results": results,
            "usage": {"total_tokens": tokens},
            "meta": {"billed_units": {"search_units": 1}},
        }
    )


# -- search and fetch ---------------------------------------------------------------------------------


def _query_int(name: str, default: int, low: int, high: int) -> int:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise _bad(name, f"'{name}' must be an integer from {low} to {high}") from None
    if not low <= value <= high:
        raise _bad(name, f"'{name}' must be an integer from {low} to {high}")
    return value


@simulator_api.get("/v1/search")
async def search() -> Response:
    return await simulate("search", _search)


async def _search() -> Response:
    query = request.args.get("q", "").strip()
    if not query or len(query) > SEARCH_MAX_QUERY_CHARS:
        raise _bad("q", f"'q' must be a non-empty query of at most {SEARCH_MAX_QUERY_CHARS} characters")
    count = _query_int("count", 10, 1, SEARCH_MAX_COUNT)
    offset = _query_int("offset", 0, 0, 1000)
    total, hits = simulator_state().corpus.search(query, count=count, offset=offset)
    results = [
        {
            "rank": offset + i + 1,
            "title": hit.document.title,
            "url": hit.document.url,
            "snippet": hit.snippet,
            "published": hit.document.published,
            "score": hit.score,
        }
        for i, hit in enumerate(hits)
    ]
    return jsonify({"query": query, "count": count, "offset": offset, "total": total, "results": results})


@simulator_api.get("/v1/fetch")
async def fetch() -> Response:
    return await simulate("fetch", _fetch)


async def _fetch() -> Response:
    url = request.args.get("url", "").strip()
    if not url:
        raise _bad("url", "'url' is required")
    # A fragment names a part of the page: a real fetch never sends it, so the same page answers.
    document = simulator_state().corpus.get(url.split("#", 1)[0])
    if document is None:
        raise SimulatedError(404, "not_found", f"no document at {url!r} in the simulated web", param="url")
    return jsonify(
        {
            "url": document.url,
            "title": document.title,
            "text": document.text,
            "published": document.published,
            "content_type": "text/plain",
        }
    )


@simulator_api.get("/v1/models")
async def models() -> Response:
    names = ["sim-chat-1", "sim-embed-384", "sim-rerank-1"]
    return jsonify(
        {
            "object": "list",
            "data": [{"id": n, "object": "model", "created": 0, "owned_by": "floodgate"} for n in names],
        }
    )

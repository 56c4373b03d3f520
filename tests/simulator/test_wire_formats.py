"""Each simulated API speaks its provider's wire format, and its answers make sense."""

from __future__ import annotations

import base64
import json
import math
import struct

from services.simulator import CORPUS_BASE_URL

from .conftest import chat_body, post_streaming

PASSAGES = (
    "Sources:\n"
    "[1] Aldercrest Robotics agreed to acquire Norfield Analytics for $420 million. The deal closes in May.\n"
    "[2] Berlin had a sunny weekend. Norfield Analytics sells dashboards to retailers.\n"
    "\n"
    "Question: How much did Aldercrest Robotics pay to acquire Norfield Analytics?"
)


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


# -- chat --------------------------------------------------------------------------------------------


async def test_chat_answer_picks_context_sentences_and_cites_passages(client) -> None:
    response = await client.post(
        "/v1/chat/completions", json=chat_body(PASSAGES, system="floodgate-task: answer")
    )
    assert response.status_code == 200
    body = await response.get_json()
    assert body["object"] == "chat.completion"
    assert body["model"] == "sim-chat"
    assert body["id"].startswith("chatcmpl-")
    [choice] = body["choices"]
    assert choice["finish_reason"] == "stop"
    assert choice["message"]["role"] == "assistant"
    content = choice["message"]["content"]
    assert content.startswith(
        "Aldercrest Robotics agreed to acquire Norfield Analytics for $420 million. [1]"
    )
    assert "sunny" not in content
    usage = body["usage"]
    assert usage["prompt_tokens"] > 20
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


async def test_chat_is_deterministic(client) -> None:
    first = await (await client.post("/v1/chat/completions", json=chat_body(PASSAGES))).get_json()
    second = await (await client.post("/v1/chat/completions", json=chat_body(PASSAGES))).get_json()
    assert first["choices"][0]["message"]["content"] == second["choices"][0]["message"]["content"]


async def test_chat_without_matching_context_says_so(client) -> None:
    prompt = "[1] The weather was mild.\n\nQuestion: Who acquired Norfield?"
    body = await (await client.post("/v1/chat/completions", json=chat_body(prompt))).get_json()
    assert body["choices"][0]["message"]["content"] == "The provided context does not answer the question."


async def test_chat_max_tokens_cuts_the_answer(client) -> None:
    body = await (
        await client.post("/v1/chat/completions", json=chat_body(PASSAGES, max_tokens=4))
    ).get_json()
    assert body["choices"][0]["finish_reason"] == "length"
    assert len(body["choices"][0]["message"]["content"].split()) == 4


async def test_chat_stream_is_sse_ending_with_done(client) -> None:
    request = chat_body(PASSAGES, stream=True, stream_options={"include_usage": True})
    status, headers, data = await post_streaming(client, "/v1/chat/completions", request)
    assert status == 200
    assert headers["content-type"].startswith("text/event-stream")
    raw = data.decode()
    events = [block for block in raw.split("\n\n") if block]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"
    chunks = [json.loads(e[len("data: ") :]) for e in events[:-1]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0
    plain = await (await client.post("/v1/chat/completions", json=chat_body(PASSAGES))).get_json()
    assert text == plain["choices"][0]["message"]["content"]


async def test_chat_json_tasks(client) -> None:
    async def ask(system: str, user: str, **extra) -> dict:
        response = await client.post(
            "/v1/chat/completions",
            json=chat_body(user, system=system, response_format={"type": "json_object"}, **extra),
        )
        assert response.status_code == 200
        return json.loads((await response.get_json())["choices"][0]["message"]["content"])

    queries = await ask(
        "floodgate-task: expand_queries\nWrite 4 search queries.", "Subject: Aldercrest Robotics"
    )
    assert queries["queries"][0] == "Aldercrest Robotics"
    assert len(queries["queries"]) == 4 and len(set(queries["queries"])) == 4

    findings = await ask("floodgate-task: extract_findings", PASSAGES)
    assert findings["findings"][0]["sources"] == [1]
    assert "$420 million" in findings["findings"][0]["claim"]
    assert all(0 < f["confidence"] <= 1 for f in findings["findings"])

    score = await ask("floodgate-task: score_criterion", "Criterion: strong balance sheet\n\n" + PASSAGES)
    assert isinstance(score["score"], int) and 0 <= score["score"] <= 10
    assert score["rationale"]
    assert score == await ask(
        "floodgate-task: score_criterion", "Criterion: strong balance sheet\n\n" + PASSAGES
    )

    answer = await ask("floodgate-task: answer", PASSAGES)
    assert answer["citations"][0] == 1 and "$420 million" in answer["answer"]


async def test_chat_json_task_is_inferred_without_the_task_line(client) -> None:
    response = await client.post(
        "/v1/chat/completions",
        json=chat_body("Score the subject against this rubric.", response_format={"type": "json_object"}),
    )
    content = json.loads((await response.get_json())["choices"][0]["message"]["content"])
    assert set(content) == {"score", "rationale"}


async def test_chat_scores_spread_over_the_range(client) -> None:
    scores = set()
    for i in range(30):
        body = chat_body(f"Criterion: criterion number {i}", system="floodgate-task: score_criterion")
        content = (await (await client.post("/v1/chat/completions", json=body)).get_json())["choices"][0]
        scores.add(json.loads(content["message"]["content"])["score"])
    assert len(scores) >= 6


async def test_chat_bad_input_names_the_param(client) -> None:
    cases = [
        ({"messages": [{"role": "user", "content": "hi"}]}, "model"),
        ({"model": "m", "messages": []}, "messages"),
        ({"model": "m", "messages": [{"role": "robot", "content": "hi"}]}, "messages[0].role"),
        (
            {
                "model": "m",
                "messages": [{"role": "user", "content": "x"}],
                "response_format": {"type": "xml"},
            },
            "response_format",
        ),
    ]
    for body, param in cases:
        response = await client.post("/v1/chat/completions", json=body)
        assert response.status_code == 400, body
        error = (await response.get_json())["error"]
        assert error["param"] == param
        assert error["type"] == "invalid_request_error"
        assert error["code"] == "invalid_request" and error["message"]
    response = await client.post(
        "/v1/chat/completions", data=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert (await response.get_json())["error"]["code"] == "invalid_json"


# -- embeddings --------------------------------------------------------------------------------------


async def embed(client, inputs, **extra) -> list:
    response = await client.post("/v1/embeddings", json={"model": "sim-embed-384", "input": inputs, **extra})
    assert response.status_code == 200
    return await response.get_json()


async def test_embeddings_wire_format_and_unit_vectors(client) -> None:
    body = await embed(client, ["first text", "second text"])
    assert body["object"] == "list" and body["model"] == "sim-embed-384"
    assert [d["index"] for d in body["data"]] == [0, 1]
    assert all(d["object"] == "embedding" for d in body["data"])
    for d in body["data"]:
        assert len(d["embedding"]) == 384
        assert math.isclose(math.sqrt(sum(v * v for v in d["embedding"])), 1.0)
    assert body["usage"] == {"prompt_tokens": 4, "total_tokens": 4}
    single = await embed(client, "first text")
    assert single["data"][0]["embedding"] == body["data"][0]["embedding"]


async def test_embeddings_similar_texts_are_closer_than_unrelated(client) -> None:
    texts = [
        "Aldercrest Robotics acquires Norfield Analytics in a cash deal",
        "Norfield Analytics acquired by Aldercrest Robotics",
        "Heavy rain expected in Lisbon this weekend",
    ]
    a, b, c = (d["embedding"] for d in (await embed(client, texts))["data"])
    assert cosine(a, b) > 0.5
    assert abs(cosine(a, c)) < 0.2
    assert cosine(a, b) > cosine(a, c) + 0.4


async def test_embeddings_base64_and_dimensions(client) -> None:
    floats = (await embed(client, "grid-scale batteries"))["data"][0]["embedding"]
    encoded = (await embed(client, "grid-scale batteries", encoding_format="base64"))["data"][0]["embedding"]
    decoded = struct.unpack("<384f", base64.b64decode(encoded))
    assert all(math.isclose(x, y, rel_tol=1e-6) for x, y in zip(decoded, floats, strict=True))
    small = (await embed(client, "grid-scale batteries", dimensions=64))["data"][0]["embedding"]
    assert len(small) == 64


async def test_embeddings_bad_input(client) -> None:
    for bad in ("", [], ["ok", ""], [1, 2, 3]):
        response = await client.post("/v1/embeddings", json={"model": "m", "input": bad})
        assert response.status_code == 400, bad
        assert (await response.get_json())["error"]["param"] == "input"


# -- rerank ------------------------------------------------------------------------------------------


async def test_rerank_orders_by_term_overlap(client) -> None:
    documents = [
        "Lisbon weather is mild in spring.",
        {"text": "Aldercrest Robotics builds warehouse robots."},
        "Aldercrest Robotics agreed to acquire Norfield Analytics; the acquisition closes in May.",
    ]
    response = await client.post(
        "/v1/rerank",
        json={
            "model": "sim-rerank",
            "query": "Aldercrest Robotics acquisition",
            "documents": documents,
            "top_n": 2,
        },
    )
    assert response.status_code == 200
    body = await response.get_json()
    assert [r["index"] for r in body["results"]] == [2, 1]
    top, second = body["results"]
    assert 1.0 >= top["relevance_score"] > second["relevance_score"] > 0
    assert top["document"] == {"text": documents[2]}
    assert body["model"] == "sim-rerank" and body["usage"]["total_tokens"] > 0
    assert body["meta"]["billed_units"]["search_units"] == 1

    everything = await (
        await client.post(
            "/v1/rerank",
            json={
                "model": "m",
                "query": "Aldercrest Robotics acquisition",
                "documents": documents,
                "return_documents": False,
            },
        )
    ).get_json()
    assert [r["index"] for r in everything["results"]] == [2, 1, 0]
    assert everything["results"][2]["relevance_score"] == 0
    assert "document" not in everything["results"][0]


async def test_rerank_bad_input(client) -> None:
    response = await client.post(
        "/v1/rerank", json={"model": "m", "query": "q", "documents": [{"title": "x"}]}
    )
    assert response.status_code == 400
    assert (await response.get_json())["error"]["param"] == "documents[0]"


# -- search and fetch ----------------------------------------------------------------------------------


async def test_search_returns_relevant_corpus_documents(client) -> None:
    response = await client.get(
        "/v1/search", query_string={"q": "Aldercrest Robotics acquisition", "count": 5}
    )
    assert response.status_code == 200
    body = await response.get_json()
    assert body["query"] == "Aldercrest Robotics acquisition"
    assert body["total"] > 5 and len(body["results"]) == 5
    assert [r["rank"] for r in body["results"]] == [1, 2, 3, 4, 5]
    scores = [r["score"] for r in body["results"]]
    assert scores == sorted(scores, reverse=True)
    for result in body["results"]:
        assert set(result) >= {"title", "url", "snippet"}
        assert result["url"].startswith(CORPUS_BASE_URL)
        assert "Aldercrest Robotics" in result["title"]
    assert "acqui" in body["results"][0]["title"] + body["results"][0]["snippet"]

    page2 = await (
        await client.get(
            "/v1/search", query_string={"q": "Aldercrest Robotics acquisition", "count": 5, "offset": 5}
        )
    ).get_json()
    assert page2["results"][0]["rank"] == 6
    assert not {r["url"] for r in page2["results"]} & {r["url"] for r in body["results"]}


async def test_search_without_matches_and_bad_params(client) -> None:
    empty = await (await client.get("/v1/search", query_string={"q": "zzzqqq"})).get_json()
    assert empty["results"] == [] and empty["total"] == 0
    for params, param in (
        ({}, "q"),
        ({"q": "x", "count": "0"}, "count"),
        ({"q": "x", "count": "abc"}, "count"),
    ):
        response = await client.get("/v1/search", query_string=params)
        assert response.status_code == 400
        assert (await response.get_json())["error"]["param"] == param


async def test_fetch_returns_a_search_result_and_404s_elsewhere(client) -> None:
    hit = (await (await client.get("/v1/search", query_string={"q": "vector databases"})).get_json())[
        "results"
    ][0]
    response = await client.get("/v1/fetch", query_string={"url": hit["url"]})
    assert response.status_code == 200
    doc = await response.get_json()
    assert doc["url"] == hit["url"] and doc["title"] == hit["title"]
    assert hit["snippet"].rstrip("…")[:60] in doc["text"]
    assert len(doc["text"]) > 300

    # a fragment is the client's: the same page answers (load tests make each job's URL unique by it)
    fragment = await client.get("/v1/fetch", query_string={"url": hit["url"] + "#loadtest-7"})
    assert fragment.status_code == 200 and (await fragment.get_json())["text"] == doc["text"]

    missing = await client.get("/v1/fetch", query_string={"url": "https://example.com/nope"})
    assert missing.status_code == 404
    assert (await missing.get_json())["error"]["code"] == "not_found"
    assert (await client.get("/v1/fetch")).status_code == 400


async def test_models_and_chassis_probes(client) -> None:
    models = await (await client.get("/v1/models")).get_json()
    assert "sim-chat-1" in {m["id"] for m in models["data"]}
    assert (await client.get("/healthz")).status_code == 200
    assert (await client.get("/readyz")).status_code == 200
    metrics = await (await client.get("/metrics")).get_data()
    assert b"http_requests" in metrics

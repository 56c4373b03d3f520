"""A deterministic stand-in for an LLM: answers are picked from the prompt, never invented.

How a prompt is read:

* **Task** — a line ``floodgate-task: <name>`` anywhere in the system message (or, failing that,
  in any message) picks the answer's shape. Without it, a JSON request (``response_format`` of type
  ``json_object`` or ``json_schema``) whose prompt mentions score/rubric, expand+queries or
  extract+findings is treated as that task; anything else is ``answer``.
* **Passages** — lines starting with ``[n]`` (``[1] Title: text...``) are numbered sources; a
  passage runs until the next ``[n]`` line or a blank line followed by a label such as ``Question:``.
* **Question** — the text after a ``Question:``/``Query:``/``Subject:``/``Criterion:`` label in the
  last user message; otherwise that message's last paragraph.

Tasks (the JSON shapes are what Floodgate's online endpoints parse):

``answer``
    Up to three context sentences sharing the most content words with the question, in their
    original order, each followed by its passage marker (``[2]``). Plain text; with JSON mode on,
    ``{"answer": str, "citations": [int]}``.
``expand_queries``
    ``{"queries": [str, ...]}``: the subject, then the subject with fixed angles (news, deals,
    market...). The count comes from "N queries" in the prompt (default 3, at most 10).
``extract_findings``
    ``{"findings": [{"claim": str, "sources": [int], "confidence": float}]}``: up to five sentences
    of the passages that share words with the question, best first.
``score_criterion``
    ``{"score": int 0-10, "rationale": str}``: the score is a hash of the prompt, so it is stable
    for a prompt and spread over the range across prompts.

These three JSON tasks always answer JSON, whatever ``response_format`` says.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from ._text import content_words, count_tokens, sentence_words, text_cache

__all__ = ["TASKS", "ChatPrompt", "Completion", "complete", "read_prompt"]

TASKS = ("answer", "expand_queries", "extract_findings", "score_criterion")

_TASK_RE = re.compile(r"^\s*floodgate-task:\s*([A-Za-z0-9_-]+)\s*$", re.MULTILINE | re.IGNORECASE)
_PASSAGE_RE = re.compile(r"^\s*\[(\d{1,3})\]\s*(.*)$")
_LABEL_RE = re.compile(r"^\s*(question|query|subject|criterion|topic)\s*:\s*(.*)$", re.IGNORECASE)
_COUNT_RE = re.compile(r"\b(\d{1,2})\s+(?:\w+\s+)?(?:search\s+)?quer(?:y|ies)\b", re.IGNORECASE)
# The passages quoted in prompts repeat across calls (the top documents for a topic), so each one's
# sentences and their words are computed once.
_sentence_words = text_cache(sentence_words)
_ANGLES = (
    "latest news",
    "acquisition deal",
    "market analysis",
    "funding round",
    "earnings results",
    "partnership",
    "regulatory inquiry",
    "leadership change",
    "technology launch",
)


@dataclass(frozen=True)
class ChatPrompt:
    task: str
    json_mode: bool
    question: str
    passages: tuple[tuple[int, str], ...]  # (number, text)
    context: str  # unnumbered context, when there are no passages
    query_count: int  # "N queries" found anywhere in the prompt, for expand_queries (default 3)
    fingerprint: str  # stable hash of every message


@dataclass(frozen=True)
class Completion:
    content: str
    finish_reason: str  # "stop" or "length"
    prompt_tokens: int
    completion_tokens: int


def message_text(content: Any) -> str:
    """A message's text: a string, or the ``text`` parts of an OpenAI content-part list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text"
        )
    return ""


def read_prompt(messages: list[dict[str, Any]], response_format: dict[str, Any] | None) -> ChatPrompt:
    texts = [(m.get("role", ""), message_text(m.get("content"))) for m in messages]
    system = "\n".join(t for r, t in texts if r in ("system", "developer"))
    users = [t for r, t in texts if r == "user"]
    last_user = users[-1] if users else (texts[-1][1] if texts else "")
    everything = "\n".join(t for _, t in texts)
    json_mode = bool(response_format) and response_format.get("type") in ("json_object", "json_schema")

    match = _TASK_RE.search(system) or _TASK_RE.search(everything)
    if match:
        task = match.group(1).lower().replace("-", "_")
    elif json_mode:
        task = _infer_task(everything)
    else:
        task = "answer"

    passages = _passages(everything)
    question = _question(last_user)
    if passages:
        context = ""
    else:
        # Unnumbered context: the user messages without the question and without the task line.
        context = "\n\n".join(users).replace(question, " ") if question else "\n\n".join(users)
        context = _TASK_RE.sub(" ", context)
    count = _COUNT_RE.search(everything)
    query_count = min(max(int(count.group(1)), 1), 10) if count else 3
    fingerprint = hashlib.blake2b(everything.encode(), digest_size=16).hexdigest()
    return ChatPrompt(task, json_mode, question, tuple(passages), context, query_count, fingerprint)


def complete(prompt: ChatPrompt, *, max_tokens: int | None = None, prompt_tokens: int = 0) -> Completion:
    """The completion for ``prompt``; ``max_tokens`` cuts plain-text answers (``finish_reason: length``)."""
    if prompt.task == "expand_queries":
        content = json.dumps({"queries": _expand(prompt)})
    elif prompt.task == "extract_findings":
        content = json.dumps({"findings": _findings(prompt)})
    elif prompt.task == "score_criterion":
        content = json.dumps(_score(prompt))
    else:
        text, cited = _answer(prompt)
        content = json.dumps({"answer": text, "citations": cited}) if prompt.json_mode else text
    finish = "stop"
    if max_tokens is not None and not content.startswith("{"):
        words = content.split(" ")
        if len(words) > max_tokens:
            content, finish = " ".join(words[:max_tokens]), "length"
    return Completion(content, finish, prompt_tokens, count_tokens(content))


# -- reading -----------------------------------------------------------------------------------------


def _infer_task(text: str) -> str:
    low = text.lower()
    if "score" in low or "rubric" in low:
        return "score_criterion"
    if "expand" in low and "quer" in low:
        return "expand_queries"
    if "extract" in low and "finding" in low:
        return "extract_findings"
    return "answer"


def _passages(text: str) -> list[tuple[int, str]]:
    found: list[tuple[int, list[str]]] = []
    current: list[str] | None = None
    for line in text.splitlines():
        m = _PASSAGE_RE.match(line)
        if m:
            current = [m.group(2)]
            found.append((int(m.group(1)), current))
        elif current is not None:
            if _LABEL_RE.match(line) or _TASK_RE.match(line):
                current = None
            else:
                current.append(line)
    return [(n, " ".join(" ".join(lines).split())) for n, lines in found if any(lines)]


def _question(text: str) -> str:
    for line in reversed(text.splitlines()):
        m = _LABEL_RE.match(line)
        if m and m.group(2).strip():
            return m.group(2).strip()
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
    paragraphs = [p for p in paragraphs if not _PASSAGE_RE.match(p.splitlines()[0])]
    return " ".join(paragraphs[-1].split()) if paragraphs else " ".join(text.split())


def _ranked_sentences(prompt: ChatPrompt) -> list[tuple[int, int, str, int | None]]:
    """(overlap, position, sentence, passage number) for context sentences sharing a question word."""
    question_words = set(content_words(prompt.question))
    pool: list[tuple[str, frozenset[str], int | None]] = []
    if prompt.passages:
        for number, text in prompt.passages:
            pool.extend((s, words, number) for s, words in _sentence_words(text))
    else:
        pool.extend((s, words, None) for s, words in _sentence_words(prompt.context))
    scored = []
    for position, (sentence, words, number) in enumerate(pool):
        overlap = len(question_words & words)
        if overlap:
            scored.append((overlap, position, sentence, number))
    scored.sort(key=lambda item: (-item[0], item[1]))
    return scored


# -- tasks -------------------------------------------------------------------------------------------


def _answer(prompt: ChatPrompt) -> tuple[str, list[int]]:
    if not prompt.passages and not prompt.context.strip():
        topic = " ".join(content_words(prompt.question)[:8]) or "the request"
        return f"This is a simulated answer about {topic}.", []
    best = sorted(_ranked_sentences(prompt)[:3], key=lambda item: item[1])
    if not best:
        return "The provided context does not answer the question.", []
    parts, cited = [], []
    for _, _, sentence, number in best:
        if number is None:
            parts.append(sentence)
        else:
            parts.append(f"{sentence.rstrip()} [{number}]")
            if number not in cited:
                cited.append(number)
    return " ".join(parts), cited


def _expand(prompt: ChatPrompt) -> list[str]:
    subject = prompt.question.strip().rstrip("?.!").strip() or "the subject"
    queries = [subject] + [f"{subject} {angle}" for angle in _ANGLES]
    return queries[: prompt.query_count]


def _findings(prompt: ChatPrompt) -> list[dict[str, Any]]:
    question_words = set(content_words(prompt.question)) or {""}
    findings = []
    for overlap, _, sentence, number in _ranked_sentences(prompt)[:5]:
        findings.append(
            {
                "claim": sentence,
                "sources": [] if number is None else [number],
                "confidence": round(min(1.0, overlap / len(question_words)), 3),
            }
        )
    return findings


def _score(prompt: ChatPrompt) -> dict[str, Any]:
    score = int(prompt.fingerprint[:8], 16) % 11
    criterion = prompt.question or "the criterion"
    evidence = _ranked_sentences(prompt)
    why = f" Most relevant evidence: {evidence[0][2]}" if evidence else " No direct evidence was given."
    return {"score": score, "rationale": f"Simulated assessment of '{criterion}': {score}/10.{why}"}

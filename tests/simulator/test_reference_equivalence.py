"""The hot paths (search, rerank, embeddings, chat sentence ranking) give exactly what a plain,
uncached implementation of their documented algorithms gives.

The simulator precomputes and caches to keep its CPU per call low (it shares the machine with the
service under test in the benchmarks). These references recompute everything from the text on
every call, so any drift in scores, order, snippets or vectors, from the first call or a cached
one, fails here.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter, defaultdict

import pytest

from services.simulator._chat import _ranked_sentences, complete, read_prompt
from services.simulator._corpus import Corpus, Document, SearchHit, corpus
from services.simulator._embedding import embed
from services.simulator._rerank import RankedDocument, rerank
from services.simulator._text import content_words, sentences, tokens

QUERIES = [
    *(f"How much did Aldercrest Robotics pay to acquire Norfield Analytics (request {i})?" for i in range(5)),
    "Brightwater Energy grid-scale batteries funding round",
    "Q3 2024 revenue guidance semiconductors",
    "solid-state batteries Europe regulators inquiry",
    "Aldercrest Aldercrest ROBOTICS robotics",
    "the of and",  # stop words only: no hits
    "zzzz unknown words",
    "!!!",
]


# -- references: the algorithms as documented, recomputed from the text each call ---------------------


def reference_search(
    docs: list[Document], query: str, count: int, offset: int
) -> tuple[int, list[SearchHit]]:
    k1, b = 1.2, 0.75
    counts = [Counter(content_words(d.title) * 2 + content_words(d.text)) for d in docs]
    lengths = [sum(c.values()) for c in counts]
    average = sum(lengths) / len(docs)
    frequency = Counter(w for c in counts for w in c)
    words = set(content_words(query))
    scores: dict[int, float] = defaultdict(float)
    for word in words:
        if word not in frequency:
            continue
        df = frequency[word]
        idf = math.log(1 + (len(docs) - df + 0.5) / (df + 0.5))
        for i, c in enumerate(counts):
            tf = c[word]
            if tf:
                norm = tf + k1 * (1 - b + b * lengths[i] / average)
                scores[i] += idf * tf * (k1 + 1) / norm
    ranked = sorted(scores.items(), key=lambda item: (-item[1], docs[item[0]].url))
    hits = []
    for i, score in ranked[offset : offset + count]:
        best = max(sentences(docs[i].text), key=lambda s: len(words & set(content_words(s))))
        snippet = best if len(best) <= 240 else best[:239].rsplit(" ", 1)[0] + "…"
        hits.append(SearchHit(docs[i], round(score, 4), snippet))
    return len(ranked), hits


def reference_rerank(query: str, documents: list[str], top_n: int | None) -> list[RankedDocument]:
    words = set(content_words(query))
    results = []
    for i, document in enumerate(documents):
        counts = Counter(content_words(document))
        matched = [w for w in words if counts[w]]
        if not words or not matched:
            results.append(RankedDocument(i, 0.0))
            continue
        hits = sum(counts[w] for w in matched)
        results.append(
            RankedDocument(i, round(0.8 * len(matched) / len(words) + 0.2 * hits / (hits + 2.0), 6))
        )
    results.sort(key=lambda r: (-r.relevance_score, r.index))
    return results if top_n is None else results[:top_n]


def reference_embed(text: str, dimensions: int) -> list[float]:
    def slot(word: str) -> tuple[int, float]:
        value = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "little")
        return (value >> 1) % dimensions, (1.0 if value & 1 else -1.0)

    words = content_words(text) or tokens(text) or [text.strip() or text]
    vector = [0.0] * dimensions
    for word, tf in Counter(words).items():
        index, sign = slot(word)
        vector[index] += sign * (1.0 + math.log(tf))
    norm = math.sqrt(sum(v * v for v in vector))
    if norm == 0.0:
        vector[slot(text)[0]] = 1.0
        return vector
    return [v / norm for v in vector]


def reference_ranked_sentences(question: str, passages: list[tuple[int, str]]) -> list[tuple]:
    words = set(content_words(question))
    pool = [(s, n) for n, text in passages for s in sentences(text)]
    scored = [(len(words & set(content_words(s))), position, s, n) for position, (s, n) in enumerate(pool)]
    return sorted((item for item in scored if item[0]), key=lambda item: (-item[0], item[1]))


# -- the simulator against them -------------------------------------------------------------------------


@pytest.mark.parametrize("query", QUERIES)
@pytest.mark.parametrize(("count", "offset"), [(10, 0), (20, 0), (5, 7), (20, 400)])
def test_search_matches_reference(query: str, count: int, offset: int) -> None:
    docs = corpus().documents
    expected = reference_search(docs, query, count, offset)
    assert corpus().search(query, count=count, offset=offset) == expected
    assert corpus().search(query, count=count, offset=offset) == expected  # again, from warm caches


def test_search_on_a_small_corpus_with_long_sentences_matches_reference() -> None:
    long_sentence = "Aldercrest " + " ".join(f"word{i}" for i in range(80)) + " robotics."
    docs = [
        Document("https://x.test/b", "Aldercrest Robotics", f"First one. {long_sentence}", "2024-01-01", "t"),
        Document("https://x.test/a", "Aldercrest Robotics", f"First one. {long_sentence}", "2024-01-01", "t"),
        Document(
            "https://x.test/c", "Other", "Nothing to see.\n\n- A list item about robotics", "2024-01-01", "t"
        ),
    ]
    small = Corpus(docs)
    for query in ("aldercrest robotics", "robotics list", "word3 word4", "nothing"):
        assert small.search(query, count=10) == reference_search(docs, query, 10, 0)


def test_rerank_matches_reference_including_repeated_documents() -> None:
    docs = [d.text for d in corpus().documents[:40]]
    docs += [f"{h.document.title}: {h.snippet}" for h in corpus().search(QUERIES[0], count=20)[1]]
    docs += ["", "the of and", "Aldercrest", "Aldercrest Robotics robotics robotics", "x" * 5000]
    for query in QUERIES:
        for top_n in (None, 5):
            for _ in range(2):  # the second call hits the caches
                assert rerank(query, docs, top_n) == reference_rerank(query, docs, top_n)


@pytest.mark.parametrize("dimensions", [384, 64, 7, 1])
def test_embed_matches_reference(dimensions: int) -> None:
    texts = [*QUERIES, "a", "   ", "x", "Hello hello HELLO world", corpus().documents[0].text]
    for text in texts:
        expected = reference_embed(text, dimensions)
        first = embed(text, dimensions)
        assert first == expected
        first[0] = 99.0  # a caller changing its vector changes nobody else's
        assert embed(text, dimensions) == expected


def test_chat_sentence_ranking_matches_reference() -> None:
    hits = corpus().search(QUERIES[0], count=8)[1]
    passages = [(n, f"{h.document.title}: {h.document.text}") for n, h in enumerate(hits, start=1)]
    numbered = "\n".join(f"[{n}] {text}" for n, text in passages)
    for query in QUERIES[:6]:
        messages = [
            {"role": "system", "content": "floodgate-task: answer"},
            {"role": "user", "content": f"Passages:\n{numbered}\n\nQuestion: {query}"},
        ]
        for _ in range(2):
            prompt = read_prompt(messages, None)
            expected = reference_ranked_sentences(prompt.question, list(prompt.passages))
            assert _ranked_sentences(prompt) == expected
            assert complete(prompt).content  # and the answer built on it still comes out

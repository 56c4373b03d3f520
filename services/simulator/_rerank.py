"""Reranking by term overlap: how much of the query a document covers, then how densely.

``relevance_score = 0.8 * coverage + 0.2 * density`` where coverage is the share of the query's
distinct content words found in the document and density saturates with their occurrences. Scores
are in [0, 1]; ties keep the documents' input order, so results are fully deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass

from ._text import content_words, text_cache, word_counts

__all__ = ["RankedDocument", "rerank", "score"]


@dataclass(frozen=True)
class RankedDocument:
    index: int
    relevance_score: float


# Candidate passages repeat across calls (the same top documents for every question on a topic),
# so each is tokenised once. The counts are shared: read them, never change them.
_word_counts = text_cache(word_counts)


def score(query_words: set[str], document: str) -> float:
    if not query_words:
        return 0.0
    counts = _word_counts(document)
    matched = [w for w in query_words if w in counts]
    if not matched:
        return 0.0
    coverage = len(matched) / len(query_words)
    hits = sum(counts[w] for w in matched)
    density = hits / (hits + 2.0)
    return round(0.8 * coverage + 0.2 * density, 6)


def rerank(query: str, documents: list[str], top_n: int | None = None) -> list[RankedDocument]:
    """Documents ordered by relevance to ``query``, best first, cut to ``top_n``."""
    words = set(content_words(query))
    ranked = sorted(
        (RankedDocument(i, score(words, doc)) for i, doc in enumerate(documents)),
        key=lambda r: (-r.relevance_score, r.index),
    )
    return ranked if top_n is None else ranked[:top_n]

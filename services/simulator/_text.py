"""Tokens, content words and sentences: the little text handling every simulated API shares.

Deliberately crude (lower-cased ``[a-z0-9]+`` runs, a short stop-word list, a naive sentence
splitter): the simulator only has to make retrieval results *make sense*, and be deterministic.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from functools import lru_cache, wraps
from typing import TypeVar

__all__ = [
    "STOPWORDS",
    "content_words",
    "count_tokens",
    "sentence_words",
    "sentences",
    "text_cache",
    "tokens",
    "word_counts",
]

_T = TypeVar("_T")

_TOKEN_RE = re.compile(r"[a-z0-9]+")
_SENTENCE_RE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(\[])")
# Paragraph breaks, and line breaks before a list item or a numbered passage.
_BLOCK_RE = re.compile(r"\n\s*\n|\n(?=\s*[-*\d\[])")

STOPWORDS = frozenset(
    """
    a about above after again against all also am an and any are as at be because been before being
    below between both but by can could did do does doing down during each few for from further had
    has have having he her here hers herself him himself his how i if in into is it its itself just
    me more most my myself no nor not now of off on once only or other our ours ourselves out over
    own same she should so some such than that the their theirs them themselves then there these
    they this those through to too under until up very was we were what when where which while who
    whom why will with would you your yours yourself yourselves s t don
    """.split()
)


def tokens(text: str) -> list[str]:
    """Lower-cased alphanumeric runs, in order."""
    return _TOKEN_RE.findall(text.lower())


def content_words(text: str) -> list[str]:
    """Tokens minus stop words (the words that say what a text is about), in order."""
    return [t for t in _TOKEN_RE.findall(text.lower()) if t not in STOPWORDS]


def count_tokens(text: str) -> int:
    """A rough token count for ``usage``: words and punctuation runs, never zero for non-empty text."""
    n = len(text.split())
    return max(n, 1) if text.strip() else 0


def sentences(text: str) -> list[str]:
    """Split prose into sentences (on ``.!?`` followed by space and a capital or digit)."""
    out: list[str] = []
    for block in _BLOCK_RE.split(text):
        block = " ".join(block.split())
        if block:
            out.extend(s.strip() for s in _SENTENCE_RE.split(block) if s.strip())
    return out


def sentence_words(text: str) -> tuple[tuple[str, frozenset[str]], ...]:
    """``sentences(text)``, each with the set of its content words (what snippets and answers match on)."""
    return tuple((s, frozenset(content_words(s))) for s in sentences(text))


def word_counts(text: str) -> dict[str, int]:
    """How often each content word occurs in ``text``."""
    return dict(Counter(content_words(text)))


# The same passages come back call after call (the top documents for a topic are reranked and quoted
# to the LLM on every request about it), so their tokenising is worth keeping. Bounded twice: at most
# this many texts, and only texts this short, so a client sending huge documents cannot grow the
# process or evict everything else.
TEXT_CACHE_SIZE = 4096
TEXT_CACHE_MAX_CHARS = 4000


def text_cache(function: Callable[[str], _T]) -> Callable[[str], _T]:
    """``function`` with an LRU cache of its results for short texts. The results are shared between
    callers, so they must be immutable or treated as read-only."""
    cached = lru_cache(maxsize=TEXT_CACHE_SIZE)(function)

    @wraps(function)
    def lookup(text: str) -> _T:
        return cached(text) if len(text) <= TEXT_CACHE_MAX_CHARS else function(text)

    return lookup

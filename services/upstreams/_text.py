"""Tokens, content words and sentences: the little text handling every simulated API shares.

Deliberately crude (lower-cased ``[a-z0-9]+`` runs, a short stop-word list, a naive sentence
splitter): the simulator only has to make retrieval results *make sense*, and be deterministic.
"""

from __future__ import annotations

import re

__all__ = ["STOPWORDS", "content_words", "count_tokens", "sentences", "tokens"]

_TOKEN_RE = re.compile(r"[a-z0-9]+")
_SENTENCE_RE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(\[])")

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
    for block in re.split(r"\n\s*\n|\n(?=\s*[-*\d\[])", text):
        block = " ".join(block.split())
        if block:
            out.extend(s.strip() for s in _SENTENCE_RE.split(block) if s.strip())
    return out
